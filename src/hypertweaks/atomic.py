"""Atomic writes that several workers may race on (shared caches, results.json).

Each writer gets its own temporary file beside the target and renames it into place, so a
reader sees the old file or the new one, never half of one, and two writers never rename each
other's temporary file away.
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


@contextmanager
def _temporary_beside(path: Path) -> Iterator[Path]:
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(handle)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def write_with(path: str | Path, write: Callable[[Path], Any]) -> None:
    """Let `write` fill a private temporary file, then move it onto `path` in one step."""
    with _temporary_beside(Path(path)) as tmp:
        write(tmp)


def write_text(path: str | Path, text: str) -> None:
    write_with(path, lambda tmp: tmp.write_text(text))


def save_torch(obj: Any, path: str | Path) -> None:
    import torch

    write_with(path, lambda tmp: torch.save(obj, tmp))
