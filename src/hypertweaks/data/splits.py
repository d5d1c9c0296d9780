"""Labelled examples split into train / validation / test, checked before any compute."""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from hypertweaks.data.tables import DataError


@dataclass
class Split:
    inputs: list[Any]  # texts, or image paths
    labels: np.ndarray  # class ids, int64
    name: str = ""  # train, validation or test
    rows: tuple[int, ...] | None = None  # a subset: its rows of the named split; None: all

    def __len__(self) -> int:
        return len(self.inputs)

    def subset(self, indices: Sequence[int]) -> Split:
        """These rows (positions in this split), still keyed by the rows of the full split."""
        indices = [int(i) for i in indices]
        rows = tuple(indices if self.rows is None else (self.rows[i] for i in indices))
        picked = self.labels[np.asarray(indices, dtype=int)]
        return Split([self.inputs[i] for i in indices], picked, self.name, rows)

    @property
    def key(self) -> tuple[str, str]:
        """Names what this split holds, for caches: the same key, the same examples."""
        if self.rows is None:
            return (self.name, "all")
        return (self.name, hashlib.sha256(np.asarray(self.rows, dtype=np.int64)).hexdigest()[:16])


@dataclass
class Splits:
    classes: list[Any]  # original label values; a class id indexes this list
    train: Split
    validation: Split
    test: Split | None
    notes: list[str] = field(default_factory=list)  # what was done to the data, for the user


def _label_values(series: pd.Series, role: str) -> pd.Series:
    nested = series.map(lambda v: isinstance(v, list | dict | tuple | set | np.ndarray))
    if nested.any():
        first = int(nested.to_numpy().argmax())
        raise DataError(
            f"{role}: {int(nested.sum())} labels are lists or objects, not single values (e.g. "
            f"row {first}: {series.iloc[first]!r}); give each example one label (multi-label "
            "classification is not supported)"
        )
    missing = series.isna()
    if missing.any():
        raise DataError(
            f"{role}: {int(missing.sum())} rows have no label (e.g. row {int(missing.idxmax())}); "
            "remove them or fill them in"
        )
    return series


def _normal(label: Any) -> str:
    return str(label).strip().casefold()


def check_near_duplicates(values: Sequence[Any], role: str) -> None:
    """Labels that differ only by case or surrounding spaces ('pos', 'pos ', 'Pos') would become
    separate classes."""
    counts = Counter(values)
    groups: dict[str, list[Any]] = {}
    for value in counts:  # 1 and "1" too: a JSON file may hold both
        groups.setdefault(_normal(value), []).append(value)
    clashes = [sorted(group, key=lambda v: -counts[v]) for group in groups.values()]
    clashes = [group for group in clashes if len(group) > 1]
    if clashes:
        shown = "; ".join(
            ", ".join(f"{v!r} ({counts[v]} rows)" for v in group) for group in clashes[:5]
        )
        raise DataError(
            f"{role}: labels that differ only by case, surrounding spaces or type would become "
            f"separate classes: {shown}. Make each class's label identical in the file (e.g. "
            "strip spaces and use one spelling)"
        )


def check_not_in_train(
    train: Sequence[Any], other: Sequence[Any], role: str, same: str = "the same text"
) -> str | None:
    """Validation or test examples that are also training examples score memory, not skill: more
    than half of them (the same file twice, or one that holds the other) is an error; fewer, a
    warning (short texts repeat in some data sets)."""
    try:
        seen = {_input_key(x) for x in train}
        shared = sum(_input_key(x) in seen for x in other)
    except TypeError:  # inputs that cannot be compared this way
        return None
    if not shared:
        return None
    share = f"{shared / len(other):.0%}"
    what = f"{shared} of {len(other)} {role} examples ({share}) are also in train ({same})"
    if 2 * shared <= len(other):
        return f"warning: {what}: their scores reward memory; remove them for an honest score"
    if role.startswith("validation"):
        why = (
            "early stopping and the choice of recipe would reward memory, not skill. Give "
            "validation examples the model does not train on (is it the training file?), or "
            "leave validation out to hold out part of train"
        )
    else:
        why = "its scores would overrate the model. Give test examples it does not train on"
    raise DataError(f"{what}: {why}")


def conflicting_labels(train: Split, classes: list[Any]) -> str | None:
    """Training examples given more than once with different labels: the model cannot fit both,
    and the user may not know (two annotators, a merge of files)."""
    labels: dict[Any, set[int]] = {}
    for value, label in zip(train.inputs, train.labels.tolist(), strict=True):
        labels.setdefault(_input_key(value), set()).add(label)
    clashes = [(value, seen) for value, seen in labels.items() if len(seen) > 1]
    if not clashes:
        return None
    value, seen = clashes[0]
    example = f"{str(value)[:60]!r} is {' and '.join(repr(classes[c]) for c in sorted(seen))}"
    return (
        f"warning: training examples that repeat with different labels: {len(clashes)} (e.g. "
        f"{example}); fix or remove them if they are mistakes"
    )


def missing_classes(split: Split, classes: list[Any], where: str) -> str | None:
    """Classes of train that a given validation or test file has no example of: its score says
    nothing of them (validation picks the model blind to them), and the user may not know (a
    file cut before shuffling, a filter)."""
    absent = sorted(set(range(len(classes))) - set(split.labels.tolist()))
    if not absent:
        return None
    shown = ", ".join(repr(classes[c]) for c in absent[:5]) + (", ..." if len(absent) > 5 else "")
    return (
        f"warning: {where} has no example of {len(absent)} of the {len(classes)} training "
        f"classes ({shown}): its scores say nothing of them; add examples of each class"
    )


