"""What a study's trials depend on: its settings and the content of its data (not the paths),
so that data fixed in place under the same name is never mixed into an old study."""

from __future__ import annotations

import hashlib
import json
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
    "class_weights",
}
# How to go on with a study whose fingerprint differs, for command-line and Python users alike.
WAY_OUT = (
    "give a new --name (name=... in Python) to start a new study, or pass --fresh to discard "
    "this one and start it afresh (fresh=True in Python)"
)
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


def model_key(model: Any) -> Any:
    """A local model folder as one absolute path, however it was given (relative, absolute,
    through a link); a hub id or timm name as it is."""
    if not isinstance(model, str) or not model:
        return model
    path = Path(model).expanduser()
    return str(path.resolve()) if path.exists() else model


def experiment_fingerprint(exp: Experiment) -> dict[str, Any]:
    """What a study's trials depend on: the settings, and the content of the data and weights."""
    key = exp.model_dump(mode="json", include=KEY_FIELDS)
    key["model"] = model_key(key["model"])
    key["data"] = {
        role: content_hash(getattr(exp, role)) for role in ("train", "validation", "weights")
    }
    return key


def compare_fingerprints(stored: dict[str, Any], current: dict[str, Any]) -> list[str]:
    """What changed, for the user: the data whose content changed, the settings with both
    values."""
    differences = []
    for role, digest in current["data"].items():
        if stored.get("data", {}).get(role) != digest:
            differences.append(f"{role} data (its content changed)")
    for field in sorted(KEY_FIELDS):
        # a setting added after the study started: it ran with the setting's default
        before = stored.get(field, Experiment.model_fields[field].default)
        if field == "model" and model_key(before) == model_key(current.get(field)):
            continue  # e.g. stored by an older version as the relative path it was given
        if before != current.get(field):
            differences.append(f"{field} ({before!r}, now {current.get(field)!r})")
    return differences


def check_saved_fingerprint(exp: Experiment, path: Path, resumable: bool = True) -> None:
    """For studies resumed from files rather than a storage (Ray's experiment folder): the
    fingerprint saved beside them must match, else the way out is named. Nothing to resume: the
    fingerprint is (re)written."""
    from hypertweaks.config import ConfigError

    current = experiment_fingerprint(exp)
    try:
        stored = json.loads(path.read_text())
    except (OSError, ValueError):
        stored = None
    if resumable and isinstance(stored, dict) and stored.get("data"):
        differences = compare_fingerprints(stored, current)
        if differences:
            raise ConfigError(
                f"study {exp.name!r} in {path.parent} was started with other "
                f"{'; '.join(differences)}; {WAY_OUT}"
            )
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(current, indent=2))
