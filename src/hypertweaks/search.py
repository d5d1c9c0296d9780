"""The study: storage, sampler, pruner, the three stages (smoke, defaults, search), budget,
resume, and the best model on disk. Knows nothing of how a model trains beyond `train.fit`."""

from __future__ import annotations

import gc
import json
import logging
import os
import random
import tempfile
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import TrialState

from hypertweaks.checkpoints import BestCheckpoint
from hypertweaks.config import ConfigError, Experiment, make_experiment
from hypertweaks.data import stratified_subset
from hypertweaks.display import LiveDisplay, LogDisplay
from hypertweaks.recipes import default_recipe, default_space
from hypertweaks.space import Recipe, fit_into, max_epochs, resolve_space, suggest
from hypertweaks.tasks import make_task
from hypertweaks.train import Diverged, evaluate, fit, resolve_device

log = logging.getLogger("hypertweaks")
# Failures that belong to one recipe: the trial fails alone and the study goes on.
TRIAL_FAILURES = (Diverged, torch.OutOfMemoryError)


@dataclass
class Result:
    best_params: dict[str, Any]
    best_value: float
    metric: str
    best_model_dir: Path
    test_metrics: dict[str, float] | None
    default_value: float | None = None
    default_test_metrics: dict[str, float] | None = None
    trials: int = 0
    seconds: float = 0.0
    results_path: Path | None = None
    notes: list[str] = field(default_factory=list)


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
    tables; the losers retry."""
    from sqlalchemy.exc import IntegrityError, OperationalError

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
        except (IntegrityError, OperationalError):
            if attempt == attempts - 1:
                raise
            time.sleep(0.5 + random.random())
    raise AssertionError("unreachable")


def open_study(exp: Experiment, num_epochs: int) -> optuna.Study:
    trials = exp.trials or 20
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        storage = _connect(exp)
        sampler = optuna.samplers.TPESampler(
            seed=exp.seed,
            n_startup_trials=max(2, min(10, trials // 4)),
            multivariate=True,
            constant_liar=True,
        )
    pruners = {
        "hyperband": lambda: optuna.pruners.HyperbandPruner(
            min_resource=1, max_resource=num_epochs
        ),
        "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        "none": lambda: optuna.pruners.NopPruner(),
    }
    return optuna.create_study(
        study_name=exp.name,
        storage=storage,
        load_if_exists=True,
        direction=exp.direction,
        sampler=sampler,
        pruner=pruners[exp.pruner](),
    )


def _same_experiment(study: optuna.Study, exp: Experiment) -> None:
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


def _fail_stale_trials(study: optuna.Study) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        optuna.storages.fail_stale_trials(study)


def _enqueue_interrupted(study: optuna.Study) -> None:
    """A trial stopped by Ctrl-C (marked failed by Optuna) is tried again, once."""
    trials = study.get_trials(deepcopy=False)
    retried = {t.user_attrs.get("retry_of") for t in trials}
    for trial in trials:
        if trial.user_attrs.get("interrupted") and trial.number not in retried:
            study.enqueue_trial(
                trial.params,
                user_attrs={
                    "retry_of": trial.number,
                    **({"tag": trial.user_attrs["tag"]} if "tag" in trial.user_attrs else {}),
                },
            )


class Search:
    """One study from a validated experiment."""

    def __init__(self, exp: Experiment, display: LogDisplay):
        self.exp, self.display = exp, display
        self.run_dir = exp.run_dir
        self.device = resolve_device(exp.device)
        self.task = make_task(exp, self.run_dir / "cache")
        self.best = BestCheckpoint(self.run_dir, exp.direction)

    def prepare(self) -> None:
        """Everything that can fail on bad input, before any training."""
        self.task.prepare()
        try:
            self.space = resolve_space(
                default_space(self.exp.task, self.exp.space), self.task.num_layers
            )
        except ValueError as error:
            raise ConfigError(f"invalid experiment:\n  space: {error}") from None
        self.defaults = default_recipe(self.exp.task, self.task.pretrained_dropout)
        if self.device.type == "cpu":
            torch.set_num_threads(os.cpu_count() or 1)
        splits = self.task.splits
        self.display.message(
            f"{self.exp.task}: {len(splits.classes)} classes, train {len(splits.train)}, "
            f"validation {len(splits.validation)}, test {len(splits.test or [])}; "
            f"model {self.exp.model} ({self.task.num_layers} layers) on {self.device}"
        )
        for note in splits.notes:
            self.display.message(f"  {note}")

    def smoke(self) -> None:
        """A few optimisation steps and a save/load on a tiny subset: any data, model or config
        error surfaces here in seconds, not after the first real trial."""
        start = time.perf_counter()
        splits, task = self.task.splits, self.task
        train = splits.train.subset(stratified_subset(splits.train.labels, 32, self.exp.seed))
        val = splits.validation.subset(
            stratified_subset(splits.validation.labels, 32, self.exp.seed)
        )
        recipe = Recipe(**{**self.defaults, "batch_size": 8, "epochs": 1})
        model, layers = task.build(recipe)
        fit(
            task,
            model,
            layers,
            recipe,
            task.dataset(train, True, recipe),
            task.dataset(val, False, recipe),
            metric=self.exp.metric,
            direction=self.exp.direction,
            device=self.device,
            seed=self.exp.seed,
            max_steps=3,
        )
        with tempfile.TemporaryDirectory(prefix="smoke-", dir=self.run_dir) as smoke_dir:
            task.save(model, Path(smoke_dir))
            task.load(Path(smoke_dir))
        _free(model)
        self.display.message(f"smoke run passed in {time.perf_counter() - start:.1f}s")

    def objective(self, trial: optuna.Trial) -> float:
        exp, task = self.exp, self.task
        if self._budget_spent(trial.study, before=trial.number):
            # Another worker took the last trial of the budget while this one was being created.
            trial.set_user_attr("surplus", True)
            trial.study.stop()
            raise optuna.TrialPruned("the study's budget is spent")
        recipe = suggest(trial, self.space)
        seed = exp.seed + trial.number
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("recipe", recipe.as_dict())
        self.display.trial_started(trial.number, recipe.as_dict(), trial.user_attrs.get("tag", ""))

        def on_epoch(report) -> bool:
            trial.report(report.metrics[exp.metric], report.epoch)
            self.display.epoch(trial.number, report.as_dict())
            # pruning after the last epoch would save nothing and throw the trial away
            return report.epoch < recipe.epochs and trial.should_prune()

        model = None
        try:
            model, layers = task.build(recipe)
            result = fit(
                task,
                model,
                layers,
                recipe,
                task.dataset(task.splits.train, True, recipe),
                task.dataset(task.splits.validation, False, recipe),
                metric=exp.metric,
                direction=exp.direction,
                patience=exp.patience,
                device=self.device,
                seed=seed,
                on_epoch=on_epoch,
            )
            for key, value in (
                ("curve", result.curve),
                ("examples", result.examples),
                ("train_seconds", result.seconds),
                ("best_epoch", result.best_epoch),
                ("stopped", result.stopped),
                ("metrics", result.best_metrics),
                ("micro_batch", result.micro_batch),
            ):
                trial.set_user_attr(key, value)
            if result.stopped == "pruned":
                raise optuna.TrialPruned(f"pruned at epoch {len(result.curve)}")
            if trial.user_attrs.get("tag") == "defaults" and task.splits.test is not None:
                # The reference the best recipe is compared with; never used to choose.
                trial.set_user_attr("test_metrics", self._test(model))
            self.best.offer(
                trial.number,
                result.best_value,
                lambda folder: self._write_model(model, folder, trial.number, recipe, result),
            )
            return result.best_value
        except TRIAL_FAILURES as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise
        finally:
            _free(model)

    def _write_model(self, model, folder: Path, number: int, recipe: Recipe, result) -> None:
        """The model, its label mapping, and best.yaml: the experiment with this recipe fixed."""
        self.task.save(model, folder)
        refit = self.exp.model_dump(mode="json")
        refit.update(
            space=recipe.as_dict(),
            trials=1,
            timeout=None,
            defaults_first=False,
            name=f"{self.exp.name}-refit",
            storage=None,
        )
        header = (
            f"# best recipe of study {self.exp.name!r}: trial {number}, "
            f"val {self.exp.metric} {result.best_value:.4f} at epoch {result.best_epoch}\n"
        )
        (folder / "best.yaml").write_text(header + yaml.safe_dump(refit, sort_keys=False))

    def _test(self, model) -> dict[str, float]:
        test = self.task.dataset(self.task.splits.test, False)
        return evaluate(self.task, model.to(self.device), test, self.device)

    def run(self) -> Result:
        exp = self.exp
        start = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        study = open_study(exp, max_epochs(self.space))
        _same_experiment(study, exp)
        finished = [t for t in study.get_trials(deepcopy=False) if counted(t)]
        if finished:
            self.display.message(f"resuming study {exp.name!r}: {len(finished)} trials done")
        if exp.smoke:
            self.smoke()
        if exp.defaults_first and not study.get_trials(deepcopy=False):
            study.enqueue_trial(  # skip_if_exists: workers that start together enqueue it once
                fit_into(self.space, self.defaults), {"tag": "defaults"}, skip_if_exists=True
            )
        _enqueue_interrupted(study)
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        self.best.remove_orphans(running)

        if not self._budget_spent(study):
            time_left = None
            if exp.timeout is not None:
                time_left = exp.timeout - sum(map(trial_seconds, finished))
            study.optimize(
                self.objective,
                timeout=time_left,
                catch=TRIAL_FAILURES,
                callbacks=[self._after_trial],
                gc_after_trial=True,
            )
        result = self.finish(study)
        result.seconds = time.perf_counter() - start
        return result

    def _budget_spent(self, study: optuna.Study, before: int | None = None) -> bool:
        """The budget is shared by every worker of the study: trials counted, plus trials that
        other workers are running (they will count), against trials; trial time against
        timeout."""
        _fail_stale_trials(study)  # a dead worker's trial stops counting (and is retried)
        trials = study.get_trials(deepcopy=False)
        if before is not None:
            trials = [t for t in trials if t.number < before]
        done = [t for t in trials if counted(t)]
        running = [t for t in trials if t.state == TrialState.RUNNING]
        if self.exp.trials is not None and len(done) + len(running) >= self.exp.trials:
            return True
        used = sum(map(trial_seconds, done))
        return self.exp.timeout is not None and used >= self.exp.timeout

    def _after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not trial.user_attrs.get("surplus"):
            self.display.trial_finished(trial_row(trial))
        write_results(self.run_dir / "results.json", study, exp=self.exp, task=self.task)
        if self._budget_spent(study):
            study.stop()

    def finish(self, study: optuna.Study) -> Result:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            raise RuntimeError(
                f"no trial of study {self.exp.name!r} completed; see the errors in "
                f"{self.run_dir / 'results.json'}"
            )
        saved = self.best.meta()  # the model on disk decides, should a worker have died after
        best = study.trials[saved["trial"]] if saved else study.best_trial  # saving it
        best_dir = self.run_dir / "best"
        test_metrics = None
        if self.task.splits.test is not None:
            model = self.task.load(best_dir)
            test_metrics = self._test(model)
            _free(model)
        defaults = next((t for t in complete if t.user_attrs.get("tag") == "defaults"), None)
        path = self.run_dir / "results.json"
        summary = {
            "best_trial": best.number,
            "best_value": best.value,
            "test_metrics": test_metrics,
        }
        write_results(path, study, exp=self.exp, task=self.task, summary=summary)
        return Result(
            best_params=best.user_attrs["recipe"],
            best_value=best.value,
            metric=self.exp.metric,
            best_model_dir=best_dir,
            test_metrics=test_metrics,
            default_value=defaults.value if defaults else None,
            default_test_metrics=defaults.user_attrs.get("test_metrics") if defaults else None,
            trials=sum(1 for t in study.get_trials(deepcopy=False) if counted(t)),
            results_path=path,
            notes=self.task.splits.notes,
        )


def _free(model) -> None:
    """Give back the trial's memory: the peers' most reported failure is running out of GPU
    memory a few trials in."""
    del model
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "tag": attrs.get("tag", ""),
        "value": trial.value if trial.state == TrialState.COMPLETE else None,
        "last_value": next(reversed(trial.intermediate_values.values()), None),
        "recipe": attrs.get("recipe", trial.params),
        "best_epoch": attrs.get("best_epoch"),
        "stopped": attrs.get("stopped"),
        "curve": attrs.get("curve", []),
        "seconds": trial_seconds(trial),
        "examples": attrs.get("examples", 0),
        "seed": attrs.get("seed"),
        "error": attrs.get("error"),
        "interrupted": attrs.get("interrupted", False),
    }


def write_results(
    path: Path, study: optuna.Study, *, exp: Experiment, task, summary: dict[str, Any] | None = None
) -> None:
    """Every trial's recipe, curve, state and cost; rewritten atomically after each trial."""
    previous = json.loads(path.read_text()) if path.exists() else {}
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    data = {
        "study": exp.name,
        "task": exp.task,
        "model": exp.model,
        "metric": exp.metric,
        "direction": exp.direction,
        "storage": redact(storage_url(exp)),
        "classes": [str(c) for c in task.splits.classes],
        "data": {
            "train": len(task.splits.train),
            "validation": len(task.splits.validation),
            "test": len(task.splits.test) if task.splits.test else 0,
            "notes": task.splits.notes,
        },
        "budget": {
            "trials": exp.trials,
            "timeout_seconds": exp.timeout,
            "used_trials": sum(1 for t in study.get_trials(deepcopy=False) if counted(t)),
            "used_seconds": round(sum(r["seconds"] for r in rows), 1),
            "used_examples": sum(r["examples"] for r in rows),
        },
        **{k: previous.get(k) for k in ("best_trial", "best_value", "test_metrics")},
        **(summary or {}),
        "trials": rows,
    }
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)


def tune(config: Experiment | dict[str, Any], display: LogDisplay | None = None) -> Result:
    """Run (or resume) the study the experiment describes and return its best result."""
    exp = make_experiment(config)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if display is None:
        display = LogDisplay(exp.metric) if exp.quiet else LiveDisplay(exp.metric)
    with display:
        return Search(exp, display).run()