def _input_key(value: Any) -> Any:
    return value.strip() if isinstance(value, str) else value


def _sort_classes(values: Sequence[Any]) -> list[Any]:
    try:
        return sorted(set(values))
    except TypeError:  # mixed types: order by text
        return sorted(set(values), key=str)


def _encode(values: pd.Series, index: dict[Any, int], role: str) -> np.ndarray:
    unseen = sorted({v for v in values if v not in index}, key=str)
    if unseen:
        shown = ", ".join(repr(v) for v in unseen[:5])
        normal = {_normal(k): k for k in index}
        near = [f"{v!r} -> {normal[_normal(v)]!r}" for v in unseen if _normal(v) in normal]
        hint = f" (they differ from train's only by case or spaces: {', '.join(near[:5])})"
        raise DataError(
            f"{role} has labels that train does not have: {shown}{hint if near else ''}; a "
            "model cannot learn classes it never sees. Add examples of them to train or remove "
            "them"
        )
    return np.array([index[v] for v in values], dtype=np.int64)


def stratified_split(labels: np.ndarray, fraction: float, seed: int) -> tuple[list[int], list[int]]:
    """Indices (kept, held out), each class in both, same proportions."""
    counts = Counter(labels.tolist())
    n_held = max(len(counts), round(len(labels) * fraction))
    if n_held >= len(labels) - len(counts) + 1:
        raise DataError(
            f"only {len(labels)} examples: too few to hold out a validation set with every class"
        )
    kept, held = train_test_split(
        np.arange(len(labels)), test_size=n_held, stratify=labels, random_state=seed
    )
    return sorted(kept.tolist()), sorted(held.tolist())


def stratified_subset(labels: np.ndarray, size: int, seed: int) -> list[int]:
    """About `size` indices with every class present (for smoke runs)."""
    rng = np.random.default_rng(seed)
    classes = np.unique(labels)
    per_class = max(1, size // len(classes))
    picked: list[int] = []
    for label in classes:
        members = np.flatnonzero(labels == label)
        picked.extend(
            rng.choice(members, size=min(per_class, len(members)), replace=False).tolist()
        )
    return sorted(picked)


def load_splits(
    tables: dict[str, tuple[pd.DataFrame, str] | None],
    input_column: str,
    label_column: str,
    validation_fraction: float,
    seed: int,
    clean: Callable[[pd.DataFrame, str], tuple[pd.DataFrame, str | None]] | None = None,
    compare_inputs: bool = True,
) -> Splits:
    """tables maps train/validation/test to (table, where it came from) or None.

    `clean` may drop unusable rows (e.g. empty texts) and return a note about it. With
    `compare_inputs`, validation and test inputs equal to training ones are refused or noted
    (check_not_in_train); a task whose inputs are not the examples themselves compares them
    itself."""
    notes: list[str] = []
    frames: dict[str, pd.DataFrame] = {}
    for role, entry in tables.items():
        if entry is None:
            continue
        table, source = entry
        if clean is not None:
            table, note = clean(table, f"{role} ({source})")
            if note:
                notes.append(note)
        _label_values(table[label_column], f"{role} ({source})")
        frames[role] = table.reset_index(drop=True)

    train = frames["train"]
    for role, frame in frames.items():
        check_near_duplicates(frame[label_column].tolist(), f"{role} ({tables[role][1]})")
    classes = _sort_classes(train[label_column].tolist())
    if len(classes) < 2:
        raise DataError(
            f"train has a single class ({classes[0]!r}); classification needs at least two"
        )
    index = {value: i for i, value in enumerate(classes)}
    encoded = {
        role: Split(frame[input_column].tolist(), _encode(frame[label_column], index, role), role)
        for role, frame in frames.items()
    }
    for role in ("validation", "test"):
        if role not in encoded:
            continue
        where = f"{role} ({tables[role][1]})"
        if compare_inputs and (
            note := check_not_in_train(encoded["train"].inputs, encoded[role].inputs, where)
        ):
            notes.append(note)
        if note := missing_classes(encoded[role], classes, where):
            notes.append(note)
    if compare_inputs and (note := conflicting_labels(encoded["train"], classes)):
        notes.append(note)
    counts = Counter(encoded["train"].labels.tolist())
    single = [repr(classes[c]) for c, n in sorted(counts.items()) if n == 1]
    if "validation" in encoded and single:
        notes.append(
            f"warning: {len(single)} class(es) have a single training example "
            f"({', '.join(single[:5])}): the model can hardly learn them; add examples"
        )
    if "validation" not in encoded:
        for class_id, count in sorted(counts.items()):
            if count < 2:
                raise DataError(
                    f"class {classes[class_id]!r} has only 1 example in train; to carve a "
                    "validation split every class needs at least 2. Add examples, drop the "
                    "class, or give a validation file"
                )
        kept, held = stratified_split(encoded["train"].labels, validation_fraction, seed)
        encoded["validation"] = encoded["train"].subset(held)
        encoded["train"] = encoded["train"].subset(kept)
        notes.append(
            f"validation: {len(held)} examples ({validation_fraction:.0%}) held out of train, "
            f"stratified, seed {seed}"
        )
    return Splits(classes, encoded["train"], encoded["validation"], encoded.get("test"), notes)
