"""The same study on a Ray cluster through Ray Tune.

Ray's OptunaSearch asks the same define-by-run space as the embedded backend (the default
recipe first), Ray's ASHA stops weak trials at epoch boundaries, and each trial runs the usual
`fit` in a Ray worker with the resources the experiment asks for. The best model goes to
RUN_DIR/best through the same BestCheckpoint as the embedded backend (so RUN_DIR must be on
storage every node sees), and when Ray is done its trials are written into RUN_DIR/study.db as an
Optuna study, so results.json, `report` and `dashboard` work unchanged. Ray retries a trial whose
worker died; running the same command again resumes an interrupted experiment (Tuner.restore).
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

from hypertweaks.checkpoints import BestCheckpoint
from hypertweaks.config import ConfigError, Experiment
from hypertweaks.fingerprint import check_saved_fingerprint
from hypertweaks.search import Result, Search, fit_trial, write_model
from hypertweaks.space import KNOBS, fit_into, max_epochs, suggest, tunable
from hypertweaks.study import discard_study, make_sampler, storage_url
from hypertweaks.tasks import make_task
from hypertweaks.train import evaluate, release_memory, resolve_device

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


def run_trial(
    config: dict[str, Any], experiment: dict[str, Any], space: dict, defaults: dict
) -> None:
    """One trial inside a Ray worker: the embedded backend's trial, reporting every epoch."""
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
    is_default = params == fit_into(space, defaults)
    number = int(config[NUMBER])
    seed = exp.seed_of(number)

    task = make_task(exp, exp.run_dir / "cache")
    task.prepare()  # tokens and features come from the study's cache
    extra = {
        "attempt": attempt,
        "number": number,
        "recipe": json.dumps(recipe.as_dict()),
        "seed": seed,
        "started": time.time(),
        "tag": "defaults" if is_default else "",
    }

    def on_epoch(report) -> bool:
        # ASHA stops a trial by ending its function at a report. The last epoch is reported
        # with the trial's summary, once its model is saved, so that stop can lose nothing.
        if report.epoch < recipe.epochs:
            row = report.as_dict()
            tune.report({**row, **extra, "row": json.dumps(row), "final": False})
        return False

    model, result = fit_trial(exp, task, recipe, device, seed, on_epoch)
    test_metrics = None
    if is_default and task.splits.test is not None:
        test = task.dataset(task.splits.test, False)
        test_metrics = evaluate(task, model, test, device)
    BestCheckpoint(exp.run_dir, exp.direction).offer(
        number,
        result.best_value,
        lambda folder: write_model(exp, task, model, folder, number, recipe, result),
    )
    summary = {
        "best_value": result.best_value,
        "best_epoch": result.best_epoch,
        "stopped": result.stopped,
        "train_seconds": result.seconds,
        "examples": result.examples,
        "best_metrics": json.dumps(result.best_metrics),
        "curve": json.dumps(result.curve),
        "test_metrics": json.dumps(test_metrics),
        "finished": time.time(),
    }
    last = result.curve[-1] if result.curve else {}
    model = None
    release_memory(device)
    tune.report({**last, **extra, **summary, "row": json.dumps(last), "final": True})


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


class RaySearch(Search):
    """The study's stages on Ray Tune; outputs identical in form to the embedded backend's."""

    def run(self) -> Result:
        ray = require_ray()
        from ray import tune
        from ray.tune.schedulers import ASHAScheduler

        exp = self.exp
        start = time.perf_counter()
        if exp.fresh:  # the study, its Ray experiment and its best model go
            discard_study(exp)
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        ray_dir = (self.run_dir / RAY_DIR).resolve()
        resumable = tune.Tuner.can_restore(str(ray_dir / "study"))
        check_saved_fingerprint(exp, ray_dir / "fingerprint.json", resumable)  # changed: refused
        if exp.smoke:
            self.smoke()
        offline = {k: os.environ[k] for k in ("HF_HUB_OFFLINE",) if k in os.environ}
        ray.init(
            address=exp.ray_address,
            ignore_reinit_error=True,
            include_dashboard=False,
            log_to_driver=False,
            runtime_env={"env_vars": offline},  # workers as offline as the driver
        )
        space, metric, mode = self.space, exp.metric, exp.direction[:3]
        trainable = tune.with_resources(
            tune.with_parameters(
                run_trial,
                experiment=exp.model_dump(mode="json"),
                space=space,
                defaults=self.defaults,
            ),
            {"cpu": exp.cpus_per_trial, "gpu": exp.gpus_per_trial},
        )
        ray_dir = (self.run_dir / RAY_DIR).resolve()
        if tune.Tuner.can_restore(str(ray_dir / "study")):
            self.display.message(f"resuming Ray experiment {ray_dir / 'study'}")
            tuner = tune.Tuner.restore(str(ray_dir / "study"), trainable, resume_errored=True)
        else:
            searcher = numbered_searcher(
                space=DefineByRun(space),
                metric=metric,
                mode=mode,
                points_to_evaluate=[fit_into(space, self.defaults)] if exp.defaults_first else [],
                sampler=make_sampler(exp),  # the embedded backend's sampler
            )
            max_t = max_epochs(space)
            tuner = tune.Tuner(
                trainable,
                tune_config=tune.TuneConfig(
                    search_alg=searcher,
                    scheduler=ASHAScheduler(
                        time_attr="epoch", max_t=max_t, grace_period=1, reduction_factor=3
                    )
                    if exp.pruner != "none"
                    else None,
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
        study = self._record(grid)
        result = self.finish(study)
        result.seconds = time.perf_counter() - start
        from hypertweaks.report import render

        result.report_path = render(self.run_dir, exp.storage)
        return result

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
        dists = distributions(self.space)
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
        attrs: dict[str, Any] = {"attempts": int(last.get("attempt", 1))}
        if "recipe" in last:
            attrs["recipe"] = json.loads(last["recipe"])
            attrs["seed"] = int(last["seed"])
            if last.get("tag"):
                attrs["tag"] = last["tag"]
        if last.get("final"):
            state, value = TrialState.COMPLETE, float(last["best_value"])
            attrs.update(
                curve=json.loads(last["curve"]),
                metrics=json.loads(last["best_metrics"]),
                examples=int(last["examples"]),
                train_seconds=float(last["train_seconds"]),
                best_epoch=int(last["best_epoch"]),
                stopped=last["stopped"],
            )
            if json.loads(last["test_metrics"]):
                attrs["test_metrics"] = json.loads(last["test_metrics"])
        elif rows and result.error is None:  # ASHA stopped it after an epoch
            state, value = TrialState.PRUNED, None
            attrs.update(
                curve=rows,
                stopped="pruned",
                train_seconds=float(rows[-1]["seconds"]),
                examples=int(rows[-1]["examples"]),
            )
        else:
            state, value = TrialState.FAIL, None
            error = result.error or "stopped before its first epoch ended"
            attrs["error"] = f"{type(error).__name__}: {str(error)[:500]}"
        trial = optuna.trial.create_trial(
            state=state,
            value=value,
            params=params,
            distributions={k: dists[k] for k in params},
            intermediate_values=intermediate,
            user_attrs=attrs,
        )
        if "started" in last:  # when the trial ran, not when it was recorded
            trial.datetime_start = datetime.fromtimestamp(last["started"])
            trial.datetime_complete = datetime.fromtimestamp(
                last.get("finished", last.get("timestamp", last["started"]))
            )
        return trial
