"""How the final model is chosen among the finished trials. The same selector decides which
trial's model the checkpoint store keeps (checkpoints.py), what the study reports as kept
(search.py), and what the simulator replays (bench/meta/simulate.py)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol

from hypertweaks.noise import KEEP_DEFAULTS_ERRORS, chosen_among, standard_error
from hypertweaks.objective import is_better


@dataclass(frozen=True)
class Candidate:
    """A finished trial as a selector sees it: its validation value, its start tag and its
    number (how many trials had started before it: the rivals its value was chosen among)."""

    value: float
    tag: str = ""
    number: int = 0

    @property
    def among(self) -> int:
        return trials_chosen_among(self.tag, self.number)


def trials_chosen_among(tag: str, number: int) -> int:
    """The trials a value was chosen among: 1 for the recommended recipe and its soup (one
    model, no choice), else every trial started up to trial `number`."""
    return 1 if tag in ("defaults", "soup") else number + 1


class Selector(Protocol):
    def replaces(self, new: Candidate, current: Candidate | None) -> bool:
        """Whether `new` should take the place of the model kept so far."""

    def margin(self, defaults_value: float, trials: int = 1) -> float:
        """By how much the best of `trials` other trials must lead the recommended recipe to
        replace it."""


@dataclass(frozen=True)
class KeepDefaults:
    """The best trial on validation, except that the recommended recipe ('defaults') keeps its
    place unless another trial leads it by more than `errors` validation standard errors,
    whichever of the two finished first, widened by the number of trials the leader was the best
    of (noise.chosen_among). A lead inside the noise has not shown it is better; errors=0 is
    the plain best on validation."""

    direction: str
    metric: str
    examples: int  # validation examples: the noise of the metric
    errors: float = KEEP_DEFAULTS_ERRORS

    def margin(self, defaults_value: float, trials: int = 1) -> float:
        error = standard_error(self.metric, defaults_value, self.examples)
        return 0.0 if error is None else self.errors * chosen_among(trials) * error

    def replaces(self, new: Candidate, current: Candidate | None) -> bool:
        if current is None:
            return True
        if "defaults" not in (new.tag, current.tag) or new.tag == current.tag:
            return is_better(new.value, current.value, self.direction)
        defaults, other = (new, current) if new.tag == "defaults" else (current, new)
        margin = self.margin(defaults.value, other.among)
        bar = defaults.value + (margin if self.direction == "maximize" else -margin)
        other_leads = is_better(other.value, bar, self.direction)
        return other_leads if other is new else not other_leads


def choose(selector: Selector, trials: Sequence[Candidate]) -> int | None:
    """The index of the trial the selector keeps, offered the trials in the order they finished
    (as the checkpoint store is)."""
    chosen: int | None = None
    for index, trial in enumerate(trials):
        if selector.replaces(trial, None if chosen is None else trials[chosen]):
            chosen = index
    return chosen


# direction, metric, validation examples -> the selector of a study
SELECTORS: dict[str, Callable[[str, str, int], Selector]] = {
    "keep-defaults": lambda direction, metric, examples: KeepDefaults(direction, metric, examples),
    "best": lambda direction, metric, examples: KeepDefaults(direction, metric, examples, 0.0),
}
