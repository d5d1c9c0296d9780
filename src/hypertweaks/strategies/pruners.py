"""The pruners (the fidelity schedule that stops weak trials early), each with its Ray Tune
counterpart or the reason it has none."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import optuna

if TYPE_CHECKING:
    from hypertweaks.config import Experiment


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
