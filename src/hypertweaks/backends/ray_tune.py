"""The same study on a Ray cluster through Ray Tune.

Ray's OptunaSearch asks the same define-by-run space with the same sampler as the embedded
backend (the starting recipes first); the pruner runs as its Ray counterpart
(`Strategy.ray_scheduler`: hyperband as ASHA, median as the median stopping rule), and each
trial runs `trial.run_trial` in a Ray worker with the resources the experiment asks for. The
best model goes to RUN_DIR/best through the same BestCheckpoint as the embedded backend (so
RUN_DIR must be on storage every node sees), and when Ray is done its trials are written into
RUN_DIR/study.db as an Optuna study, so results.json, `report` and `dashboard` work unchanged.
Ray retries a trial whose worker died; running the same command again resumes an interrupted
experiment (Tuner.restore).
"""

from __future__ import annotations

import json
import os
import time
from datetime import datetime
from typing import Any

import optuna
import torch
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    IntDistribution,
)
from optuna.trial import TrialState

from hypertweaks.config import ConfigError, Experiment
from hypertweaks.fingerprint import check_saved_fingerprint
from hypertweaks.space import KNOBS, fit_into, max_epochs, suggest, tunable
from hypertweaks.strategies import strategy_of
from hypertweaks.study import discard_study, storage_url
from hypertweaks.tasks import make_task
from hypertweaks.train import resolve_device
from hypertweaks.trial import StudyContext, TrialRecord, run_trial, study_checkpoint

RAY_DIR = "ray"  # Ray's experiment state, under RUN_DIR
NUMBER = "trial_number"  # added to each trial's config: its place in the study, and its seed


def require_ray():
    try:
        import ray
        from ray import tune  # noqa: F401
    except ImportError:
        raise ConfigError(
            "backend 'ray' needs Ray Tune: pip install 'hypertweaks[ray]' (or 'ray[tune]')"
        ) from None
    return ray


def cluster_address(address: str) -> str:
    """host:port of the Ray cluster an address names: `auto` is RAY_ADDRESS, else the cluster
    the last `ray start` on this machine wrote down; ray://host:port is a Ray Client address."""
    given = address
    if address == "auto":
        address = os.environ.get("RAY_ADDRESS", "")
        if not address:
            try:
                from ray._private.utils import read_ray_address

                address = read_ray_address() or ""
            except Exception:  # a Ray without it: no recorded cluster
                address = ""
        if not address:
            raise ConfigError(
                f"--ray-address {given}: no Ray cluster was started on this machine (and "
                "RAY_ADDRESS is not set); start one with `ray start --head`, give its address, "
                "or omit --ray-address to run on a private local Ray instance"
            )
    return address.split("://", 1)[-1].rstrip("/")


def check_ray_address(address: str | None, timeout: float = 5.0) -> None:
    """A cluster address must answer (its GCS port accepts a connection) before any compute:
    Ray itself would retry a dead address for minutes. No address: nothing to check (a private
    local instance is started)."""
    import socket

    if address is None or address == "local":
        return
    where = cluster_address(address)
    host, _, port = where.rpartition(":")
    if not host or not port.isdigit():
        raise ConfigError(
            f"--ray-address {address!r} is not HOST:PORT (e.g. 10.0.0.5:6379), ray://HOST:PORT "
            "or auto"
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=timeout):
            pass
    except OSError as error:
        shown = where if where == address else f"{where} ({address})"
        raise ConfigError(
            f"the Ray cluster at {shown} does not answer ({error.strerror or error}); start it "
            "with `ray start --head`, or omit --ray-address to run on a private local Ray "
            "instance"
        ) from None


def distributions(space: dict[str, Any]) -> dict[str, Any]:
    """The Optuna distributions `space.suggest` samples from, for writing Ray's trials back."""
    out = {}
    for name in tunable(space):
        spec = space[name]
        if isinstance(spec, list):
            out[name] = CategoricalDistribution(list(dict.fromkeys(spec)))
        elif KNOBS[name].kind == "int":
            out[name] = IntDistribution(spec["low"], spec["high"], log=bool(spec.get("log")))
        else:
            out[name] = FloatDistribution(spec["low"], spec["high"], log=bool(spec.get("log")))
    return out


