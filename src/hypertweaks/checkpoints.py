"""The one best model of a study on disk: RUN_DIR/best -> checkpoints/trial-N (or
checkpoints/soup-N-M-... or checkpoints/refit-N, made by the final-model stage: soup.py,
refit.py).

A new best is written next to the old one, then the `best` link is swapped atomically under a
file lock (workers may share RUN_DIR), then the old one is deleted: a crash at any point leaves a
complete best model, and at rest there is exactly one best checkpoint (besides the soup's
members, checkpoints/members/).
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Callable, Container, Iterator
from contextlib import contextmanager
from pathlib import Path

from hypertweaks.config import ConfigError
from hypertweaks.strategies.selectors import Candidate, KeepDefaults, Selector

try:  # POSIX file locks: workers may share RUN_DIR. Loading and predicting need none.
    import fcntl
except ImportError:  # Windows
    fcntl = None

META = "trial.json"


class BestCheckpoint:
    def __init__(
        self,
        run_dir: Path,
        direction: str,
        selector: Selector | None = None,
    ):
        if fcntl is None:
            raise ConfigError(
                "tuning needs a POSIX system (Linux or macOS): the best model is swapped under "
                "a POSIX file lock and a symbolic link. On Windows run it in WSL; load, predict "
                "and evaluate work on a tuned model folder anywhere"
            )
        self.run_dir, self.direction = run_dir, direction
        self.link = run_dir / "best"
        self.checkpoints = run_dir / "checkpoints"
        # which trial's model to keep: by default the best on validation
        self.selector = selector or KeepDefaults(direction, "", 0, errors=0.0)

    def meta(self) -> dict | None:
        """{'trial': N, 'value': v} of the best checkpoint, or None (also when its trial.json
        is corrupt: that checkpoint is then replaced by the next best)."""
        path = self.link / META
        try:
            meta = json.loads(path.read_text()) if path.is_file() else None
        except (OSError, ValueError):
            return None
        ok = isinstance(meta, dict) and isinstance(meta.get("trial"), int) and "value" in meta
        return meta if ok else None

    def beats_current(self, value: float, tag: str = "", trial: int = 0) -> bool:
        """Whether trial number `trial`'s value should replace the best on disk: the selector
        decides."""
        current = self.meta()
        kept = None
        if current is not None:
            kept = Candidate(current["value"], current.get("tag") or "", current["trial"])
        return self.selector.replaces(Candidate(value, tag, trial), kept)

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        with open(self.run_dir / ".best.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def offer(self, trial: int, value: float, write: Callable[[Path], None], tag: str = "") -> bool:
        """Keep this trial's model if it beats the best on disk (the defaults trial by more
        than the selector's margin); `write(folder)` saves it."""
        if not self.beats_current(value, tag, trial):
            return False
        target = self.checkpoints / f"trial-{trial}"
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        write(target)
        (target / META).write_text(json.dumps({"trial": trial, "value": value, "tag": tag}))
        with self._locked():
            # another worker saved a better one meanwhile
            if not self.beats_current(value, tag, trial):
                shutil.rmtree(target)
                return False
            self._point_best_to(target, f".best-{trial}.tmp")
        return True

    def replace(self, name: str, meta: dict, write: Callable[[Path], None], expected: dict) -> bool:
        """Make checkpoints/NAME (written by `write`, with `meta` as its trial.json) the best
        model, if the best on disk is still the one described by `expected` (the final-model
        stage compared with it); False, and nothing kept, if another worker changed it."""
        target = self.checkpoints / name
        shutil.rmtree(target, ignore_errors=True)
        target.mkdir(parents=True)
        write(target)
        (target / META).write_text(json.dumps(meta))
        with self._locked():
            if self.meta() != expected:
                shutil.rmtree(target)
                return False
            self._point_best_to(target, f".best-{name}.tmp")
        return True

    def _point_best_to(self, target: Path, tmp_name: str) -> None:
        """Swap the `best` link to `target` atomically, then delete the previous best (under
        the lock)."""
        previous = self.link.resolve() if self.link.is_symlink() else None
        tmp_link = self.run_dir / tmp_name
        tmp_link.unlink(missing_ok=True)
        tmp_link.symlink_to(target.relative_to(self.run_dir))
        os.replace(tmp_link, self.link)
        if previous is not None and previous != target.resolve():
            shutil.rmtree(previous, ignore_errors=True)

    def remove_orphans(self, running: Container[int]) -> None:
        """Delete checkpoints left half-written by a crash (not the best, not being written)."""
        if not self.checkpoints.is_dir():
            return
        with self._locked():
            keep = self.link.resolve() if self.link.is_symlink() else None
            for folder in self.checkpoints.iterdir():
                made = folder.name.startswith(("soup-", "refit-"))  # by the final-model stage
                if made and folder.resolve() != keep:
                    shutil.rmtree(folder, ignore_errors=True)  # no longer the best
                    continue
                number = folder.name.removeprefix("trial-")
                if not (folder.name.startswith("trial-") and number.isdigit()):
                    continue  # not ours (a user's folder, a stray file, members/): left alone
                if folder.resolve() != keep and int(number) not in running:
                    shutil.rmtree(folder, ignore_errors=True)
