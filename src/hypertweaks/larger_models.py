"""Which backbone a study tunes when the user offers larger ones: the largest whose default run
the timeout holds. Within one backbone, more budget buys little past a soup of the default's runs
(bench/README.md, issue 31); a larger encoder buys more (all-mpnet-base-v2 at 1x scored 2.4 test
points above MiniLM at 1x on six text sets, 6-0, for six to nine times its compute). A larger
encoder whose whole default run the timeout does not hold may fit with its lowest layers frozen:
their output is computed once (tasks/text.py) and only the layers above train. The choice is made
once, when the study starts, its time paid from the timeout, and kept in RUN_DIR/backbone.json, so
a resumed study (or another worker of it) goes on with the same backbone."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hypertweaks import atomic
from hypertweaks.config import Experiment
from hypertweaks.fingerprint import model_key
from hypertweaks.kinds import kind_of
from hypertweaks.space import Recipe
from hypertweaks.tasks import make_task
from hypertweaks.train import release_memory, seconds_per_example, seconds_per_forward_example

WARMUP_STEPS = 2  # training steps that warm up (memory, kernels) before the timed ones
TIMED_STEPS = 4
CHOICE_FILE = "backbone.json"
# A larger encoder whose whole default run the timeout does not hold is tuned with its lowest
# layers frozen (their output computed once, tasks/text.py) if that run fits: at most this share
# of its layers frozen (bench/README.md, issue 31).
MOST_FROZEN_SHARE = 5 / 6


@dataclass(frozen=True)
class RunEstimate:
    """What one run of the default recipe costs on a backbone, from its timed training steps."""

    per_example: float  # seconds of a training step per example, every layer trained
    forward_per_example: float  # seconds of a forward pass per example (validation, features)
    train_rows: int
    validation_rows: int
    epochs: int
    layers: int

    def seconds(self, freeze_layers: int = 0) -> float:
        """The run's seconds with its lowest `freeze_layers` layers frozen: the steps and
        validations run only the layers above them (costs taken as even across layers), and one
        forward pass over every labelled row computes the probe's features and the frozen
        layers' output together."""
        above = (self.layers - freeze_layers) / self.layers
        forward = self.forward_per_example
        run = self.per_example * above * self.train_rows * self.epochs
        run += forward * above * self.validation_rows * self.epochs
        return run + forward * (self.train_rows + self.validation_rows)

    def fitting_freeze(self, timeout: float, may_freeze: bool = True) -> int | None:
        """The fewest frozen layers (0: none) whose run the timeout holds, at most
        MOST_FROZEN_SHARE of them (none unless `may_freeze`); None if none does."""
        most = math.floor(MOST_FROZEN_SHARE * self.layers) if may_freeze else 0
        return next((k for k in range(most + 1) if self.seconds(k) <= timeout), None)


