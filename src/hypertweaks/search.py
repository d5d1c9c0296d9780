"""The study: storage, sampler, pruner, the three stages (smoke, defaults, search), budget,
resume, and the best model on disk. Knows nothing of how a model trains beyond `train.fit`."""

from __future__ import annotations

import logging
import os
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
import yaml
from optuna.trial import TrialState

from hypertweaks.checkpoints import BestCheckpoint
from hypertweaks.checks import preflight
from hypertweaks.config import ConfigError, Experiment, make_experiment
from hypertweaks.data import stratified_subset
from hypertweaks.display import LiveDisplay, LogDisplay
from hypertweaks.recipes import default_recipe, default_space, task_knobs
from hypertweaks.report import render as render_report
from hypertweaks.results import trial_row, write_results
from hypertweaks.space import Recipe, fit_into, max_epochs, resolve_space, suggest
from hypertweaks.study import (
    claim,
    counted,
    enqueue_interrupted,
    fail_stale_trials,
    no_trial_completed,
    open_study,
    same_experiment,
    trial_seconds,
)
from hypertweaks.tasks import make_task
from hypertweaks.train import Diverged, evaluate, fit, release_memory, resolve_device

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
    report_path: Path | None = None


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
                default_space(self.exp.task, self.exp.space),
                self.task.num_layers,
                task_knobs(self.exp.task),
            )
        except ValueError as error:
            raise ConfigError(f"invalid experiment:\n  space: {error}") from None
        self.defaults = default_recipe(self.exp.task, self.task.pretrained_dropout)
        if self.device.type == "cpu" and "OMP_NUM_THREADS" not in os.environ:
            torch.set_num_threads(len(os.sched_getaffinity(0)))  # every core this process may use
        splits = self.task.splits
        classes = f"{len(splits.classes)} classes, " if len(splits.classes) > 1 else ""
        self.display.message(
            f"{self.exp.task}: {classes}train {len(splits.train)}, "
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
        torch.manual_seed(self.exp.seed)
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
        del model
        release_memory(self.device)
        self.display.message(f"smoke run passed in {time.perf_counter() - start:.1f}s")

    def objective(self, trial: optuna.Trial) -> float:
        """One trial; records why it failed, or that Ctrl-C stopped it (so it is retried)."""
        claim(trial)  # which process runs it: a worker on this host can tell when it died
        try:
            return self._run_trial(trial)
        except TRIAL_FAILURES as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise

    def _run_trial(self, trial: optuna.Trial) -> float:
        exp, task = self.exp, self.task
        if self._budget_spent(trial.study, before=trial.number):
            # Another worker took the last trial of the budget while this one was being created.
            trial.set_user_attr("surplus", True)
            trial.study.stop()
            raise optuna.TrialPruned("the study's budget is spent")
        recipe = suggest(trial, self.space)
        seed = exp.seed_of(trial.number)
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
            model, result = fit_trial(exp, task, recipe, self.device, seed, on_epoch)
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
                lambda folder: write_model(exp, task, model, folder, trial.number, recipe, result),
            )
            return result.best_value
        finally:
            model = None  # the last reference: its memory goes back before the next trial
            release_memory(self.device)

    def _test(self, model) -> dict[str, float]:
        test = self.task.dataset(self.task.splits.test, False)
        return evaluate(self.task, model.to(self.device), test, self.device)

    def run(self) -> Result:
        exp = self.exp
        start = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        study, created = open_study(exp, max_epochs(self.space))
        if created and exp.defaults_first:
            # Only the worker that created the study enqueues the defaults: workers that start
            # together would otherwise all see an empty study and each enqueue them.
            study.enqueue_trial(fit_into(self.space, self.defaults), {"tag": "defaults"})
        same_experiment(study, exp)
        finished = [t for t in study.get_trials(deepcopy=False) if counted(t)]
        if finished:
            self.display.message(f"resuming study {exp.name!r}: {len(finished)} trials done")
        if exp.smoke:
            self.smoke()
        enqueue_interrupted(study)
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
        result.report_path = render_report(self.run_dir, exp.storage)
        return result

    def _budget_spent(self, study: optuna.Study, before: int | None = None) -> bool:
        """The budget is shared by every worker of the study: trials counted, plus trials that
        other workers are running (they will count), against trials; trial time against
        timeout."""
        fail_stale_trials(study)  # a dead worker's trial stops counting (and is retried)
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
            path = self.run_dir / "results.json"
            write_results(path, study, exp=self.exp, task=self.task)
            raise no_trial_completed(study, self.exp, path)
        # The model on disk decides, should a worker have died after saving it. Its trial may
        # still be running in another worker (models are saved before the trial reports its
        # value), so the value comes from the checkpoint.
        saved = self.best.meta()
        best = study.trials[saved["trial"]] if saved else study.best_trial
        best_value = saved["value"] if saved else best.value
        best_dir = self.run_dir / "best"
        test_metrics = None
        if self.task.splits.test is not None:
            model = self.task.load(best_dir)
            test_metrics = self._test(model)
            del model
            release_memory(self.device)
        defaults = next((t for t in complete if t.user_attrs.get("tag") == "defaults"), None)
        path = self.run_dir / "results.json"
        summary = {
            "best_trial": best.number,
            "best_value": best_value,
            "test_metrics": test_metrics,
        }
        write_results(path, study, exp=self.exp, task=self.task, summary=summary)
        return Result(
            best_params=best.user_attrs["recipe"],
            best_value=best_value,
            metric=self.exp.metric,
            best_model_dir=best_dir,
            test_metrics=test_metrics,
            default_value=defaults.value if defaults else None,
            default_test_metrics=defaults.user_attrs.get("test_metrics") if defaults else None,
            trials=sum(1 for t in study.get_trials(deepcopy=False) if counted(t)),
            results_path=path,
            notes=self.task.splits.notes,
        )


def fit_trial(exp: Experiment, task, recipe: Recipe, device, seed: int, on_epoch):
    """One trial's model, trained on the task's train split and scored on its validation split:
    the same for every backend."""
    torch.manual_seed(seed)  # the new head's initial weights belong to the trial's seed
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
        device=device,
        seed=seed,
        on_epoch=on_epoch,
    )
    return model, result


def write_model(exp: Experiment, task, model, folder: Path, number: int, recipe, result) -> None:
    """The model, its label mapping, and best.yaml: the experiment with this recipe fixed."""
    task.save(model, folder)
    refit = exp.model_dump(mode="json")
    refit.update(
        space=recipe.as_dict(),
        trials=1,
        timeout=None,
        defaults_first=False,
        name=f"{exp.name}-refit",
        trial_seed=exp.seed_of(number),  # its trial 0 is this trial, seed included
        storage=None,
        backend="optuna",
    )
    header = (
        f"# best recipe of study {exp.name!r}: trial {number}, "
        f"val {exp.metric} {result.best_value:.4f} at epoch {result.best_epoch}\n"
    )
    (folder / "best.yaml").write_text(header + yaml.safe_dump(refit, sort_keys=False))


def tune(config: Experiment | dict[str, Any], display: LogDisplay | None = None) -> Result:
    """Run (or resume) the study the experiment describes and return its best result."""
    exp = make_experiment(config)
    preflight(exp)  # runs folder, device, storage: before any data is read
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if display is None:
        display = LogDisplay(exp.metric) if exp.quiet else LiveDisplay(exp.metric)
    with display:
        if exp.backend == "ray":
            from hypertweaks.ray_backend import RaySearch

            return RaySearch(exp, display).run()
        return Search(exp, display).run()
