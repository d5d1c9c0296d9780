"""Which way a metric is better: the one place that decides it."""

from __future__ import annotations

from collections.abc import Iterable

LOWER_IS_BETTER = ("loss", "perplexity")


def direction_of(metric: str) -> str:
    """Optuna's word for the metric: "minimize" or "maximize"."""
    return "minimize" if metric in LOWER_IS_BETTER else "maximize"


def is_better(value: float, than: float | None, direction: str) -> bool:
    """`value` beats `than` (anything beats None). Ties are not better: the first keeps it."""
    if than is None:
        return True
    return value < than if direction == "minimize" else value > than


def best_of(values: Iterable[float | None], direction: str) -> float | None:
    """The best of the values that are not None, or None."""
    best = None
    for value in values:
        if value is not None and is_better(value, best, direction):
            best = value
    return best
