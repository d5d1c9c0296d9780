"""The stage runner: prepare (every check on the user's input, before any training), the smoke
run, the search on the experiment's backend, then the best model scored on test, results.json
and the report. Backends (backends/: embedded, ray_tune) run the trials; this module is the only
one that knows the stage order."""

from __future__ import annotations

import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import TrialState

from hypertweaks.backends import make_backend
from hypertweaks.checks import preflight
from hypertweaks.config import ConfigError, Experiment, check_run_dir_place, make_experiment
from hypertweaks.display import LiveDisplay, LogDisplay
from hypertweaks.kinds import kind_of
from hypertweaks.larger_models import choose_backbone, larger_model_hint, smoke_run_paid
from hypertweaks.ledger import budget_ledger
from hypertweaks.noise import within_noise
from hypertweaks.objective import is_better
from hypertweaks.refit import refit_stage
from hypertweaks.report import render as render_report
from hypertweaks.results import finished_rows, trial_row, write_results
from hypertweaks.soup import soup_stage
from hypertweaks.space import resolve_space
from hypertweaks.strategies.finals import describe_refit, describe_soup
from hypertweaks.strategies.selectors import trials_chosen_among
from hypertweaks.study import counted, no_trial_completed
from hypertweaks.tasks import make_task
from hypertweaks.train import evaluate, release_memory, resolve_device
from hypertweaks.trial import StudyContext, smoke_trial, study_checkpoint

log = logging.getLogger("hypertweaks")


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
    within_noise: dict[str, Any] | None = None  # trials validation cannot tell from the best
    defaults_kept: dict[str, Any] | None = None  # the defaults kept over a lead inside the noise
    stopped_early: str | None = None  # the timeout ended the search before its trials: why
    budget_bought: dict[str, Any] | None = None  # the kept model as the budget grew (ledger.py)
    final_model: dict[str, Any] | None = None  # the soup of the default's runs (soup.py)
    refit: dict[str, Any] | None = None  # the kept recipe refit on every labelled row (refit.py)
    backbone: dict[str, Any] | None = None  # the larger model chosen, or not (larger_models.py)


