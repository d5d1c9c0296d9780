"""The samplers that propose trials after the starting recipes (Optuna's)."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING

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


SAMPLERS: dict[str, Callable[[Experiment], optuna.samplers.BaseSampler]] = {
    "tpe": _tpe,
    "random": _random,
}
