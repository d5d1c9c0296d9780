"""One trial, the same for every backend: train a recipe, keep its model if it is the best on
disk, and return a typed record of what happened. Backends (embedded Optuna, Ray) call
`run_trial` and store the record; results, report and display read it back."""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import torch
import yaml

from hypertweaks.checkpoints import BestCheckpoint
from hypertweaks.config import Experiment
from hypertweaks.data import Split, stratified_subset
from hypertweaks.space import Recipe
from hypertweaks.strategies import strategy_of
from hypertweaks.train import Diverged, EpochReport, evaluate, fit, release_memory

# Failures that belong to one recipe: the trial fails alone and the study goes on.
TRIAL_FAILURES = (Diverged, torch.OutOfMemoryError)


# The trial record's version: raised when a field is renamed or changes meaning. Records stored
# before it was kept read as version 0 (the same fields as version 1).
RECORD_VERSION = 1


@dataclass
class TrialRecord:
    """What a trial did: the one shape from the trial to results.json. Stored with the trial
    (Optuna user attributes; Ray reports it as JSON), and each row of results.json is this record
    plus what the study knows of the trial (number, state, timing)."""

    recipe: dict[str, Any]
    version: int = RECORD_VERSION
    seed: int | None = None
    tag: str = ""  # "defaults", or the name of the strategy's starting recipe
    value: float | None = None  # best validation value over its epochs
    curve: list[dict[str, Any]] = field(default_factory=list)  # one row per epoch
    examples: int = 0
    train_seconds: float | None = None
    best_epoch: int | None = None
    stopped: str | None = None  # completed | early_stopped | pruned | timeout | max_steps
    metrics: dict[str, float] | None = None  # validation metrics at the best epoch
    micro_batch: int | None = None
    test_metrics: dict[str, float] | None = None  # the defaults trial's, for comparison only
    error: str | None = None
    attempts: int = 1  # >1: retried after its worker died
    interrupted: bool = False

    def attrs(self) -> dict[str, Any]:
        """The fields worth storing (defaults left out, JSON-safe; recipe and version always)."""
        defaults = TrialRecord(recipe={})
        return {
            f.name: getattr(self, f.name)
            for f in fields(self)
            if f.name in ("recipe", "version") or getattr(self, f.name) != getattr(defaults, f.name)
        }

    @classmethod
    def from_attrs(cls, attrs: dict[str, Any], params: dict[str, Any] | None = None) -> TrialRecord:
        """The record stored as `attrs`; a trial's Optuna params stand in for a missing recipe."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in attrs.items() if k in known}
        values.setdefault("recipe", dict(params or {}))
        values.setdefault("version", 0)
        if values["version"] > RECORD_VERSION:
            raise ValueError(
                f"this trial was recorded by a newer hypertweaks (trial record version "
                f"{values['version']}, this one reads up to {RECORD_VERSION}): upgrade hypertweaks"
            )
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.as_dict())


@dataclass
class StudyContext:
    """What a backend needs from the prepared study: set up once by the stage runner."""

    exp: Experiment
    task: Any
    space: dict[str, Any]  # the knobs, resolved for this model
    defaults: dict[str, Any]  # the task's recommended recipe
    device: torch.device
    display: Any  # hypertweaks.display.LogDisplay
    best: BestCheckpoint

    @property
    def run_dir(self) -> Path:
        return self.exp.run_dir


def study_checkpoint(exp: Experiment, task) -> BestCheckpoint:
    """The study's best model on disk, kept by the strategy's selector (by default the defaults
    trial yields only to a trial that beats it by more than the validation noise)."""
    selector = strategy_of(exp).make_selector(
        exp.direction, exp.metric, len(task.splits.validation)
    )
    return BestCheckpoint(exp.run_dir, exp.direction, selector)


def fit_trial(
    exp: Experiment,
    task,
    recipe: Recipe,
    device,
    seed: int,
    on_epoch=None,
    *,
    splits: tuple[Split, Split] | None = None,
    max_steps: int | None = None,
):
    """One trial's model, trained on the task's train split and scored on its validation split
    (or on `splits`, a subset of them: the smoke run): the same for every backend."""
    train, validation = splits or (task.splits.train, task.splits.validation)
    torch.manual_seed(seed)  # the new head's initial weights belong to the trial's seed
    model, layers = task.build(recipe)
    result = fit(
        task,
        model,
        layers,
        recipe,
        task.dataset(train, True, recipe),
        task.dataset(validation, False, recipe),
        metric=exp.metric,
        direction=exp.direction,
        patience=exp.patience,
        device=device,
        seed=seed,
        on_epoch=on_epoch,
        max_steps=max_steps,
    )
    return model, result


SMOKE_EXAMPLES = 32  # per split: every class present, a few batches
SMOKE_STEPS = 3


def smoke_trial(exp: Experiment, task, defaults: dict[str, Any], device: torch.device) -> None:
    """The smoke run: the default recipe as a trial on a tiny subset, for a few optimisation
    steps, and its model saved and loaded back. Any data, model or config error surfaces here in
    seconds, not after the first real trial."""
    subsets = tuple(
        split.subset(stratified_subset(split.labels, SMOKE_EXAMPLES, exp.seed))
        for split in (task.splits.train, task.splits.validation)
    )
    recipe = Recipe(**{**defaults, "batch_size": 8, "epochs": 1})
    model = None
    try:
        model, _ = fit_trial(
            exp, task, recipe, device, exp.seed, splits=subsets, max_steps=SMOKE_STEPS
        )
        with tempfile.TemporaryDirectory(prefix="smoke-", dir=exp.run_dir) as folder:
            task.save(model, Path(folder))
            task.load(Path(folder))
    finally:
        model = None
        release_memory(device)


def run_trial(
    exp: Experiment,
    task,
    recipe: Recipe,
    *,
    number: int,
    seed: int,
    device: torch.device,
    best: BestCheckpoint,
    tag: str = "",
    on_epoch: Callable[[EpochReport], bool] | None = None,
) -> TrialRecord:
    """Train the recipe; unless it was pruned, offer its model as the study's best (and score
    the defaults trial on test, the reference the best recipe is compared with; never used to
    choose). Frees the model's memory before returning. Raises TRIAL_FAILURES."""
    record = TrialRecord(recipe=recipe.as_dict(), seed=seed, tag=tag)
    model = None
    try:
        model, result = fit_trial(exp, task, recipe, device, seed, on_epoch)
        record.value = result.best_value
        record.curve, record.examples = result.curve, result.examples
        record.train_seconds, record.best_epoch = result.seconds, result.best_epoch
        record.stopped, record.metrics = result.stopped, result.best_metrics
        record.micro_batch = result.micro_batch
        if result.stopped == "pruned":
            return record
        if tag == "defaults" and task.splits.test is not None:
            test = task.dataset(task.splits.test, False)
            record.test_metrics = evaluate(task, model.to(device), test, device)

        def write(folder: Path) -> None:
            write_model(exp, task, model, folder, number, recipe, result)

        if tag in strategy_of(exp).soup_tags(exp):
            save_member(exp.run_dir, number, write)  # the final model's soup averages it
        best.offer(number, result.best_value, write, tag=tag)
        return record
    finally:
        model = None  # the last reference: its memory goes back before the next trial
        release_memory(device)


