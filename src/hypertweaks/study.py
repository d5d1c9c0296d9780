"""The Optuna study behind a search: storage, sampler, pruner, resume checks, and the budget
accounting shared by every worker. All state lives in the storage."""

from __future__ import annotations

import logging
import random
import shutil
import time
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hypertweaks.config import ConfigError, Experiment
from hypertweaks.fingerprint import WAY_OUT, compare_fingerprints, experiment_fingerprint
from hypertweaks.liveness import claim, fail_dead_trials  # noqa: F401 (claim: for embedded)
from hypertweaks.strategies import strategy_of

log = logging.getLogger("hypertweaks")
STORAGE_HELP = "use sqlite:///PATH/study.db or postgresql://USER:PASSWORD@HOST/DB"
# The driver a plain postgresql:// URL gets: psycopg 3 where installed, else psycopg2.
POSTGRES_DRIVERS = (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2"))


class StudyError(ValueError):
    """The study cannot go on as asked (e.g. no trial completed); the message says why."""


def sqlite_url(path: Path) -> str:
    """A SQLite URL for any folder name ('?' and '%' included: they are quoted)."""
    from sqlalchemy.engine import URL

    return URL.create("sqlite", database=str(Path(path).absolute())).render_as_string()


def normalise_storage(url: str, name: str = "NAME") -> str:
    """A storage URL SQLAlchemy can open, with a driver that is installed: a plain
    postgresql:// (or postgres://) URL gets psycopg 3 or psycopg2, whichever is installed.
    Unknown schemes and missing drivers are ConfigErrors that say what to install; an in-memory
    SQLite database (nothing saved, nothing to resume) is refused."""
    import importlib.util

    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError, NoSuchModuleError

    try:
        parsed = make_url(url)
    except ArgumentError:
        shown = redact(url) if "@" in url else url  # (redact shows only a URL's scheme)
        raise ConfigError(f"storage {shown!r} is not a database URL; {STORAGE_HELP}") from None
    if parsed.drivername.startswith("sqlite") and in_memory(parsed.database, parsed.query):
        raise ConfigError(
            f"storage {url!r} is a SQLite database in memory: nothing would be saved and the "
            f"study could not resume; give a file, e.g. --storage sqlite:///runs/{name}/study.db "
            "(storage=... in Python), or omit --storage for RUNS_DIR/NAME/study.db"
        )
    if parsed.drivername in ("postgresql", "postgres"):
        driver = next(
            (name for module, name in POSTGRES_DRIVERS if importlib.util.find_spec(module)), None
        )
        if driver is None:
            raise ConfigError(
                f"storage {redact(url)!r} needs a PostgreSQL driver: "
                "pip install 'hypertweaks[postgres]'"
            )
        parsed = parsed.set(drivername=driver)
    try:
        dialect = parsed.get_dialect()
    except NoSuchModuleError:
        raise ConfigError(
            f"storage {redact(url)!r}: unknown database kind {parsed.drivername!r}; {STORAGE_HELP}"
        ) from None
    try:
        dialect.import_dbapi()
    except ImportError as error:
        extra = (
            "pip install 'hypertweaks[postgres]'"
            if "postgres" in parsed.drivername
            else (f"install the Python driver of {parsed.drivername}")
        )
        raise ConfigError(
            f"storage {redact(url)!r}: its driver is not installed ({error}); {extra}"
        ) from None
    return parsed.render_as_string(hide_password=False)


def in_memory(database: str | None, query: Any = None) -> bool:
    """Whether a SQLite URL's database lives in memory (sqlite://, sqlite:///, :memory:)."""
    memory = database in (None, "", ":memory:") or str(database).startswith("file::memory:")
    return memory or dict(query or {}).get("mode") == "memory"


def sqlite_folder(url: str) -> Path | None:
    """The folder of a SQLite file URL; None for other databases and SQLite in memory."""
    from sqlalchemy.engine import make_url

    try:
        parsed = make_url(url)
    except Exception:  # not a URL: nothing to say about its folder
        return None
    if not parsed.drivername.startswith("sqlite") or in_memory(parsed.database, parsed.query):
        return None
    return Path(str(parsed.database)).expanduser().absolute().parent


def make_sqlite_folder(url: str) -> None:
    """The folder of a SQLite file is created, like the default runs folder (preflight)."""
    folder = sqlite_folder(url)
    if folder is None:
        return
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        reason = "a file is in the way" if isinstance(error, FileExistsError) else error.strerror
        raise ConfigError(
            f"storage {url!r}: the folder {str(folder)!r} of its SQLite file cannot be created "
            f"({reason}); give a path in a folder you may write to"
        ) from None


def storage_url(exp: Experiment) -> str:
    if exp.storage:
        return normalise_storage(exp.storage, exp.name)
    return sqlite_url(exp.run_dir / "study.db")


def redact(url: str) -> str:
    """A storage URL safe to print: the password is never shown."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # not a URL sqlalchemy reads: show only its scheme
        return url.split(":", 1)[0] + "://***"


def _connect(exp: Experiment, attempts: int = 5) -> optuna.storages.RDBStorage:
    """The study's storage. Workers that start together on a new database race to create its
    tables; the losers retry. (PostgreSQL reports the clash as an IntegrityError, or as a
    ProgrammingError when the table's row type was created first: `type "alembic_version"
    already exists`.)"""
    from sqlalchemy.exc import DatabaseError, IntegrityError, OperationalError, ProgrammingError

    for attempt in range(attempts):
        try:
            # A worker that dies mid-trial stops beating; its trial is failed and retried once.
            return optuna.storages.RDBStorage(
                storage_url(exp),
                heartbeat_interval=exp.heartbeat_seconds,
                grace_period=2 * exp.heartbeat_seconds,
                heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(
                    max_retry=1
                ),
            )
        except (IntegrityError, OperationalError, ProgrammingError) as error:
            if attempt == attempts - 1:
                raise storage_error(storage_url(exp), error) from None
            time.sleep(0.5 + random.random())
        except DatabaseError as error:  # e.g. a study.db that is not a database: no retry helps
            raise storage_error(storage_url(exp), error) from None
    raise AssertionError("unreachable")


def storage_error(url: str, error: Exception) -> ConfigError:
    """Why a storage cannot be opened, and what to do."""
    reason = str(getattr(error, "orig", error)).strip().splitlines()[0]
    folder = sqlite_folder(url)
    if folder is not None and not folder.is_dir():
        what = f"the folder {str(folder)!r} does not exist: create it, or fix the path"
    elif url.startswith("sqlite"):
        what = "move the file away (or delete it) to start the study afresh, or restore a backup"
    else:
        what = "check that the server runs and is reachable, and the URL's user and password"
    return ConfigError(f"cannot open the study's storage {redact(url)!r} ({reason}); {what}")


def open_study(exp: Experiment, num_epochs: int) -> tuple[optuna.Study, bool]:
    """The study, and whether this worker created it. Creation is atomic in the storage (the
    study name is unique), so of several workers that start together exactly one creates it.
    A study whose data or settings changed is refused, unless no trial of it ever started (e.g.
    its smoke run failed): that one is reconfigured. `fresh` discards the study first."""
    if exp.fresh:
        log.info("starting study %r afresh: its trials and best model are discarded", exp.name)
        discard_study(exp)
        exp = exp.model_copy(update={"fresh": False})
    study, created = _open_study(exp, num_epochs)
    if created:
        study.set_user_attr("experiment_fingerprint", experiment_fingerprint(exp))
        return study, True
    differences = fingerprint_differences(study, exp)
    if not differences:
        return study, False
    if any(t.state != TrialState.WAITING for t in study.get_trials(deepcopy=False)):
        done = sum(1 for t in study.get_trials(deepcopy=False) if counted(t))
        raise ConfigError(
            f"study {exp.name!r} in {redact(storage_url(exp))} was started with other "
            f"{'; '.join(differences)}. Its {done} finished trials were scored on that; {WAY_OUT}"
        )
    log.info("study %r had no trial yet: reconfigured (%s)", exp.name, "; ".join(differences))
    discard_study(exp)
    return open_study(exp, num_epochs)


def _open_study(exp: Experiment, num_epochs: int) -> tuple[optuna.Study, bool]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = _connect(exp)
    strategy = strategy_of(exp)
    settings = dict(
        storage=storage,
        sampler=strategy.make_sampler(exp),
        pruner=strategy.make_pruner(exp, num_epochs),
    )
    try:
        study = optuna.create_study(study_name=exp.name, direction=exp.direction, **settings)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=exp.name, **settings), False


def fingerprint_differences(study: optuna.Study, exp: Experiment) -> list[str]:
    """What differs between the study's stored fingerprint and this experiment's."""
    stored = study.user_attrs.get("experiment_fingerprint")
    if stored is None:  # created by an older version, or by a worker still storing it
        study.set_user_attr("experiment_fingerprint", experiment_fingerprint(exp))
        return []
    return compare_fingerprints(stored, experiment_fingerprint(exp))


def discard_study(exp: Experiment) -> None:
    """Delete the study from its storage, and its outputs (not the data caches) from RUN_DIR."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            storage = _connect(exp)
    except ConfigError:
        if exp.storage is not None:
            raise
        (exp.run_dir / "study.db").unlink()  # our own SQLite file, unreadable: start anew
    else:
        try:
            optuna.delete_study(study_name=exp.name, storage=storage)
        except KeyError:
            pass
    run_dir = exp.run_dir
    for name in ("best", "checkpoints", "results.json", "report.html", "ray"):
        path = run_dir / name
        if path.is_symlink() or path.is_file():
            path.unlink()
        elif path.is_dir():
            shutil.rmtree(path, ignore_errors=True)


def same_experiment(study: optuna.Study, exp: Experiment) -> None:
    """A resumed study must be the same search: same data content, task, model, metric and
    space (`open_study` checks it; this stores the fingerprint of a study that lacks one)."""
    differences = fingerprint_differences(study, exp)
    if differences:
        raise ConfigError(
            f"study {exp.name!r} in {redact(storage_url(exp))} was started with other "
            f"{'; '.join(differences)}; {WAY_OUT}"
        )


def counted(trial: optuna.trial.FrozenTrial) -> bool:
    """Trials that used budget: finished ones, and failures of the recipe itself. A trial that
    was interrupted or whose worker died is retried instead."""
    if trial.user_attrs.get("surplus"):
        return False
    if trial.state in (TrialState.COMPLETE, TrialState.PRUNED):
        return True
    return trial.state == TrialState.FAIL and "error" in trial.user_attrs


def trial_seconds(trial: optuna.trial.FrozenTrial) -> float:
    if trial.datetime_start and trial.datetime_complete:
        return (trial.datetime_complete - trial.datetime_start).total_seconds()
    return 0.0


def seconds_used(trials: list[optuna.trial.FrozenTrial]) -> float:
    """The wall time of the trials that count against the budget (`counted`)."""
    return sum(trial_seconds(t) for t in trials if counted(t))


def time_needed(epoch: float, epochs: int) -> float:
    """What the time left must hold for a trial of `epochs` epochs of `epoch` each to start
    (seconds, or any measure of cost: the simulator replays this rule): all but its last epoch,
    and at least one."""
    return epoch * max(epochs - 1, 1)


def no_time_for(
    timeout: float | None,
    trials: list[optuna.trial.FrozenTrial],
    epochs: int,
    reserve: float = 0.0,
) -> str | None:
    """Why a trial of `epochs` epochs must not start under `timeout`, or None. It starts only if
    the time left holds all but its last epoch (and at least one), at the pace of the recommended
    recipe's finished run: it then ends at most an epoch past the timeout. A soup run runs whole
    (a third one at 3x, where a run costs a little over a budget unit, is worth more than a
    search trial in that time); a search trial that could not end would be stopped at the
    timeout and score nothing, so its time is saved. `reserve`: seconds kept back for what
    follows the search (the refit, refit.py). Without that run, or a timeout, None."""
    first = next((t for t in trials if t.user_attrs.get("tag") == "defaults"), None)
    if timeout is None or first is None or first.state != TrialState.COMPLETE:
        return None
    left = timeout - reserve - seconds_used(trials)
    epoch = trial_seconds(first) / max(len(first.user_attrs.get("curve") or []), 1)
    need = time_needed(epoch, epochs)
    if need <= left:
        return None
    kept = f" (past the {reserve:.0f}s kept for the refit)" if reserve else ""
    return (
        f"{max(left, 0):.0f}s of the timeout left{kept}, less than the {need:.0f}s a "
        f"{epochs}-epoch trial needs (all but its last epoch, at the default's pace)"
    )


def timeout_passed(
    timeout: float | None,
    trials: list[optuna.trial.FrozenTrial],
    running_seconds: float,
    reserve: float = 0.0,
) -> bool:
    """Whether the counted trials and `running_seconds` of the one running have used the
    timeout less `reserve` (no_time_for): a search trial then stops at the end of its epoch."""
    if timeout is None:
        return False
    return seconds_used(trials) + running_seconds + reserve >= timeout


def fail_stale_trials(study: optuna.Study) -> None:
    fail_dead_trials(study)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def running_elsewhere(study: optuna.Study) -> list[str]:
    """The running trials this worker cannot tell are dead, described for the user."""
    lines = []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        owner = trial.user_attrs.get("worker") or {}
        where = f"on {owner.get('host', '?')} (pid {owner.get('pid', '?')})"
        lines.append(f"trial {trial.number} is running {where}")
    return lines


def no_trial_completed(study: optuna.Study, exp: Experiment, results_path: Path) -> StudyError:
    """Why a study has no completed trial, and what to do."""
    trials = study.get_trials(deepcopy=False)
    running = running_elsewhere(study)
    errors = [
        f"trial {t.number}: {t.user_attrs['error']}" for t in trials if "error" in t.user_attrs
    ]
    if running:
        return StudyError(
            f"no trial of study {exp.name!r} has completed yet: {'; '.join(running)}. If that "
            f"worker is dead, its trial is retried once its heartbeat is "
            f"{2 * exp.heartbeat_seconds} s stale: run the same command again then"
        )
    shown = "; ".join(errors[:3]) or "every trial failed or was pruned"
    return StudyError(
        f"no trial of study {exp.name!r} completed ({shown}); the trials are in "
        f"{results_path}. Change the search space (e.g. a lower learning_rate) or the data"
    )


def enqueue_interrupted(study: optuna.Study) -> None:
    """A trial stopped by Ctrl-C, or that failed for no reason of its recipe, is tried again,
    once (a killed worker's trial is retried by the heartbeat callback instead)."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    retried |= {t.system_attrs.get("failed_trial") for t in trials}
    for trial in trials:
        interrupted = trial.state == TrialState.FAIL and "error" not in trial.user_attrs
        if interrupted and trial.number not in retried:
            study.enqueue_trial(
                trial.params,
                user_attrs={
                    "retry_of": trial.number,
                    **{
                        k: trial.user_attrs[k]
                        for k in ("tag", "fixed_recipe")
                        if k in trial.user_attrs
                    },
                },
            )
