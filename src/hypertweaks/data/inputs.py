"""What a tuned model is asked about: texts, image paths or prompts, read and checked before any
compute; and the answers written atomically."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

import pandas as pd

from hypertweaks.data.images import IMAGE_SUFFIXES
from hypertweaks.data.jsonl import ROLES
from hypertweaks.data.tables import DataError, read_table, require_columns

TEXT_SUFFIXES = (".txt", ".text")
WRITERS = {
    ".csv": lambda table, path: table.to_csv(path, index=False),
    ".tsv": lambda table, path: table.to_csv(path, sep="\t", index=False),
    ".jsonl": lambda table, path: table.to_json(path, orient="records", lines=True),
    ".parquet": lambda table, path: table.to_parquet(path, index=False),
}


def read_input_table(path: str | Path, role: str = "input") -> pd.DataFrame:
    """A table (CSV, TSV, JSONL, Parquet, `datasets` folder) or a plain text file, one text a
    line (blank lines skipped), as a table with a `text` column."""
    path = Path(path)
    if path.suffix.lower() not in TEXT_SUFFIXES:
        return read_table(path, role)
    if not path.is_file():
        raise DataError(f"{role} data {str(path)!r} does not exist")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{role} data {str(path)!r} cannot be read: {error}") from None
    texts = [line for line in lines if line.strip()]
    if not texts:
        raise DataError(f"{role} data {str(path)!r} holds no text (one text a line)")
    return pd.DataFrame({"text": texts})


def read_texts(
    path: str | Path, column: str, role: str = "input"
) -> tuple[pd.DataFrame, list[Any]]:
    """The table and its texts as they are in the file: a missing text stays missing and a
    list stays a list, for the caller's check (`predict.check_texts`) to refuse or skip and
    name by row; never silently turned into a text the model would answer."""
    table = read_input_table(path, role)
    require_columns(table, {"--text-column": column}, path)
    return table, table[column].tolist()


def image_table(path: str | Path, column: str, role: str = "input") -> pd.DataFrame:
    """A folder (every image in it, recursively) or a table with a column of image paths
    (relative to the table's folder) -> a table whose `column` holds resolved paths."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{role} data {str(path)!r} does not exist")
    if path.is_dir():
        images = sorted(str(p) for p in path.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(
                f"{role} folder {str(path)!r} holds no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); give a folder of images or a table "
                "with a column of image paths"
            )
        return pd.DataFrame({column: images})
    table = read_input_table(path, role)
    require_columns(table, {"--image-column": column}, path)
    resolved = [
        "" if pd.isna(p) else str(p if Path(str(p)).is_absolute() else path.parent / str(p))
        for p in table[column]
    ]
    return table.assign(**{column: resolved})


def read_prompts(path: str | Path, role: str = "input") -> list[dict[str, Any]]:
    """JSON Lines: one `{"prompt": ...}`, `{"text": ...}` or `{"messages": [...]}` a line; other
    fields are kept. A conversation that ends with an assistant turn is answered from the turns
    before it. Errors name the file and line."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"{role} data {str(path)!r} does not exist")
    if path.suffix.lower() not in (".jsonl", ".json", ".ndjson"):
        raise DataError(
            f"{role} data {str(path)!r}: prompts are read from JSON Lines (.jsonl), one "
            '{"prompt": ...} or {"messages": [...]} a line'
        )
    rows = []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as error:
        raise DataError(f"{role} data {str(path)!r} cannot be read: {error}") from None
    for number, line in enumerate(lines, start=1):
        if line.strip():
            rows.append(_prompt_row(line, f"{path}:{number}"))
    if not rows:
        raise DataError(f"{role} data {str(path)!r} holds no prompts")
    return rows


def _prompt_row(line: str, where: str) -> dict[str, Any]:
    try:
        row = json.loads(line)
    except json.JSONDecodeError as error:
        raise DataError(f"{where}: not valid JSON ({error.msg} at column {error.colno})") from None
    if not isinstance(row, dict):
        raise DataError(f"{where}: expected a JSON object, got {type(row).__name__}")
    if "messages" in row:
        messages = row["messages"]
        if not isinstance(messages, list) or not messages:
            raise DataError(f"{where}: 'messages' must be a non-empty list of {{role, content}}")
        for i, message in enumerate(messages):
            if not isinstance(message, dict) or not isinstance(message.get("content"), str):
                raise DataError(f"{where}: messages[{i}] needs 'role' and a string 'content'")
            if message.get("role") not in ROLES:
                raise DataError(
                    f"{where}: messages[{i}] has role {message.get('role')!r}; use one of "
                    f"{', '.join(ROLES)}"
                )
        return row
    for field in ("prompt", "text"):
        if field in row:
            if not isinstance(row[field], str):
                raise DataError(f"{where}: {field!r} must be a string")
            return row
    found = ", ".join(sorted(row)) or "none"
    raise DataError(f"{where}: no 'prompt', 'text' or 'messages' field (found: {found})")


def check_output(path: str | Path) -> Path:
    """Refuse an output the writer cannot make, before any compute."""
    path = Path(path)
    if path.suffix.lower() not in WRITERS:
        raise DataError(
            f"output {str(path)!r}: unknown file type {path.suffix!r}; use one of "
            f"{', '.join(WRITERS)}"
        )
    if not path.parent.is_dir():
        raise DataError(f"output {str(path)!r}: the folder {str(path.parent)!r} does not exist")
    return path


def write_atomically(table: pd.DataFrame, path: str | Path) -> Path:
    """Write next to the target, then rename over it: a reader never sees half a file."""
    path = check_output(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=path.suffix, dir=path.parent)
    os.close(fd)
    try:
        WRITERS[path.suffix.lower()](table, tmp)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def default_output(source: str | Path, suffix: str | None = None) -> Path:
    """INPUT.predictions.SUFFIX beside the input (the input's own type where it can be written,
    else CSV); a folder gives FOLDER.predictions.csv beside it."""
    source = Path(source)
    if suffix is None:
        own = source.suffix.lower()
        suffix = own if source.is_file() and own in WRITERS else ".csv"
    name = source.stem if source.is_file() else source.name
    return source.parent / f"{name}.predictions{suffix}"