def ray_trial(
    config: dict[str, Any], experiment: dict[str, Any], space: dict, defaults: dict
) -> None:
    """One trial inside a Ray worker: `trial.run_trial`, reporting every epoch."""
    from ray import tune

    exp = Experiment(**experiment)
    context = tune.get_context()
    attempts_dir = exp.run_dir / RAY_DIR / "attempts"
    attempts_dir.mkdir(parents=True, exist_ok=True)
    marker = attempts_dir / context.get_trial_id()  # counts the tries of this trial
    attempt = json.loads(marker.read_text())["attempt"] + 1 if marker.exists() else 1
    marker.write_text(json.dumps({"attempt": attempt, "pid": os.getpid()}))

    resources = context.get_trial_resources().required_resources
    device = resolve_device(exp.device if resources.get("GPU", 0) else "cpu")
    if device.type == "cpu":
        torch.set_num_threads(max(1, int(resources.get("CPU", 1))))
    params = {k: v for k, v in config.items() if k != NUMBER}
    recipe = suggest(FromParams(params), space)
    tag = "defaults" if params == fit_into(space, defaults) else ""
    number = int(config[NUMBER])
    seed = exp.seed_of(number)

    task = make_task(exp, exp.run_dir / "cache")
    task.prepare()  # tokens and features come from the study's cache
    started = TrialRecord(recipe=recipe.as_dict(), seed=seed, tag=tag, attempts=attempt)
    extra = {"number": number, "attempt": attempt, "started": time.time()}

    def on_epoch(report) -> bool:
        # ASHA stops a trial by ending its function at a report. The last epoch is reported
        # with the trial's record, once its model is saved, so that stop can lose nothing.
        if report.epoch < recipe.epochs:
            row = report.as_dict()
            tune.report(
                {
                    **row,
                    **extra,
                    "row": json.dumps(row),
                    "record": started.to_json(),
                    "final": False,
                }
            )
        return False

    record = run_trial(
        exp,
        task,
        recipe,
        number=number,
        seed=seed,
        device=device,
        best=study_checkpoint(exp, task),
        tag=tag,
        on_epoch=on_epoch,
    )
    record.attempts = attempt
    last = record.curve[-1] if record.curve else {}
    summary = {"record": record.to_json(), "row": json.dumps(last), "finished": time.time()}
    tune.report({**last, **extra, **summary, "final": True})


class FromParams:
    """A suggester that answers with the values Ray's searcher chose: `suggest` then builds the
    recipe exactly as the embedded backend does, fixed knobs included."""

    def __init__(self, params: dict[str, Any]):
        self.params = params

    def suggest_float(self, name: str, *args, **kwargs) -> float:
        return self.params[name]

    suggest_int = suggest_categorical = suggest_float


class DefineByRun:
    """The embedded backend's `suggest` as Ray's define-by-run space (picklable: Ray saves the
    searcher with the experiment)."""

    def __init__(self, space: dict[str, Any]):
        self.space = space

    def __call__(self, trial: optuna.Trial) -> None:
        suggest(trial, self.space)


def numbered_searcher(**kwargs):
    """Ray's OptunaSearch that also numbers its trials in the order it creates them (the
    embedded backend's trial numbers: they seed the trials and order the results). The counter is
    part of the searcher's saved state, so it survives a restore."""
    from ray.tune.search.optuna import OptunaSearch

    class NumberedOptunaSearch(OptunaSearch):
        created = 0

        def suggest(self, trial_id: str):
            config = super().suggest(trial_id)
            if isinstance(config, dict):
                config = {**config, NUMBER: self.created}
                self.created += 1
            return config

    return NumberedOptunaSearch(**kwargs)