def choose_backbone(
    exp: Experiment, device: torch.device, say: Callable[[str], None] = print
) -> tuple[Experiment, dict[str, Any]]:
    """The experiment to tune: `exp` itself, or a copy on the largest of its `larger_models`
    (listed smallest first) whose estimated default run the timeout holds, whole or with as few
    of its lowest layers frozen as fit (`choice["freeze_layers"]`, which the study's default
    recipe then freezes); and what was measured, for results.json. Without larger_models, `exp`
    and {}."""
    if not exp.larger_models:
        return exp, {}
    candidates = [exp.model, *exp.larger_models]
    chosen = None if exp.fresh else _chosen_before(exp, candidates)
    if chosen is not None:
        choice = {**chosen, "kept": "chosen when the study started (--fresh chooses again)"}
        say(f"backbone {choice['model']}: {choice['kept']}")
        return _tuned(exp, choice), choice
    estimates: dict[str, float] = {}
    model, frozen = exp.model, 0
    start = time.perf_counter()
    for candidate in reversed(exp.larger_models):
        estimate = estimate_default_run(_on(exp, candidate), device)
        seconds = estimate.seconds()
        estimates[candidate] = round(seconds, 1)
        # As the product's own 1x: a timeout of about one default run buys the head-only
        # candidate and that run (the gain in the module's docstring was measured so). The
        # estimates are paid from the timeout. Layers are frozen only where the user left
        # freeze_layers to hypertweaks.
        time_left = exp.timeout - (time.perf_counter() - start)
        depth = estimate.fitting_freeze(time_left, "freeze_layers" not in exp.space)
        say(
            f"backbone {candidate}: a default run takes about {seconds / 60:.3g} min; the "
            f"timeout ({exp.timeout / 60:.3g} min) {'holds' if depth == 0 else 'does not hold'} it"
            + (
                f"; it holds one with the lowest {depth} of {estimate.layers} layers frozen "
                f"(about {estimate.seconds(depth) / 60:.3g} min)"
                if depth
                else ""
            )
        )
        if depth is not None:
            model, frozen = candidate, depth
            break
    choice = {"model": model, "candidates": candidates, "estimated_seconds": estimates}
    choice["choosing_seconds"] = round(time.perf_counter() - start, 1)
    if frozen:
        choice["freeze_layers"] = frozen
        choice["estimated_seconds_frozen"] = round(estimate.seconds(frozen), 1)
    say(f"tuning {model}" + (f", its lowest {frozen} layers frozen by default" if frozen else ""))
    exp.run_dir.mkdir(parents=True, exist_ok=True)
    atomic.write_text(exp.run_dir / CHOICE_FILE, json.dumps(choice, indent=2))
    return _tuned(exp, choice), choice


def smoke_run_paid(
    exp: Experiment, choice: dict[str, Any] | None, seconds: float
) -> tuple[Experiment, dict[str, Any]] | None:
    """A larger encoder's smoke run computes the study's first forward pass (the probe's
    features and the frozen layers' output, kept for every trial), which its estimate priced:
    paid from the timeout, as the choice is (else the study ran a third past its budget at 3x,
    bench/README.md). The experiment with the timeout left, and the choice recording it; None for
    a study on the user's own model, whose smoke run stays outside its timeout."""
    if not choice or choice["model"] not in (choice.get("estimated_seconds") or {}):
        return None
    return _less_time(exp, seconds), {**choice, "smoke_seconds": round(seconds, 1)}


def _on(exp: Experiment, model: str) -> Experiment:
    """`exp` on this backbone, with no larger models left to choose (its best.yaml retrains it)."""
    return exp.model_copy(update={"model": model, "larger_models": []})


def _tuned(exp: Experiment, choice: dict[str, Any]) -> Experiment:
    """The study on the chosen backbone: its timeout less the time the choice took (the study's
    trials and the choice share the one budget, on resume too). A choice that took the whole
    timeout leaves a sliver: the study then runs its first trial only, never more than asked."""
    return _less_time(_on(exp, choice["model"]), choice.get("choosing_seconds") or 0.0)


def _less_time(exp: Experiment, seconds: float) -> Experiment:
    """`exp` with `seconds` paid from its timeout, never below a sliver (a timeout must be
    positive)."""
    return exp.model_copy(update={"timeout": max(exp.timeout - seconds, 1e-3)})


def _chosen_before(exp: Experiment, candidates: list[str]) -> dict[str, Any] | None:
    """The choice this study made when it started, if it is still one of the candidates: from
    RUN_DIR/backbone.json, or, for a worker that joins a study in a shared storage from another
    machine, the model the study's trials were started on."""
    path: Path = exp.run_dir / CHOICE_FILE
    try:
        choice = json.loads(path.read_text())
    except (OSError, ValueError):
        choice = None
    if isinstance(choice, dict) and choice.get("model") in candidates:
        return choice
    if exp.storage is None or exp.backend != "optuna":
        return None  # (the default SQLite file lives in RUN_DIR, beside backbone.json)
    stored, frozen = _stored_choice(exp)
    started_on = [m for m in candidates if model_key(m) == stored]
    if not started_on:
        return None
    choice = {"model": started_on[0], "candidates": candidates}
    return {**choice, "freeze_layers": frozen} if frozen else choice


