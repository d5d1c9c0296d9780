"""Search strategies, in one place. A Strategy is one object: how a study starts (the recipes run
first), the sampler that proposes the rest, the pruner (the fidelity schedule that stops weak
trials early) and the selector (the final-model rule). Every backend runs the Strategy it is
given, and so does the bench's replay of recorded curves (bench/meta/simulate.py).

The experiment holds names only (names.py, importable without Optuna); a new start, sampler,
pruner or selector is one entry in its registry (starts.STARTS, samplers.SAMPLERS, pruners.PRUNERS
with its Ray mapping or refusal, selectors.SELECTORS) and its name in names.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hypertweaks.strategies.names import PRUNER_NAMES, SAMPLER_NAMES, SELECTOR_NAMES, START_NAMES
from hypertweaks.strategies.selectors import SELECTORS, Candidate, Selector, choose
from hypertweaks.strategies.starts import HEAD_ONLY_TEXT, STARTS, Start, head_only_candidate

if TYPE_CHECKING:
    from hypertweaks.config import Experiment

__all__ = [
    "HEAD_ONLY_TEXT",
    "PRUNER_NAMES",
    "SAMPLER_NAMES",
    "SELECTOR_NAMES",
    "START_NAMES",
    "Candidate",
    "Start",
    "Strategy",
    "choose",
    "head_only_candidate",
    "strategy_of",
]


@dataclass(frozen=True)
class Strategy:
    """starts + sampler + pruner + selector, by their registry names."""

    starts: str = "defaults"
    sampler: str = "tpe"
    pruner: str = "hyperband"
    selector: str = "keep-defaults"

    def starting_recipes(
        self, exp: Experiment, defaults: dict[str, Any], num_layers: int
    ) -> list[Start]:
        return STARTS[self.starts](exp, defaults, num_layers)

    def make_sampler(self, exp: Experiment):
        from hypertweaks.strategies.samplers import SAMPLERS

        return SAMPLERS[self.sampler](exp)

    def make_pruner(self, exp: Experiment, max_epochs: int):
        from hypertweaks.strategies.pruners import PRUNERS

        return PRUNERS[self.pruner].optuna(exp, max_epochs)

    def ray_scheduler(self, max_epochs: int) -> tuple[Any, str]:
        """Ray's counterpart of the pruner, and what to tell the user about it."""
        from hypertweaks.strategies.pruners import PRUNERS

        pruner = PRUNERS[self.pruner]
        return (None if pruner.ray is None else pruner.ray(max_epochs)), pruner.ray_note

    def make_selector(self, direction: str, metric: str, validation_examples: int) -> Selector:
        return SELECTORS[self.selector](direction, metric, validation_examples)


def strategy_of(exp: Experiment) -> Strategy:
    """The Strategy an experiment names."""
    return Strategy(
        starts="defaults" if exp.defaults_first else "none",
        sampler=exp.sampler,
        pruner=exp.pruner,
        selector=exp.selector,
    )
