"""The final-model stage's refit (`final_model: refit`, the images' default): the kept trial's
recipe trained once more on every labelled row, train and validation, at the kept trial's seed,
for the recipe's whole schedule. Its validation rows trained it, so it has no validation score
of its own; the kept trial's value is the estimate. It must at least match that value on the
validation rows it trained on, else the kept trial's model stays.

Why the whole schedule, not the epochs the trial chose: 60-100 validation images choose an
epoch badly. A refit stopped after the chosen epoch lost where the choice was early (ELPV seed
3, after epoch 1 of 5: -35 macro-F1); over 16 image pairs the whole schedule gained +5.3
macro-F1 on the default against +3.2 for the checked stop at the chosen epoch
(bench/results/IMAGES.md, `python -m bench.images --refit-curve`).

It runs inside the budget: with a timeout, the search leaves the time the refit of the model on
disk needs (`refit_reserve`), and the refit starts only if the time left holds it. Resumable: the
refit of the same trial is never made twice, and the swap only happens if the model on disk is
still the one it refits (another worker may have changed it)."""

from __future__ import annotations

import copy
import dataclasses
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hypertweaks.checkpoints import BestCheckpoint
from hypertweaks.config import Experiment
from hypertweaks.data import Split
from hypertweaks.objective import is_better
from hypertweaks.space import Recipe
from hypertweaks.strategies import strategy_of
from hypertweaks.strategies.finals import epochs
from hypertweaks.study import seconds_used, time_needed, trial_seconds
from hypertweaks.train import evaluate, fit, release_memory
from hypertweaks.trial import write_refit_yaml

REJECTED = "refit_rejected"  # the study's record of a refit that failed its check


def refits(exp: Experiment) -> bool:
    return strategy_of(exp).make_final(exp.task).refit


def row_growth(task) -> float:
    """How many times the training rows the refit trains on."""
    train, validation = task.splits.train, task.splits.validation
    return (len(train) + len(validation)) / max(len(train), 1)


def refit_epochs(trial) -> int:
    """The epochs a refit of `trial` trains: its recipe's whole schedule."""
    return int(trial.user_attrs["recipe"]["epochs"])


def refit_need(trial, growth: float, whole: bool = False) -> float | None:
    """What the time left must hold to refit `trial` (study.time_needed: all but its last
    epoch; `whole`: every epoch): its recipe's epochs at its own pace on `growth` times its
    rows. None while the trial has no finished epoch."""
    curve = trial.user_attrs.get("curve") or []
    if not curve:
        return None
    epoch = trial_seconds(trial) / len(curve) * growth
    epochs = refit_epochs(trial)
    return epoch * epochs if whole else time_needed(epoch, epochs)


def refit_reserve(exp: Experiment, task, trials: list, best: BestCheckpoint) -> float:
    """The seconds the search leaves for the refit of the model on disk: the whole refit, so
    that the search trial which ends up to an epoch past its share leaves what the refit needs
    to start (0 when the study does not refit, has no timeout, or keeps no model yet)."""
    if exp.timeout is None or not refits(exp) or (kept := best.meta()) is None:
        return 0.0
    trial = next((t for t in trials if t.number == kept["trial"]), None)
    if trial is None:
        return 0.0
    return refit_need(trial, row_growth(task), whole=True) or 0.0


def every_labelled_row(task):
    """The task with train + validation as its training rows (validation as it was: the linear
    probe that LP-FT starts from stops on it, as in the measured refit)."""
    train, validation = task.splits.train, task.splits.validation
    rows = Split(
        train.inputs + validation.inputs,
        np.concatenate([train.labels, validation.labels]),
        "train+validation",  # its own cache key
    )
    task.cache_joined(rows, [train, validation])  # the copy shares the task's caches
    refit = copy.copy(task)
    refit.splits = dataclasses.replace(task.splits, train=rows)
    return refit


def refit_stage(study, exp: Experiment, task, best: BestCheckpoint, device) -> dict | None:
    """Refit the kept trial's recipe on every labelled row and make that model the study's best,
    if the time left holds it. Returns what was done (None: the study does not refit)."""
    current = best.meta()
    if not refits(exp) or current is None:
        return None
    if current.get("refit"):
        return current["refit"]  # made before (a resumed study, another worker)
    if (rejected := study.user_attrs.get(REJECTED)) and rejected["trial"] == current["trial"]:
        return rejected
    trial = study.trials[current["trial"]]
    summary: dict[str, Any] = {
        "trial": trial.number,
        "epochs": refit_epochs(trial),
        "rows": len(task.splits.train) + len(task.splits.validation),
        "estimate": current["value"],  # the kept trial's validation value
        "kept": False,
    }
    need = refit_need(trial, row_growth(task))
    if need is None:
        summary["skipped"] = "the kept trial recorded no finished epoch"
        return summary
    if exp.timeout is not None:
        left = exp.timeout - seconds_used(study.get_trials(deepcopy=False))
        if need > left:
            summary["skipped"] = (
                f"{max(left, 0):.0f}s of the timeout left, less than the {need:.0f}s the refit "
                "needs: run the same command with a larger --timeout to refit"
            )
            return summary
    start = time.perf_counter()
    recipe = Recipe(**trial.user_attrs["recipe"])
    seed = trial.user_attrs.get("seed", exp.seed_of(trial.number))
    rows = every_labelled_row(task)
    torch.manual_seed(seed)  # as the kept trial: the head's initial weights, the probe
    model, layers = rows.build(recipe)
    try:
        fit(rows, model, layers, recipe, rows.dataset(rows.splits.train, True, recipe), None,
            metric=exp.metric, direction=exp.direction, device=device, seed=seed)  # fmt: skip
        validation = task.dataset(task.splits.validation, False)
        trained_on = float(evaluate(task, model, validation, device)[exp.metric])
        summary.update(seconds=round(time.perf_counter() - start, 3), trained_on=trained_on)
        if is_better(current["value"], trained_on, exp.direction):
            summary["skipped"] = (
                f"the refit scored {trained_on:.4f} {exp.metric} on the validation rows it "
                f"trained on, below its trial's {current['value']:.4f} on them unseen: it did not "
                "learn what the trial learned; the trial's model stays"
            )
            study.set_user_attr(REJECTED, summary)  # a resumed study does not refit it again
            return summary
        summary["kept"] = True

        def write(folder: Path) -> None:
            task.save(model, folder)
            write_refit_yaml(exp, folder, recipe.as_dict(), refit_header(exp, summary))

        # the kept trial's number, value and tag stay: a resumed search compares with them
        if not best.replace(f"refit-{trial.number}", {**current, "refit": summary}, write, current):
            now = best.meta() or {}  # another worker changed the best model meanwhile
            summary = now.get("refit") or {**summary, "kept": False, "skipped": "the best changed"}
        return summary
    finally:
        model = None  # the last reference: its memory goes back
        release_memory(device)


def refit_header(exp: Experiment, summary: dict[str, Any]) -> str:
    return (
        f"# final model of study {exp.name!r}: trial {summary['trial']}'s recipe refit on "
        f"train + validation ({summary['rows']} rows) for {epochs(summary['epochs'])}; "
        f"no validation score (its rows trained it), trial {summary['trial']}'s val "
        f"{exp.metric} {summary['estimate']:.4f} is the estimate.\n"
        "# This recipe, run alone, trains that trial on the training rows, not the refit.\n"
    )