def _stored_choice(exp: Experiment) -> tuple[str | None, int]:
    """The model in the stored fingerprint of the study `exp` names (None if it has none yet),
    and the layers its default recipe froze (0 if none, or it has not been queued yet)."""
    import optuna

    from hypertweaks.study import storage_url

    try:
        study = optuna.load_study(study_name=exp.name, storage=storage_url(exp))
    except KeyError:  # no such study yet
        return None, 0
    model = (study.user_attrs.get("experiment_fingerprint") or {}).get("model")
    trials = study.get_trials(deepcopy=False)
    defaults = [t for t in trials if t.user_attrs.get("tag") == "defaults"]
    return model, int(defaults[0].params.get("freeze_layers", 0)) if defaults else 0


def estimate_default_run(exp: Experiment, device: torch.device) -> RunEstimate:
    """What one run of the text default recipe costs on this backbone and device: its training
    steps and its forward passes timed on a few batches of real training rows (after
    WARMUP_STEPS that are not), to be scaled to every epoch of every row, with the forward passes
    of the probe and of each validation (RunEstimate.seconds). Both are timed: their ratio
    depends on the precision (train.autocast)."""
    task = make_task(exp, exp.run_dir / "cache")
    task.prepare()
    train, validation = task.splits.train, task.splits.validation
    recipe = Recipe(**kind_of(exp.task).default_recipe(task.pretrained_dropout, len(train)))
    order = np.random.default_rng(exp.seed).permutation(len(train))
    rows = train.subset(order[: recipe.batch_size * (WARMUP_STEPS + TIMED_STEPS)])
    warmup = min(WARMUP_STEPS, max(len(rows) // recipe.batch_size - 1, 0))  # (few rows)
    model, layers = task.build(recipe, probe=False)
    try:
        data = task.dataset(rows, True, recipe)
        # forward passes first: they leave the weights as they are
        forward = seconds_per_forward_example(task, model, data, device, recipe.batch_size, warmup)
        per_example = seconds_per_example(task, model, layers, recipe, data, device, warmup)
    finally:
        model = None
        release_memory(device)
    return RunEstimate(
        per_example, forward, len(train), len(validation), recipe.epochs, task.num_layers
    )


def describe_backbone(choice: dict[str, Any] | None) -> str | None:
    """One line for the user: which backbone was tuned, and why."""
    if not choice:
        return None
    model, estimates = choice["model"], choice.get("estimated_seconds") or {}
    if "kept" in choice:
        return f"backbone: {model}, {choice['kept']}"
    if model in estimates and choice.get("freeze_layers"):
        return (
            f"backbone: {model}, the largest offered whose default run the timeout holds with "
            f"its lowest {choice['freeze_layers']} layers frozen (whole, about "
            f"{estimates[model] / 60:.3g} min)"
        )
    if model in estimates:
        return (
            f"backbone: {model}, the largest offered whose default run (about "
            f"{estimates[model] / 60:.3g} min) the timeout holds"
        )
    return (
        f"backbone: {model}; the timeout holds none of the larger models' default runs ("
        + ", ".join(f"{m}: about {s / 60:.3g} min" for m, s in estimates.items())
        + ")"
    )


# Past about four default runs, a larger encoder (partly frozen) bought more than the soup of one
# encoder's runs: +0.9 points at 4x over MiniLM's 3x, 11-2 (bench/README.md, issue 31).
HINT_UNITS = 4.0


def larger_model_hint(exp: Experiment, ledger: dict[str, Any] | None) -> str | None:
    """A line for a text-classification study whose timeout held many default runs of one
    encoder and offered no larger one: that is where a larger encoder turns time into
    accuracy."""
    if exp.task != "text-classification" or exp.timeout is None or exp.larger_models:
        return None
    units = (ledger or {}).get("units")
    if units is None or units < HINT_UNITS:
        return None
    return (
        f"the timeout held {units:.3g} runs of the default recipe on {exp.model}; past a soup "
        "of a few runs, more time on one encoder buys little: offer a larger encoder with "
        "--larger-model (larger_models) and the timeout will tune it if its default run fits "
        "(whole, or with its lowest layers frozen)"
    )