def members_dir(run_dir: Path) -> Path:
    """Where the recommended recipe's runs keep their models for the soup (a study output:
    --fresh deletes it with the checkpoints)."""
    return run_dir / "checkpoints" / "members"


def save_member(run_dir: Path, number: int, write: Callable[[Path], None]) -> None:
    """Trial `number`'s model as a soup member, written whole before it appears under its name
    (a retried trial replaces its earlier copy)."""
    target = members_dir(run_dir) / f"trial-{number}"
    partial = target.with_name(f".partial-{number}-{os.getpid()}")
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    write(partial)
    shutil.rmtree(target, ignore_errors=True)
    os.replace(partial, target)


def write_model(exp: Experiment, task, model, folder: Path, number: int, recipe, result) -> None:
    """The model, its label mapping, and best.yaml: the experiment with this recipe fixed."""
    task.save(model, folder)
    header = (
        f"# best recipe of study {exp.name!r}: trial {number}, "
        f"val {exp.metric} {result.best_value:.4f} at epoch {result.best_epoch}\n"
    )
    # its trial 0 is this trial, seed included
    write_refit_yaml(exp, folder, recipe.as_dict(), header, trial_seed=exp.seed_of(number))


def write_refit_yaml(
    exp: Experiment, folder: Path, recipe: dict[str, Any], header: str, **fixed: Any
) -> None:
    """best.yaml: the experiment as one trial of `recipe` (plus `fixed` settings)."""
    refit = exp.model_dump(mode="json")
    refit.update(
        space=recipe,
        trials=1,
        timeout=None,
        larger_models=[],  # the backbone this study tuned
        defaults_first=False,
        final_model="kept",
        name=f"{exp.name}-refit",
        storage=None,
        backend="optuna",
        **fixed,
    )
    (folder / "best.yaml").write_text(header + yaml.safe_dump(refit, sort_keys=False))
