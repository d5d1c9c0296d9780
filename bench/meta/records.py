"""The meta-dataset's cell records (metrics, recipe, timings; bench/meta/store.py keeps their
probabilities): one JSON file per task, `<folder>/<task>.json` =
`{"task": <task>, "cells": {<cell stem>: <record>, ...}}`, a cell's stem starting with its task
(`<task>__...`). One file per task, not per cell, keeps the committed folders to a few files
(13 instead of 603 for the text design's cells).

`write` holds an exclusive `flock` on the folder (collectors of other tasks may share it) and
replaces the task's file atomically, so an interrupted collector leaves every finished cell.
`python -m bench meta pack` moves the older one-file-per-cell records (`<stem>.json`) in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from bench.meta import store


def task_of(stem: str) -> str:
    return stem.split("__")[0]


def _file(folder: Path, task: str) -> Path:
    return folder / f"{task}.json"


def _old(folder: Path) -> list[Path]:
    return sorted(folder.glob("*__*.json"))


def read_task(folder: Path, task: str) -> dict[str, dict]:
    """The task's records by stem ({} when it has none)."""
    path = _file(folder, task)
    return json.loads(path.read_text())["cells"] if path.exists() else {}


def read(folder: Path) -> dict[str, dict]:
    """Every record under `folder` by stem, tasks in name order ({} when there is no folder)."""
    if old := _old(folder):
        raise RuntimeError(
            f"{folder} holds {len(old)} one-file-per-cell records (e.g. {old[0].name}): move them "
            "into the task files with `python -m bench meta pack`"
        )
    cells: dict[str, dict] = {}
    for path in sorted(folder.glob("*.json")):
        cells.update(json.loads(path.read_text())["cells"])
    return cells


def has(folder: Path, stem: str) -> bool:
    return stem in read_task(folder, task_of(stem))


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    folder.mkdir(parents=True, exist_ok=True)
    with store.locked(folder):
        yield


def write(folder: Path, stem: str, record: dict) -> None:
    """Add (or replace) one record in its task's file."""
    with _locked(folder):
        _put(folder, task_of(stem), {stem: record})


def _put(folder: Path, task: str, records: dict[str, dict]) -> None:
    cells = read_task(folder, task) | records
    tmp = _file(folder, task).with_suffix(".json.tmp")
    text = json.dumps({"task": task, "cells": dict(sorted(cells.items()))}, separators=(",", ":"))
    tmp.write_text(text)
    tmp.replace(_file(folder, task))


def pack(folder: Path) -> int:
    """Move one-file-per-cell records (`<stem>.json`) into their task files; returns how many."""
    old = _old(folder)
    with _locked(folder):
        for task in sorted({task_of(p.stem) for p in old}):
            mine = [p for p in old if task_of(p.stem) == task]
            _put(folder, task, {p.stem: json.loads(p.read_text()) for p in mine})
            for p in mine:
                p.unlink()
    return len(old)
