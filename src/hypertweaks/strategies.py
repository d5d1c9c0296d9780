"""Search strategies, in one place: how a study starts (the recipes run first), the sampler that
proposes the rest, and the pruner (the fidelity schedule that stops weak trials early). The
experiment's allowed values (`sampler`, `pruner`, `start`) are this module's registry keys, and
the Ray backend maps each to its Ray counterpart here or refuses it by name.

A new strategy is one entry in SAMPLERS, PRUNERS or STARTS (and its Ray mapping or refusal)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from hypertweaks.config import Experiment


def startup_trials(exp: Experiment) -> int:
    """Random trials before TPE models the results: a quarter of the budget, 2 to 10."""
    return max(2, min(10, (exp.trials or 20) // 4))


def _tpe(exp: Experiment) -> optuna.samplers.BaseSampler:
    """TPE, multivariate, with a constant liar for trials running in parallel (many workers, or
    Ray's concurrent trials)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        return optuna.samplers.TPESampler(
            seed=exp.seed,
            n_startup_trials=startup_trials(exp),
            multivariate=True,
            constant_liar=True,
        )


def _random(exp: Experiment) -> optuna.samplers.BaseSampler:
    return optuna.samplers.RandomSampler(seed=exp.seed)


@dataclass(frozen=True)
class Pruner:
    optuna: Callable[[Experiment, int], optuna.pruners.BasePruner]  # (exp, max epochs)
    ray: Callable[[int], Any] | None  # max epochs -> a Ray Tune scheduler; None: no scheduler
    ray_note: str = ""  # said to the user when the Ray counterpart differs


def _asha(max_epochs: int):
    from ray.tune.schedulers import ASHAScheduler

    return ASHAScheduler(time_attr="epoch", max_t=max_epochs, grace_period=1, reduction_factor=3)


def _median_stopping(max_epochs: int):
    from ray.tune.schedulers import MedianStoppingRule

    return MedianStoppingRule(time_attr="epoch", grace_period=1, min_samples_required=3)


SAMPLERS: dict[str, Callable[[Experiment], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
}

PRUNERS: dict[str, Pruner] = {
    "hyperband": Pruner(
        lambda exp, epochs: optuna.pruners.HyperbandPruner(min_resource=1, max_resource=epochs),
        _asha,
        "pruner 'hyperband' runs on Ray as ASHA (asynchronous successive halving, Ray's "
        "Hyperband variant): rungs at 1, 3, 9... epochs",
    ),
    "median": Pruner(
        lambda exp, epochs: optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=0),
        _median_stopping,
        "pruner 'median' runs on Ray as its MedianStoppingRule",
    ),
    "none": Pruner(lambda exp, epochs: optuna.pruners.NopPruner(), None),
}


@dataclass(frozen=True)
class Start:
    """A recipe a study runs before the sampler proposes anything."""

    tag: str
    recipe: dict[str, Any]
    fixed: bool = False  # run exactly as given, outside the search space (never clipped into it)


# The head-only text candidate: a linear head on the frozen encoder's mean-pooled features
# (tasks/text.py), computed once, so it costs about a third of one fine-tuning epoch. On the
# meta-dataset it is what many classes with few examples each need (banking77, 77 intents in 600
# rows: 80 test points against 39 for the default recipe), and validation tells when it wins.
# Its optimiser settings were chosen among 12 (lr 1e-3 to 1e-2, batch 16 or 32, 10 or 30
# epochs) on 8 of the 13 sets: the best few were within half a point of each other and of a
# logistic regression to convergence.
HEAD_ONLY_TEXT = {
    "learning_rate": 3e-3,
    "batch_size": 32,
    "epochs": 30,
    "weight_decay": 0.0,
    "schedule": "linear",
    "warmup_ratio": 0.0,
    "dropout": 0.0,
    "gradual_unfreeze": False,
}


def user_fixed(exp: Experiment) -> dict[str, Any]:
    """The knobs the user fixed to one value in the space: every starting recipe keeps them."""
    return {k: v for k, v in exp.space.items() if not isinstance(v, list | dict)}


def head_only_candidate(exp: Experiment, defaults: dict[str, Any], num_layers: int) -> Start | None:
    """The head-only candidate, for text studies whose space leaves freezing to hypertweaks. Its
    optimiser settings give way to the knobs the user fixed (epochs: 1 stays 1 epoch)."""
    if exp.task != "text-classification" or "freeze_layers" in exp.space:
        return None
    recipe = {**defaults, **HEAD_ONLY_TEXT, **user_fixed(exp), "freeze_layers": num_layers}
    return Start("head-only", recipe, True)


def _defaults_first(exp: Experiment, defaults: dict[str, Any], num_layers: int) -> list[Start]:
    """The recommended recipe and (text) the head-only candidate. The candidate goes first: it
    costs seconds, so a budget of about one default run still measures both; with a single
    trial, only the recommended recipe runs. On the meta-dataset (bench/results/meta) it was
    worth +3.1 test points at 1x behind a fresh-head default; behind the LP-FT default, which
    already rescues the tasks it won, it changes the mean by -0.1: it stays for what it tells
    the user (how far the frozen features go) at the cost of seconds."""
    head_only = head_only_candidate(exp, defaults, num_layers)
    if head_only is None or exp.trials == 1:
        return [Start("defaults", defaults)]
    return [head_only, Start("defaults", defaults)]


# How a study starts: the recipes run before the sampler proposes anything, given the
# experiment, the task's recommended recipe and the model's number of freezable layers.
STARTS: dict[str, Callable[[Experiment, dict[str, Any], int], list[Start]]] = {
    "defaults": _defaults_first,
    "none": lambda exp, defaults, num_layers: [],
}


def make_sampler(exp: Experiment) -> optuna.samplers.BaseSampler:
    return SAMPLERS[exp.sampler](exp)


def make_pruner(exp: Experiment, max_epochs: int) -> optuna.pruners.BasePruner:
    return PRUNERS[exp.pruner].optuna(exp, max_epochs)


def starting_recipes(exp: Experiment, defaults: dict[str, Any], num_layers: int) -> list[Start]:
    return STARTS["defaults" if exp.defaults_first else "none"](exp, defaults, num_layers)


def ray_scheduler(exp: Experiment, max_epochs: int) -> tuple[Any, str]:
    """Ray's counterpart of the experiment's pruner, and what to tell the user about it."""
    pruner = PRUNERS[exp.pruner]
    if pruner.ray is None:
        return None, pruner.ray_note
    return pruner.ray(max_epochs), pruner.ray_note
