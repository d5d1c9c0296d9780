"""Checks of the environment a study runs in, before any data is read or model loaded: the runs
folder can be written, the device exists, the storage URL names a database whose driver is
installed. Each failure is a ConfigError that says what is wrong and what to do."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from hypertweaks.config import ConfigError, Experiment


def check_runs_dir(exp: Experiment) -> None:
    """RUNS_DIR/NAME exists (created here) and this process may write in it."""
    run_dir = exp.run_dir
    for parent in (run_dir, *run_dir.parents):
        if parent.exists():
            if not parent.is_dir():
                raise ConfigError(
                    f"runs folder: {str(parent)!r} is a file, not a folder; pass --runs-dir "
                    "with a folder (it is created when missing)"
                )
            break
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=run_dir, prefix=".write-test-"):
            pass
    except OSError as error:
        raise ConfigError(
            f"runs folder {str(run_dir)!r} cannot be written ({error.strerror or error}); "
            "pass --runs-dir with a folder you may write to"
        ) from None


def check_device(device: str) -> None:
    """cuda / cuda:N / mps must exist on this machine."""
    if device in ("auto", "cpu"):
        return
    import torch

    if device == "mps":
        if not torch.backends.mps.is_available():
            raise ConfigError("device 'mps' is not available here; use --device cpu or auto")
        return
    if not torch.cuda.is_available():
        raise ConfigError(
            f"device {device!r}: no CUDA GPU is visible to this process "
            f"(CUDA_VISIBLE_DEVICES={os.environ.get('CUDA_VISIBLE_DEVICES', 'unset')}); "
            "use --device cpu or auto"
        )
    index = int(device.split(":")[1]) if ":" in device else 0
    count = torch.cuda.device_count()
    if index >= count:
        raise ConfigError(
            f"device {device!r}: this machine has {count} GPU(s), cuda:0 to cuda:{count - 1}"
        )


def preflight(exp: Experiment) -> None:
    """Everything about the environment that can fail, before any data is read."""
    from hypertweaks.study import make_sqlite_folder, storage_url

    check_device(exp.device)
    check_runs_dir(exp)
    # an unknown scheme, a missing driver or SQLite in memory is a ConfigError
    make_sqlite_folder(storage_url(exp))
    for role in ("train", "validation", "test"):
        path: Path | None = getattr(exp, role)
        if path is not None and not path.exists():
            hint = ""
            if role in exp._relative_in_file:
                hint = " (relative paths in an experiment file are relative to its folder)"
            raise ConfigError(f"{role} data {str(path)!r} does not exist{hint}")
