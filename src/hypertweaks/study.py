"""The Optuna study behind a search: storage, sampler, pruner, resume checks, and the budget
accounting shared by every worker. All state lives in the storage."""

from __future__ import annotations

import json
import random
import time
import warnings

import optuna
from optuna.trial import TrialState

from hypertweaks.config import ConfigError, Experiment
from hypertweaks.strategies import make_pruner, make_sampler


def storage_url(exp: Experiment) -> str:
    return exp.storage or f"sqlite:///{(exp.run_dir / 'study.db').resolve()}"


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
    from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

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
        except (IntegrityError, OperationalError, ProgrammingError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def open_study(exp: Experiment, num_epochs: int) -> tuple[optuna.Study, bool]:
    """The study, and whether this worker created it. Creation is atomic in the storage (the
    study name is unique), so of several workers that start together exactly one creates it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = _connect(exp)
    settings = dict(storage=storage, sampler=make_sampler(exp), pruner=make_pruner(exp, num_epochs))
    try:
        study = optuna.create_study(study_name=exp.name, direction=exp.direction, **settings)
        return study, True
    except optuna.exceptions.DuplicatedStudyError:
        return optuna.load_study(study_name=exp.name, **settings), False


def same_experiment(study: optuna.Study, exp: Experiment) -> None:
    """A resumed study must be the same search: same task, model, data, metric and space."""
    key = json.dumps(
        exp.model_dump(
            mode="json",
            include={
                "task",
                "model",
                "train",
                "validation",
                "metric",
                "space",
                "max_length",
                "image_size",
                "seed",
            },
        ),
        sort_keys=True,
    )
    stored = study.user_attrs.get("experiment_key")
    if stored is None:
        study.set_user_attr("experiment_key", key)
    elif stored != key:
        raise ConfigError(
            f"study {exp.name!r} already exists in {redact(storage_url(exp))} with a different "
            "task, model, data, metric or search space; give a new --name to start a new study"
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


def fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


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
                    **({"tag": trial.user_attrs["tag"]} if "tag" in trial.user_attrs else {}),
                },
            )