class RayBackend:
    """The study's trials on Ray Tune, written back as an Optuna study."""

    def __init__(self, ctx: StudyContext):
        self.ctx = ctx

    @property
    def exp(self):  # read at each use: the runner may lower the timeout before optimize
        return self.ctx.exp

    def open(self) -> None:
        require_ray()
        from ray import tune

        exp = self.exp
        if exp.fresh:  # the study, its Ray experiment and its best model go
            discard_study(exp)
        self.ray_dir = (self.ctx.run_dir / RAY_DIR).resolve()
        resumable = tune.Tuner.can_restore(str(self.ray_dir / "study"))
        check_saved_fingerprint(
            exp, self.ray_dir / "fingerprint.json", resumable
        )  # changed: refused

    def optimize(self) -> optuna.Study:
        ray = require_ray()
        from ray import tune

        ctx, exp, ray_dir = self.ctx, self.exp, self.ray_dir
        offline = {k: os.environ[k] for k in ("HF_HUB_OFFLINE",) if k in os.environ}
        ray.init(
            # no address: a private local instance, never a cluster RAY_ADDRESS or a stopped
            # `ray start` left behind (ray.init(address=None) would join those)
            address=exp.ray_address or "local",
            ignore_reinit_error=True,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": offline},  # workers as offline as the driver
        )
        space, metric, mode = ctx.space, exp.metric, exp.direction[:3]
        trainable = tune.with_resources(
            tune.with_parameters(
                ray_trial,
                experiment=exp.model_dump(mode="json"),
                space=space,
                defaults=ctx.defaults,
            ),
            {"cpu": exp.cpus_per_trial, "gpu": exp.gpus_per_trial},
        )
        if tune.Tuner.can_restore(str(ray_dir / "study")):
            ctx.display.message(f"resuming Ray experiment {ray_dir / 'study'}")
            tuner = tune.Tuner.restore(str(ray_dir / "study"), trainable, resume_errored=True)
        else:
            strategy = strategy_of(exp)
            scheduler, note = strategy.ray_scheduler(max_epochs(space))
            if note:
                ctx.display.message(note)
            starts = strategy.starting_recipes(exp, ctx.defaults, ctx.task.num_layers)
            for start in (s for s in starts if s.fixed):
                ctx.display.message(
                    f"the {start.tag} candidate runs with the embedded backend only; this Ray "
                    "study starts from the recommended recipe"
                )
            searcher = numbered_searcher(
                space=DefineByRun(space),
                metric=metric,
                mode=mode,
                points_to_evaluate=[fit_into(space, s.recipe) for s in starts if not s.fixed],
                sampler=strategy.make_sampler(exp),  # the embedded backend's sampler
            )
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=scheduler,
                    metric=metric,
                    mode=mode,
                    num_samples=exp.trials if exp.trials is not None else -1,
                    time_budget_s=exp.timeout,
                ),
                run_config=tune.RunConfig(
                    name="study",
                    storage_path=str(ray_dir),
                    failure_config=tune.FailureConfig(max_failures=2),
                    verbose=0 if exp.quiet else 1,
                ),
            )
        try:
            grid = tuner.fit()
        finally:
            ray.shutdown()  # disconnect; a cluster started elsewhere keeps running
        return self._record(grid)

    def _record(self, grid) -> optuna.Study:
        """Ray's trials, in creation order, as an Optuna study in the experiment's storage."""
        exp = self.exp
        url = storage_url(exp)
        try:
            optuna.delete_study(study_name=exp.name, storage=url)
        except KeyError:
            pass
        study = optuna.create_study(study_name=exp.name, storage=url, direction=exp.direction)
        study.set_user_attr("backend", "ray")
        dists = distributions(self.ctx.space)
        results = sorted(grid, key=lambda r: (r.metrics or {}).get("number", len(grid)))
        for result in results:
            study.add_trial(self._frozen(result, dists))
        return study

    def _frozen(self, result, dists) -> optuna.trial.FrozenTrial:
        exp, last = self.exp, result.metrics or {}
        params = {k: v for k, v in (result.config or {}).items() if k in dists}
        history, rows = result.metrics_dataframe, []
        if history is not None and "row" in history:  # the epochs of the trial's last attempt
            latest = history[history["attempt"] == last.get("attempt", 1)]
            rows = [json.loads(row) for row in latest["row"]]
        intermediate = {int(r["epoch"]): float(r[exp.metric]) for r in rows if exp.metric in r}
        if "record" in last:
            record = TrialRecord.from_attrs(json.loads(last["record"]))
        else:  # it failed before its first report
            record = TrialRecord(recipe={}, attempts=int(last.get("attempt", 1)))
        if last.get("final"):
            state, value = TrialState.COMPLETE, record.value
        elif rows and result.error is None:  # ASHA stopped it after an epoch
            state, value = TrialState.PRUNED, None
            record.curve, record.stopped = rows, "pruned"
            record.train_seconds = float(rows[-1]["seconds"])
            record.examples = int(rows[-1]["examples"])
        else:
            state, value = TrialState.FAIL, None
            error = result.error or "stopped before its first epoch ended"
            record.error = f"{type(error).__name__}: {str(error)[:500]}"
        attrs = record.attrs()
        if not record.recipe:
            del attrs["recipe"]  # results.json falls back to the trial's params
        trial = optuna.trial.create_trial(
            state=state,
            value=value,
            params=params,
            distributions={k: dists[k] for k in params},
            intermediate_values=intermediate,
            user_attrs={**attrs, "attempts": record.attempts},
        )
        if "started" in last:  # when the trial ran, not when it was recorded
            trial.datetime_start = datetime.fromtimestamp(last["started"])
            trial.datetime_complete = datetime.fromtimestamp(
                last.get("finished", last.get("timestamp", last["started"]))
            )
        return trial
