"""What a study's trials depend on: its settings and the content of its data (not the paths),
so that data fixed in place under the same name is never mixed into an old study."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

from hypertweaks.config import Experiment

KEY_FIELDS = {
    "task",
    "model",
    "gguf_file",
    "text_column",
    "label_column",
    "image_column",
    "metric",
    "space",
    "max_length",
    "image_size",
    "seed",
    "validation_fraction",
    "max_dropped_fraction",
}
_WHOLE_FILE = 8 << 20  # a data file up to 8 MiB is hashed whole; a larger one by 64 samples
_WHOLE_MEMBER = 256 << 10  # a folder's files (e.g. images) up to 256 KiB whole; else 2 samples
_SAMPLE = 64 << 10


def _hash_file(path: Path, digest: Any, whole: int = _WHOLE_FILE, samples: int = 64) -> None:
    size = path.stat().st_size
    digest.update(f"{size}\0".encode())
    with path.open("rb") as handle:
        if size <= whole:
            digest.update(handle.read())
            return
        for i in range(samples):  # head, tail and evenly spaced samples: cheap for large files
            handle.seek((size - _SAMPLE) * i // (samples - 1))
            digest.update(handle.read(_SAMPLE))


def content_hash(path: Path | None) -> str | None:
    """A hash of what a data file, or every file under a folder, holds (not where it is)."""
    if path is None:
        return None
    path = Path(path)
    if not path.exists():
        return "missing"
    digest = hashlib.sha256()
    if path.is_file():
        _hash_file(path, digest)
        return digest.hexdigest()[:24]
    for file in sorted(path.rglob("*")):
        relative = file.relative_to(path)
        if file.is_file() and not any(part.startswith(".") for part in relative.parts):
            digest.update(f"{relative.as_posix()}\0".encode())
            _hash_file(file, digest, _WHOLE_MEMBER, samples=2)
    return digest.hexdigest()[:24]


def experiment_fingerprint(exp: Experiment) -> dict[str, Any]:
    """What a study's trials depend on: the settings, and the content of the data and weights."""
    key = exp.model_dump(mode="json", include=KEY_FIELDS)
    key["data"] = {
        role: content_hash(getattr(exp, role)) for role in ("train", "validation", "weights")
    }
    return key
