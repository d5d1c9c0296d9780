"""A cell's class probabilities: written by the collector, read by the simulator.

One file per task and cut, `<cut>/probs/<task>.npz`: a zip of `.npy` members compressed with LZMA
(numpy's `np.load` reads it), one member per cell and split, `<cell stem>/<split>`. A member holds
the (epochs, rows, classes) probabilities as q = rint(p * SCALE), multiples of 1 / 1024 (BITS =
10), split into bytes and transposed (`encode`): a uint8 array of shape (2, classes, rows, epochs),
[0] the high byte of q, [1] the low byte; `decode` undoes it. LZMA compresses the two bytes apart,
each class's epochs side by side, about 15% smaller than the plain uint16 array.
The cell's metrics go into its task's `<cut>/cells/<task>.json` (records.py) after its
probabilities: a cell is present when its record is. A cell is named by the path
`<cut>/cells/<stem>.json` here, which gives its stem and its cut. bench/meta/README.md describes
the format, its error and its sizes.
"""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

BITS = 10
SCALE = 2**BITS  # a stored value q means the probability q / SCALE
ERROR = 0.5 / SCALE  # the largest absolute error of a decoded probability (rounding to nearest)


def encode(probs: np.ndarray) -> np.ndarray:
    """(epochs, rows, classes) probabilities (any float dtype) as q = rint(p * SCALE), stored as
    uint8 (2, classes, rows, epochs): [0] q's high byte, [1] its low byte."""
    q = np.clip(np.rint(np.asarray(probs, dtype=np.float64) * SCALE), 0, SCALE).astype(np.uint16).T
    return np.stack([q >> 8, q & 0xFF]).astype(np.uint8)


def decode(stored: np.ndarray) -> np.ndarray:
    """The stored bytes as (epochs, rows, classes) float32 probabilities."""
    q = (stored[0].astype(np.uint16) << 8) | stored[1]
    return np.ascontiguousarray(q.T, dtype=np.float32) / SCALE


def probs_file(cell: Path) -> Path:
    """The task's file of a cell (`<cut>/cells/<stem>.json`): `<cut>/probs/<task>.npz`."""
    task = cell.name.split("__")[0]
    return cell.parent.parent / "probs" / f"{task}.npz"


def _stem(cell: Path) -> str:
    return cell.name.removesuffix(".json")


def _member(cell: Path, split: str) -> str:
    return f"{_stem(cell)}/{split}.npy"


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """One writer at a time per cut (two collectors on other tasks may share the folder)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def _add(archive: zipfile.ZipFile, name: str, array: np.ndarray) -> None:
    with archive.open(name, "w", force_zip64=True) as out:
        np.lib.format.write_array(out, np.ascontiguousarray(array), allow_pickle=False)


def write(cell: Path, probs: dict[str, np.ndarray]) -> None:
    """Store a cell's probabilities per split ((epochs, rows, classes) arrays, or lists of
    (rows, classes) arrays, one per epoch), replacing any stored before for the same cell. The
    task file is replaced atomically, so a reader never sees half a file."""
    path = probs_file(cell)
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays = {split: encode(np.stack(v) if isinstance(v, list) else v) for split, v in probs.items()
              if len(v)}  # fmt: skip
    stem = _stem(cell)
    tmp = path.with_name(f"{path.stem}.tmp.npz")
    with locked(path.parent):
        kept: dict[str, np.ndarray] = {}
        mode = "w"
        if path.exists():
            with zipfile.ZipFile(path) as old:
                stale = {n for n in old.namelist() if n.startswith(f"{stem}/")}
            if stale:  # a cell run again: rewrite the file without its old members
                with np.load(path) as old:
                    kept = {f"{k}.npy": old[k] for k in old.files if f"{k}.npy" not in stale}
            else:  # append to a copy: the other cells are not recompressed
                shutil.copyfile(path, tmp)
                mode = "a"
        with zipfile.ZipFile(tmp, mode, compression=zipfile.ZIP_LZMA) as archive:
            for name, array in kept.items():
                _add(archive, name, array)
            for split, array in arrays.items():
                _add(archive, _member(cell, split), array)
        tmp.replace(path)


def read(cell: Path, split: str) -> np.ndarray:
    """A cell's probabilities of one split, (epochs, rows, classes) float32."""
    path = probs_file(cell)
    if not path.exists():
        raise FileNotFoundError(
            f"no probabilities for {cell.name}: {path} is missing (old .npz cells are converted by "
            "`python -m bench meta pack`)"
        )
    stat = path.stat()  # a file rewritten since is another inode
    return decode(_stored(path, (stat.st_ino, stat.st_mtime_ns), _member(cell, split)))


@functools.lru_cache(maxsize=64)
def _stored(path: Path, version: tuple[int, int], name: str) -> np.ndarray:
    """A member as stored (a replay reads the same few cells again and again)."""
    with zipfile.ZipFile(path) as archive:
        try:
            info = archive.getinfo(name)
        except KeyError:
            raise KeyError(f"no probabilities {name.removesuffix('.npy')!r} in {path}") from None
        with archive.open(info) as data:
            array = np.lib.format.read_array(data, allow_pickle=False)
    array.flags.writeable = False
    return array


def pack(root: Path) -> int:
    """Move every old per-cell `.npz` (float16) under `root` (`<cut>/cells/*.npz`) into its task
    file, checking each read back; the `.npz` is deleted once stored. Returns how many moved."""
    moved = 0
    for old in sorted(root.glob("*/cells/*.npz")):
        if old.name.endswith(".tmp.npz"):
            continue
        cell = old.with_suffix(".json")
        with np.load(old) as data:
            probs = {split: data[split] for split in data.files}
        write(cell, probs)
        for split, array in probs.items():
            back = read(cell, split)
            if back.shape != array.shape or np.abs(back - array.astype(np.float32)).max() > ERROR:
                raise ValueError(f"{old}: {split} did not read back within {ERROR}")
        old.unlink()
        moved += 1
    return moved
