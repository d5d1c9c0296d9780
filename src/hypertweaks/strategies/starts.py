"""How a study starts: the recipes it runs before the sampler proposes anything."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hypertweaks.kinds import kind_of

if TYPE_CHECKING:
    from hypertweaks.config import Experiment


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
    if not kind_of(exp.task).head_only_start or "freeze_layers" in exp.space:
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


# experiment, the task's recommended recipe, the model's number of freezable layers -> starts
STARTS: dict[str, Callable[[Experiment, dict[str, Any], int], list[Start]]] = {
    "defaults": _defaults_first,
    "none": lambda exp, defaults, num_layers: [],
}
