"""Search strategies, in one place. A Strategy is one object: how a study starts (the recipes run
first), the sampler that proposes the rest, the pruner (the fidelity schedule that stops weak
trials early), the selector (which trial's model to keep) and the final-model rule (the kept
model, the soup of the recommended recipe's runs, or the kept recipe refit on every labelled
row). Every backend runs the Strategy it is given, and so does the bench's replay of recorded
curves (bench/meta/simulate.py).

The experiment holds names only (names.py, importable without Optuna); a new start, sampler,
pruner or selector is one entry in its registry (starts.STARTS, samplers.SAMPLERS, pruners.PRUNERS
with its Ray mapping or refusal, selectors.SELECTORS, finals.FINALS) and its name in names.py."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hypertweaks.kinds import kind_of
from hypertweaks.strategies.finals import FINALS, MIN_SOUP, Final, member_tags
from hypertweaks.strategies.names import (
    FINAL_NAMES,
    PRUNER_NAMES,
    SAMPLER_NAMES,
    SELECTOR_NAMES,
    START_NAMES,
)
from hypertweaks.strategies.selectors import SELECTORS, Candidate, Selector, choose
from hypertweaks.strategies.starts import HEAD_ONLY_TEXT, STARTS, Start, head_only_candidate

if TYPE_CHECKING:
    from hypertweaks.config import Experiment

__all__ = [
    "FINAL_NAMES",
    "HEAD_ONLY_TEXT",
    "PRUNER_NAMES",
    "SAMPLER_NAMES",
    "SELECTOR_NAMES",
    "START_NAMES",
    "Candidate",
    "Final",
    "member_tags",
    "Start",
    "Strategy",
    "choose",
    "head_only_candidate",
    "strategy_of",
]


@dataclass(frozen=True)
class Strategy:
    """starts + sampler + pruner + selector + final-model rule, by their registry names."""

    starts: str = "defaults"
    sampler: str = "tpe"
    pruner: str = "hyperband"
    selector: str = "keep-defaults"
    final: str = "soup"

    def starting_recipes(
        self, exp: Experiment, defaults: dict[str, Any], num_layers: int
    ) -> list[Start]:
        """The start's recipes, then the recommended recipe's further runs that the final
        model averages (their seeds differ: a trial's seed is the study's seed plus its number)."""
        starts = STARTS[self.starts](exp, defaults, num_layers)
        return starts + self.soup_members(exp, starts)

    def make_final(self, task: str) -> Final:
        """The final-model rule for this task kind: a rule the kind does not take (e.g. the
        soup for images, unmeasured; the experiment refuses it) keeps the kept model."""
        return FINALS[self.final]() if self.final in kind_of(task).finals else Final(1)

    def soup_tags(self, exp: Experiment) -> tuple[str, ...]:
        """The tags of the runs the final model averages; () when the study runs no soup."""
        starts = self.starting_recipes(exp, {}, 0)  # the tags only: no recipe is read
        tags = {s.tag for s in starts}
        members = tuple(t for t in member_tags(self.make_final(exp.task).runs) if t in tags)
        return members if len(members) > 1 else ()

    def soup_members(self, exp: Experiment, starts: list[Start]) -> list[Start]:
        """The recommended recipe's runs 2..N, when the study starts from it. A time budget
        starts each only while it lasts (the soup grows with it); a budget of trials gets as
        many as it holds after the starts, and none below MIN_SOUP runs (it stays a search)."""
        final = self.make_final(exp.task)
        defaults = next((s for s in starts if s.tag == "defaults"), None)
        if not final.soups or defaults is None:
            return []
        members = [Start(tag, defaults.recipe) for tag in member_tags(final.runs)[1:]]
        if exp.trials is not None:
            members = members[: max(exp.trials - len(starts), 0)]
            if len(members) + 1 < MIN_SOUP:
                return []
        return members

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
        final=exp.final_model or kind_of(exp.task).finals[0],
    )
