"""Which process runs a trial, and whether it is still alive: a worker on the same host tells a
dead owner (no such process) at once, instead of waiting for its heartbeat to go stale."""

from __future__ import annotations

import logging
import os
import socket
import time
from datetime import datetime
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

log = logging.getLogger("hypertweaks")


def _process_start(pid: int) -> str | None:
    """The process's start time (ticks since boot), to tell a reused pid; None where unknown."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]  # a zombie is dead


def worker_identity() -> dict[str, Any]:
    pid = os.getpid()
    return {
        "host": socket.gethostname(),
        "pid": pid,
        "start": _process_start(pid),
        "at": time.time(),
    }


def claim(trial: optuna.Trial) -> None:
    """Record which process runs the trial, so that a worker on the same host can tell when that
    process has died and retry its trial at once, without waiting for the heartbeat."""
    trial.set_user_attr("worker", worker_identity())


def owner_alive(owner: dict[str, Any]) -> bool | None:
    """Whether the process that claimed a trial still runs; None when it is on another host."""
    if owner.get("host") != socket.gethostname():
        return None
    pid = int(owner["pid"])
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass  # another user's process: it exists
    start = _process_start(pid)
    if start is None:
        return not Path("/proc/self/stat").exists()  # with /proc, no start time: a zombie
    return owner.get("start") in (None, start)


def fail_dead_trials(study: optuna.Study) -> list[int]:
    """Fail, and retry once, the running trials whose process is known to be dead: on this host
    with no such process, or never claimed by any process (killed before its first heartbeat)
    and older than the heartbeat grace period. Returns their numbers."""
    storage = study._storage
    backend = getattr(storage, "_backend", storage)  # the RDBStorage behind Optuna's cache
    grace = 60.0
    interval = getattr(backend, "heartbeat_interval", None)
    if interval:
        grace = float(getattr(backend, "grace_period", None) or 2 * interval)
    failed = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("worker")
        started = trial.datetime_start or datetime.now()
        if owner is not None and owner.get("at", 0) < started.timestamp():
            owner = None  # a retried trial's copy of the dead worker's claim: not claimed yet
        if owner is not None:
            dead = owner_alive(owner) is False
        else:
            dead = (datetime.now() - started).total_seconds() > grace
        if not dead:
            continue
        try:
            storage.set_trial_user_attr(trial._trial_id, "worker_died", True)
            if not storage.set_trial_state_values(trial._trial_id, state=TrialState.FAIL):
                continue
        except optuna.exceptions.UpdateFinishedTrialError:
            continue  # another worker failed it first
        log.info("trial %d: its worker died; the trial is retried", trial.number)
        failed.append(trial.number)
        callback = getattr(backend, "get_heartbeat_stale_trial_callback", lambda: None)()
        if callback is not None:
            callback(study, storage.get_trial(trial._trial_id))
    return failed
