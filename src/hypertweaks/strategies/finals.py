"""The final-model rule: what the study hands the user once its trials are done. `kept` is the
model the selector kept. `soup` averages the weights of the recommended recipe's runs at
different seeds (a uniform soup, Wortsman et al. 2022: one model of the same size) and hands it
over unless the kept model leads it on validation by more than the selector's margin.

Measured on the meta-dataset's 13 text sets (bench/results/meta/n600-v200-t500-L48/AVERAGING.md):
soups of 2, 3, 4 and 5 runs of the LP-FT default scored +0.25, +0.42, +0.53 and +0.63 points
above the mean single run, where picking one recipe by a 200-row validation score buys nothing
the noise does not eat. So the soup grows with the budget, up to SOUP_RUNS.

`refit` trains the kept recipe again on train + validation for its whole schedule (refit.py).
Measured on images (magnetic tiles, ELPV; bench/results/IMAGES.md): stopped after the epoch its
trial chose, the product at 3x beat the default by +2.3 macro-F1 [-0.1, +4.8] over eighteen
pairs, where the search alone bought +0.7; the whole schedule beat that stop by +2.0 [+0.6,
+4.0] over sixteen. On text the simulator's refit lost 0.6 points, so text keeps its soup."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypertweaks.objective import is_better
from hypertweaks.strategies.selectors import Selector

SOUP_RUNS = 5  # the most runs of the recommended recipe a soup averages: the most measured
MIN_SOUP = 3  # a trial budget's smallest soup: replayed, two runs bought +0.1 points, three +0.5


def member_tags(runs: int = SOUP_RUNS) -> tuple[str, ...]:
    """The start tags of the recommended recipe's runs: 'defaults', 'defaults-2', ..."""
    return ("defaults", *(f"defaults-{i}" for i in range(2, runs + 1)))


@dataclass(frozen=True)
class Final:
    """How many runs of the recommended recipe the study starts with (1: the usual one), and
    whether the soup of them may replace the kept model; `refit`: the kept recipe is trained
    once more on train + validation (refit.py), and that model is handed over."""

    runs: int = 1
    refit: bool = False

    @property
    def soups(self) -> bool:
        return self.runs > 1

    def keeps_soup(
        self,
        selector: Selector,
        direction: str,
        soup_value: float,
        kept_value: float,
        kept_among: int = 1,
    ) -> bool:
        """The soup, unless the kept model leads it by more than the selector's margin (the
        soup takes the recommended recipe's place: its lead must be shown, not the soup's),
        widened as for the recommended recipe when the kept model is the best of `kept_among`
        trials."""
        margin = selector.margin(soup_value, kept_among)
        bar = soup_value + (margin if direction == "maximize" else -margin)
        return not is_better(kept_value, bar, direction)


# final-model rule -> what it runs and keeps
FINALS: dict[str, Callable[[], Final]] = {
    "soup": lambda: Final(SOUP_RUNS),
    "refit": lambda: Final(1, refit=True),
    "kept": lambda: Final(1),
}


def describe_soup(soup: dict[str, Any], metric: str) -> str:
    """One line for the user: what the final-model stage decided, on validation."""
    members = ", ".join(map(str, soup["members"]))
    rival = soup["rival"]
    rival_name = f"trial {rival['trial']} ({rival['tag'] or 'search'})"
    if rival.get("tag") == "soup":
        rival_name = "the earlier soup"
    made = f"the soup of trials {members} (the recommended recipe's runs, weights averaged)"
    if soup["kept"]:
        return (
            f"final model: {made}, val {metric} {soup['value']:.4f}; "
            f"{rival_name} had {rival['value']:.4f}"
        )
    return (
        f"final model: {rival_name}, val {metric} {rival['value']:.4f}: it leads {made} "
        f"({soup['value']:.4f}) by more than the noise margin {soup['margin']:.4f}"
    )


def epochs(count: int) -> str:
    return f"{count} epoch" if count == 1 else f"{count} epochs"


def describe_refit(refit: dict[str, Any] | None, metric: str) -> str | None:
    """One line for the user: what the refit did, or why it did not run."""
    if not refit:
        return None
    what = (
        f"trial {refit['trial']}'s recipe refit on train + validation ({refit['rows']} rows), "
        f"{epochs(refit['epochs'])}"
    )
    if refit.get("kept"):
        return (
            f"final model: {what}; no validation score of its own (its rows trained it): trial "
            f"{refit['trial']}'s val {metric} {refit['estimate']:.4f} is the estimate"
        )
    return f"final model: trial {refit['trial']}, not refit ({refit['skipped']})"
