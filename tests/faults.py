"""Helpers to cause faults for real: worker subprocesses, a PostgreSQL server on loopback."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import optuna


def _as_in_a_terminal() -> None:
    # A shell without job control starts background commands with Ctrl-C ignored, and children
    # inherit that (`make test &` would then make the worker deaf to SIGINT): restore it.
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def start_worker(experiment_yaml: Path, *extra: str) -> subprocess.Popen:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    return subprocess.Popen(
        [sys.executable, "-m", "hypertweaks.cli", "tune", str(experiment_yaml), "--quiet", *extra],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        preexec_fn=_as_in_a_terminal,
    )


def load_trials(storage: str, name: str) -> list[optuna.trial.FrozenTrial]:
    if storage.startswith("sqlite:///") and not Path(storage[10:]).exists():
        return []  # the worker has not created it yet
    from sqlalchemy.exc import SQLAlchemyError

    try:
        return optuna.load_study(study_name=name, storage=storage).get_trials()
    except (KeyError, SQLAlchemyError):  # the worker is still creating the study or its tables
        return []


def wait_until(condition, timeout: float = 180, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.2)
    raise TimeoutError(f"timed out waiting for {what}")


def trial_running(storage: str, name: str, number: int, worker: subprocess.Popen) -> bool:
    if worker.poll() is not None:
        raise RuntimeError(f"the worker exited early:\n{worker.communicate()[0]}")
    trials = load_trials(storage, name)
    # an epoch reported: the trial is well under way and its heartbeat has been recorded
    return (
        len(trials) > number
        and trials[number].state == optuna.trial.TrialState.RUNNING
        and len(trials[number].intermediate_values) > 0
    )


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Postgres:
    """A throwaway PostgreSQL server on 127.0.0.1 (Debian's postgresql package)."""

    user, password, database = "hypertweaks", "pg-secret-pw", "studies"

    def __init__(self):
        bins = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
        if not bins:
            raise FileNotFoundError("PostgreSQL server not installed (apt-get install postgresql)")
        self.bin = bins[-1].parent
        self.root = Path(tempfile.mkdtemp(prefix="ht-pg-", dir="/tmp"))
        self.root.chmod(0o755)
        self.as_user = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres")
        self.port = _free_port()

    def _run(self, *args: str) -> None:
        subprocess.run([*self.as_user, *args], check=True, capture_output=True, text=True)

    def start(self) -> str:
        data = self.root / "data"
        self._run(str(self.bin / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust")
        options = f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1"
        self._run(
            str(self.bin / "pg_ctl"),
            "-D",
            str(data),
            "-o",
            options,
            "-w",
            "start",
            "-l",
            str(self.root / "log"),
        )
        psql = [str(self.bin / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres"]
        self._run(*psql, "-c", f"CREATE USER {self.user} PASSWORD '{self.password}'")
        self._run(*psql, "-c", f"CREATE DATABASE {self.database} OWNER {self.user}")
        return (
            f"postgresql+psycopg2://{self.user}:{self.password}@127.0.0.1:{self.port}/"
            f"{self.database}"
        )

    def stop(self) -> None:
        self._run(str(self.bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast", "stop")
        shutil.rmtree(self.root, ignore_errors=True)
