"""Read a table of examples: CSV, TSV, JSONL, Parquet, or a `datasets` library folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


class DataError(ValueError):
    """The data cannot be used as given; the message says what is wrong and how to fix it."""


READERS = {
    # utf-8-sig: a byte-order mark (Excel's "CSV UTF-8") is not part of the first column's name
    ".csv": lambda p: pd.read_csv(p, encoding="utf-8-sig"),
    ".tsv": lambda p: pd.read_csv(p, sep="\t", encoding="utf-8-sig"),
    ".jsonl": lambda p: pd.read_json(p, lines=True),
    ".json": lambda p: pd.read_json(p, lines=True),
    ".parquet": lambda p: pd.read_parquet(p),
    ".pq": lambda p: pd.read_parquet(p),
}


def is_datasets_folder(path: Path) -> bool:
    markers = ("dataset_info.json", "state.json", "dataset_dict.json")
    return path.is_dir() and any((path / m).exists() for m in markers)


def read_table(path: str | Path, role: str = "train") -> pd.DataFrame:
    """One table from a file or a `datasets` folder; for a DatasetDict, the split named `role`."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{role} data {str(path)!r} does not exist")
    if path.is_dir():
        if not is_datasets_folder(path):
            raise DataError(
                f"{role} data {str(path)!r} is a folder but not one saved by the `datasets` "
                "library (no dataset_info.json / dataset_dict.json); give a CSV, JSONL or "
                "Parquet file instead"
            )
        return _read_datasets_folder(path, role)
    reader = READERS.get(path.suffix.lower())
    if reader is None:
        raise DataError(
            f"{role} data {str(path)!r}: unknown file type {path.suffix!r}; "
            f"use one of {', '.join(READERS)} or a `datasets` folder"
        )
    if path.suffix.lower() in (".csv", ".tsv"):
        check_header(path, "\t" if path.suffix.lower() == ".tsv" else ",")
    try:
        table = reader(path)
    except UnicodeDecodeError as error:
        raise DataError(
            f"{role} data {str(path)!r} is not UTF-8 text (byte {error.start}); save it as UTF-8"
        ) from None
    except (ValueError, OSError) as error:
        message = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DataError(f"{role} data {str(path)!r} cannot be read: {message}") from None
    if table.empty:
        raise DataError(f"{role} data {str(path)!r} holds no rows")
    return table


def check_header(path: Path, delimiter: str) -> None:
    """A column name given twice: pandas would rename the second ('label.1') and silently use
    the first."""
    import csv

    try:
        with path.open(encoding="utf-8-sig", newline="") as handle:
            header = next(csv.reader(handle, delimiter=delimiter), [])
    except (UnicodeDecodeError, csv.Error, OSError):
        return  # the reader reports it
    seen: dict[str, int] = {}
    for number, name in enumerate(header, start=1):
        if name in seen and name.strip():
            raise DataError(
                f"{path}:1: column {name!r} appears twice (columns {seen[name]} and {number}); "
                "rename or remove one, so that it is clear which one is meant"
            )
        seen.setdefault(name, number)


def _read_datasets_folder(path: Path, role: str) -> pd.DataFrame:
    try:
        import datasets
    except ImportError:
        raise DataError(
            "reading a `datasets` folder needs the datasets package: "
            "pip install 'hypertweaks[datasets]'"
        ) from None
    loaded = datasets.load_from_disk(str(path))
    if isinstance(loaded, datasets.DatasetDict):
        if role not in loaded:
            raise DataError(
                f"{role} data {str(path)!r} is a DatasetDict with splits {list(loaded)}; "
                f"point at one of them, e.g. {path / next(iter(loaded))}"
            )
        loaded = loaded[role]
    table = loaded.to_pandas()
    if table.empty:
        raise DataError(f"{role} data {str(path)!r} holds no rows")
    return table


def require_columns(table: pd.DataFrame, columns: dict[str, str], path: str | Path) -> None:
    """columns maps an option name (text_column) to the column it names."""
    for option, column in columns.items():
        if column not in table.columns:
            raise DataError(
                f"{path}: no column {column!r} (set by {option}); "
                f"the columns are: {', '.join(map(str, table.columns))}"
            )