class Search:
    """One study from a validated experiment."""

    def __init__(self, exp: Experiment, display: LogDisplay, backbone: dict | None = None):
        self.exp, self.display = exp, display
        self.backbone = backbone or None  # larger_models: which backbone, and why
        self.run_dir = exp.run_dir
        self.device = resolve_device(exp.device)
        self.task = make_task(exp, self.run_dir / "cache")

    def prepare(self) -> None:
        """Everything that can fail on bad input, before any training."""
        self.task.prepare()
        self.best = study_checkpoint(self.exp, self.task)  # its noise margin needs the data
        kind, rows = kind_of(self.exp.task), len(self.task.splits.train)
        try:
            self.space = resolve_space(
                kind.default_space(self.exp.space, rows), self.task.num_layers, kind.knobs
            )
        except ValueError as error:
            raise ConfigError(f"invalid experiment:\n  space: {error}") from None
        self.defaults = kind.default_recipe(self.task.pretrained_dropout, rows)
        if frozen := (self.backbone or {}).get("freeze_layers"):
            self._freeze_by_default(frozen)
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

    def _freeze_by_default(self, frozen: int) -> None:
        """A larger model whose whole default run the timeout does not hold (larger_models.py):
        the default recipe freezes its lowest layers, and a range of freeze_layers reaches it."""
        self.defaults = {**self.defaults, "freeze_layers": frozen}
        self.task.default_frozen_depth = frozen  # computed with the features the probe needs
        spec = self.space.get("freeze_layers")
        if isinstance(spec, dict) and spec["high"] < frozen:
            self.space = {**self.space, "freeze_layers": {**spec, "high": frozen}}

    def smoke(self) -> float:
        """The smoke stage: a trial of the default recipe on a tiny subset (trial.smoke_trial).
        Its seconds."""
        start = time.perf_counter()
        smoke_trial(self.exp, self.task, self.defaults, self.device)
        seconds = time.perf_counter() - start
        self.display.message(f"smoke run passed in {seconds:.1f}s")
        return seconds

    def context(self) -> StudyContext:
        return StudyContext(
            exp=self.exp,
            task=self.task,
            space=self.space,
            defaults=self.defaults,
            device=self.device,
            display=self.display,
            best=self.best,
        )

    def run(self) -> Result:
        start = time.perf_counter()
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.prepare()
        ctx = self.context()
        backend = make_backend(ctx)
        backend.open()  # a changed or foreign study is refused before any training
        if self.exp.smoke:
            seconds = self.smoke()
            if paid := smoke_run_paid(self.exp, self.backbone, seconds):
                self.exp, self.backbone = paid
                ctx.exp = self.exp  # the backend reads the timeout left
        study = backend.optimize()
        result = self.finish(study)
        result.seconds = time.perf_counter() - start
        result.report_path = render_report(self.run_dir, self.exp.storage)
        return result

    def _test(self, model) -> dict[str, float]:
        test = self.task.dataset(self.task.splits.test, False)
        return evaluate(self.task, model.to(self.device), test, self.device)

    def finish(self, study: optuna.Study) -> Result:
        complete = study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if not complete:
            path = self.run_dir / "results.json"
            write_results(path, study, exp=self.exp, task=self.task)
            raise no_trial_completed(study, self.exp, path)
        soup = soup_stage(study, self.exp, self.task, self.best, self.device)
        if soup is not None:
            self.display.message(describe_soup(soup, self.exp.metric))
        refit = refit_stage(study, self.exp, self.task, self.best, self.device)
        if line := describe_refit(refit, self.exp.metric):
            self.display.message(line)
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
        done = sum(1 for t in study.get_trials(deepcopy=False) if counted(t))
        path = self.run_dir / "results.json"
        noise = within_noise(
            [trial_row(t) for t in complete],
            self.exp.metric,
            self.exp.direction,
            len(self.task.splits.validation),
        )
        rows = finished_rows(study)
        summary = {
            "best_trial": best.number,
            "best_value": best_value,
            "test_metrics": test_metrics,
            "within_noise": noise,  # the trials validation cannot tell apart from the best
            "defaults_kept": self._defaults_kept(best, complete),
            "stopped_early": stopped_early(self.exp, done),
            "budget_bought": budget_ledger(rows, self.best.selector, soup),
            "final_model": soup,  # the soup of the default recipe's runs, kept or not (soup.py)
            "refit": refit,  # the kept recipe on train + validation, or why not (refit.py)
        }
        if self.backbone:
            summary["backbone"] = self.backbone
        if not self.backbone and (hint := larger_model_hint(self.exp, summary["budget_bought"])):
            self.display.message(hint)
        write_results(path, study, exp=self.exp, task=self.task, summary=summary)
        return Result(
            best_params=best.user_attrs["recipe"],
            best_value=best_value,
            metric=self.exp.metric,
            best_model_dir=best_dir,
            test_metrics=test_metrics,
            default_value=defaults.value if defaults else None,
            default_test_metrics=defaults.user_attrs.get("test_metrics") if defaults else None,
            trials=done,
            results_path=path,
            notes=self.task.splits.notes,
            within_noise=noise,
            defaults_kept=summary["defaults_kept"],
            stopped_early=summary["stopped_early"],
            budget_bought=summary["budget_bought"],
            final_model=soup,
            refit=refit,
            backbone=self.backbone,
        )

    def _defaults_kept(self, best, complete) -> dict[str, Any] | None:
        """When the defaults trial is the best on disk although a trial led it on validation
        by less than the noise margin: which trial, by how much, and the margin."""
        saved = self.best.meta() or {}
        if best.user_attrs.get("tag") != "defaults" or best.value is None or saved.get("members"):
            return None  # (a soup on disk says what it was compared with itself)
        rival = best
        for trial in complete:
            if trial.value is not None and is_better(trial.value, rival.value, self.exp.direction):
                rival = trial
        if rival is best:
            return None
        among = trials_chosen_among(rival.user_attrs.get("tag") or "", rival.number)
        return {
            "trial": rival.number,
            "metric": self.exp.metric,
            "lead": round(abs(rival.value - best.value), 6),
            "margin": round(self.best.selector.margin(best.value, among), 6),
            "trials": among,  # the best of how many: the margin widens with them
        }


def stopped_early(exp: Experiment, done: int) -> str | None:
    """When the wall-clock budget ended the search after `done` of the trials asked for: said to
    the user wherever the result is shown, since fewer trials may be why tuning bought little."""
    if exp.timeout is None or exp.trials is None or done >= exp.trials:
        return None
    return (
        f"the timeout ({exp.timeout / 60:.3g} min) ended the search after {done} of {exp.trials} "
        "trials: run the same command with a larger --timeout to resume it"
    )


def tune(config: Experiment | dict[str, Any], display: LogDisplay | None = None) -> Result:
    """Run (or resume) the study the experiment describes and return its best result."""
    exp = make_experiment(config)
    check_run_dir_place(exp)  # not inside another study's best model (before it is created)
    preflight(exp)  # runs folder, device, storage: before any data is read
    if exp.backend == "ray":
        from hypertweaks.backends.ray_tune import check_ray_address, require_ray

        require_ray()
        check_ray_address(exp.ray_address)  # a cluster that does not answer: before any data
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if display is None:
        display = LogDisplay(exp.metric) if exp.quiet else LiveDisplay(exp.metric)
    with display:
        exp, backbone = choose_backbone(exp, resolve_device(exp.device), display.message)
        return Search(exp, display, backbone).run()
