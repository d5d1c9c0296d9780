"""Replay search strategies over the meta-dataset (bench/results/meta/<cut>/): in seconds, at any
budget, on every task, leave-one-task-out.

A trial returns its recorded curve. Its cost is modelled compute, in units of the reference
recipe's (design recipe 0) on the same task: training examples, weighted by how much of the
network the backward pass goes through (freezing f of L layers costs (1 + 2 (L - f) / L) / 3 of
a full step: the forward pass always runs). Wall time under a shared, loaded machine is too noisy
to replay; the recorded seconds stay in the cells. A trial stops early as the real one would
(patience on validation accuracy), a pruned or screened trial costs only the epochs it ran, and
continuing a trial reads the rest of the same curve. The strategy chooses on validation; its
choice is scored on test, at the chosen trial's best validation epoch, or, for an ensemble, from
the stored probabilities. Which recorded seed a trial gets is drawn per replay, as a real trial's
seed would be.
"""

from __future__ import annotations

import json
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np

from bench.meta import META_DIR, records, store
from hypertweaks.config import Experiment
from hypertweaks.noise import KEEP_DEFAULTS_ERRORS
from hypertweaks.strategies import Candidate, choose, member_tags
from hypertweaks.strategies import Strategy as ProductStrategy
from hypertweaks.strategies.selectors import KeepDefaults, Selector, trials_chosen_among
from hypertweaks.study import time_needed

NUM_LAYERS = 6  # MiniLM-L6, the text table's model (task records before session 13 lack it)
# hypertweaks' default (the experiment's), and what bench peers train with
PATIENCE = Experiment.model_fields["patience"].default
MIN_RECIPES_TO_SEARCH = 8  # below this, searches are not compared with real ones


@dataclass
class Run:
    """One recorded cell: a recipe trained on a task with one seed, every epoch."""

    task: str
    recipe_index: int
    seed: int
    recipe: dict[str, Any]
    val_acc: np.ndarray
    val_loss: np.ndarray
    test_acc: np.ndarray
    test_f1: np.ndarray
    examples: np.ndarray  # cumulative, per epoch
    seconds: np.ndarray  # cumulative wall time, per epoch
    diverged: bool
    cell: Path  # its .json; the probabilities are in its task's file (bench/meta/store.py)
    num_layers: int = NUM_LAYERS  # the model's freezable blocks (the task record's meta-feature)

    @property
    def epochs(self) -> int:
        return len(self.val_acc)

    @cached_property
    def validation_examples(self) -> int:
        """Rows of the validation split (the selector's noise depends on them)."""
        return self.probs("validation").shape[1]

    def probs(self, split: str) -> np.ndarray:
        """(epochs, rows, classes) float32, within store.ERROR of what was recorded."""
        return store.read(self.cell, split)

    @property
    def chosen_epoch(self) -> int:
        """0-based index of the best validation epoch (the first of ties): the epoch kept."""
        return int(np.argmax(self.val_acc))

    @property
    def chosen_test(self) -> float:
        """Test accuracy at the kept (best validation) epoch."""
        return float(self.test_acc[self.chosen_epoch])

    @property
    def head_only(self) -> bool:
        """Every layer frozen throughout: the product trains the head on cached features."""
        frozen = self.recipe["freeze_layers"] >= self.num_layers
        return frozen and not self.recipe.get("gradual_unfreeze", False)

    def cost(self, epochs: int) -> float:
        """Modelled compute of the first `epochs` epochs, in full-network examples (a forward
        pass is a third of a training step; evaluation passes are not counted)."""
        if epochs <= 0:
            return 0.0
        if self.head_only:  # one forward pass for the features; the head itself costs ~nothing
            return float(self.examples[0]) / 3
        layers = self.num_layers
        trained = (layers - min(self.recipe["freeze_layers"], layers)) / layers
        return float(self.examples[epochs - 1]) * (1 + 2 * trained) / 3


@dataclass
class Table:
    cut: str
    tasks: dict[str, dict[str, Any]]  # task -> meta-features and labels
    runs: dict[tuple[str, int, int], Run]
    recipes: list[int]  # the balanced prefix: recipes recorded on every task at every seed
    seeds: list[int]
    reference_cost: dict[str, float] = field(default_factory=dict)  # task -> mean over seeds
    # task -> the seeds of the LP-FT default averaged -> the soup's (validation, test) accuracy
    soups: dict[str, dict[tuple[int, ...], tuple[float, float]]] = field(default_factory=dict)

    def run(self, task: str, recipe: int, seed: int) -> Run:
        return self.runs[(task, recipe, seed)]

    def soup(self, task: str, seeds: tuple[int, ...]) -> tuple[float, float]:
        """Validation and test accuracy of the LP-FT default's runs at `seeds`, weights averaged."""
        try:
            return self.soups[task][tuple(sorted(seeds))]
        except KeyError:
            raise KeyError(
                f"no soup of {self.cut} {task} at seeds {sorted(seeds)}: score it with "
                "`python -m bench.meta.averaging --soups`"
            ) from None


def load_soups(root: Path) -> dict[str, dict[tuple[int, ...], tuple[float, float]]]:
    """The scored soups of bench/meta/averaging.py under a cut: the soup of each task's first
    three seeds in its cells, and every soup in averaging/soups/<task>.json."""
    soups: dict[str, dict[tuple[int, ...], tuple[float, float]]] = {}

    def add(task: str, seeds, point: dict) -> None:
        scores = (point["validation"]["accuracy"], point["test"]["accuracy"])
        soups.setdefault(task, {})[tuple(sorted(seeds))] = scores

    for cell in records.read(root / "averaging").values():
        if "soup_line" in cell:
            add(cell["task"], cell["soup_seeds"], cell["soup_line"]["1.0"])
    for path in sorted((root / "averaging" / "soups").glob("*.json")):
        record = json.loads(path.read_text())
        for key, point in record["soups"].items():
            add(record["task"], map(int, key.split("-")), point)
    return soups


def load_table(cut, folder: Path | None = None, seeds: list[int] | None = None) -> Table:
    """The recorded cells of a cut (only those of `seeds` when given)."""
    root = (folder or META_DIR) / (cut if isinstance(cut, str) else cut.key)
    tasks = {p.stem: json.loads(p.read_text()) for p in sorted((root / "tasks").glob("*.json"))}
    runs = {}
    for stem, cell in records.read(root / "cells").items():
        epochs = cell["epochs"]
        if not epochs or (seeds is not None and cell["seed"] not in seeds):
            continue

        def column(split: str, metric: str) -> np.ndarray:
            return np.array([e[split][metric] for e in epochs], dtype=float)  # noqa: B023

        runs[(cell["task"], cell["recipe_index"], cell["seed"])] = Run(
            task=cell["task"],
            recipe_index=cell["recipe_index"],
            seed=cell["seed"],
            recipe=cell["recipe"],
            val_acc=column("validation", "accuracy"),
            val_loss=column("validation", "loss"),
            test_acc=column("test", "accuracy"),
            test_f1=column("test", "macro_f1"),
            examples=np.array([e["examples"] for e in epochs], dtype=float),
            seconds=np.array([e["seconds"] for e in epochs], dtype=float),
            diverged=cell["status"] != "completed",
            cell=root / "cells" / f"{stem}.json",  # its name in bench/meta/store.py
            num_layers=tasks.get(cell["task"], {})
            .get("meta_features", {})
            .get("num_layers", NUM_LAYERS),
        )
    # the seeds every recorded reference run has, the tasks that have them, and the longest
    # prefix of the design recorded on all of those (a balanced design)
    seeds = [s for s in sorted({k[2] for k in runs}) if all((t, 0, s) in runs for t in tasks)]
    seeds = seeds or sorted({k[2] for k in runs})[:1]
    tasks = {t: info for t, info in tasks.items() if all((t, 0, s) in runs for s in seeds)}
    recipes: list[int] = []
    for index in range(max((k[1] for k in runs), default=-1) + 1):
        if tasks and all((t, index, s) in runs for t in tasks for s in seeds):
            recipes.append(index)
        else:
            break
    table = Table(root.name, tasks, runs, recipes, seeds, soups=load_soups(root))
    for task in tasks:
        reference = [table.run(task, 0, s) for s in seeds]
        table.reference_cost[task] = float(np.mean([r.cost(r.epochs) for r in reference]))
    return table


# ---------------------------------------------------------------- replay


@dataclass
class Trial:
    run: Run
    epochs: int  # epochs run so far
    stopped: bool = False  # stopped at the budget before its last epoch: it scores nothing

    @property
    def best_epoch(self) -> int:
        """1-based epoch of the best validation accuracy so far (the first of ties)."""
        return int(np.argmax(self.run.val_acc[: self.epochs])) + 1

    @property
    def value(self) -> float:
        return float(self.run.val_acc[self.best_epoch - 1])


class Replay:
    """One task, one replay seed, one budget: the strategy's view of the table."""

    def __init__(self, table: Table, task: str, budget: float, rng: np.random.Generator):
        self.table, self.task, self.rng = table, task, rng
        self.budget = budget * table.reference_cost[task]  # in modelled examples
        self.spent = 0.0
        self.trials: list[Trial] = []
        self.seeds: dict[int, int] = {}  # recipe -> the recorded seed its trials replay

    @property
    def left(self) -> float:
        return self.budget - self.spent

    def can_start(self) -> bool:
        """As the real budget: no trial starts once it is spent; the running one finishes."""
        return self.spent < self.budget - 1e-9

    def run_for(self, recipe: int) -> Run:
        """The recorded run a trial of `recipe` replays (the same seed for every trial of it)."""
        if recipe not in self.seeds:
            self.seeds[recipe] = int(self.rng.choice(self.table.seeds))
        return self.table.run(self.task, recipe, self.seeds[recipe])

    def start(
        self,
        recipe: int,
        epochs: int | None = None,
        patience: int = PATIENCE,
        seed: int | None = None,
    ) -> Trial:
        """Run a recipe for `epochs` (default: all of its own schedule), stopping early after
        `patience` epochs without improvement, as the real trial would; at the recorded `seed`
        when given (another run of a recipe already replayed), else at the replay's seed."""
        run = self.run_for(recipe) if seed is None else self.table.run(self.task, recipe, seed)
        return self.start_run(run, epochs, patience)

    def start_run(
        self,
        run: Run,
        epochs: int | None = None,
        patience: int = PATIENCE,
        stop_past_budget: bool = False,
    ) -> Trial:
        """Start a trial on this recorded run (see start); with `stop_past_budget`, as the
        product's search trials, it stops at the first epoch end past the budget."""
        trial = Trial(run, 0)
        self.trials.append(trial)
        self.advance(trial, epochs or run.epochs, patience, stop_past_budget)
        return trial

    def advance(
        self,
        trial: Trial,
        to_epoch: int,
        patience: int = PATIENCE,
        stop_past_budget: bool = False,
    ) -> None:
        """Continue a trial from where it stopped (the rest of the same curve)."""
        run, before = trial.run, trial.epochs
        to_epoch = min(to_epoch, run.epochs)
        epoch = before
        while epoch < to_epoch:
            epoch += 1
            best = int(np.argmax(run.val_acc[:epoch])) + 1
            if epoch - best >= patience and epoch < run.epochs:
                break
            past = self.spent + run.cost(epoch) - run.cost(before) >= self.budget
            if stop_past_budget and past and epoch < run.epochs:
                trial.stopped = True
                break
        trial.epochs = epoch
        self.spent += run.cost(epoch) - run.cost(before)

    def score(self, trial: Trial) -> float:
        """Test accuracy of a trial's model at its best validation epoch."""
        return float(trial.run.test_acc[trial.best_epoch - 1])

    def ensemble_score(self, trials: list[Trial]) -> float:
        """Test accuracy of the average of the trials' test probabilities (best epochs)."""
        probs = sum(t.run.probs("test")[t.best_epoch - 1].astype(np.float32) for t in trials)
        labels = np.array(self.table.tasks[self.task]["test_labels"])
        return float((probs.argmax(axis=1) == labels).mean())


@dataclass
class Context:
    """What a strategy may know: the task being replayed (its meta-features, never its results)
    and, for learning, the table without this task (leave-one-task-out)."""

    replay: Replay
    recipes: list[int]  # the design recipes a strategy may run
    others: list[str]  # the other tasks: the only ones a strategy may learn from
    table: Table


Strategy = Callable[[Context], float]  # returns the test score of its final choice
STRATEGIES: dict[str, Strategy] = {}


def strategy(name: str):
    def register(fn: Strategy) -> Strategy:
        STRATEGIES[name] = fn
        return fn

    return register


def _best(trials: list[Trial]) -> Trial:
    complete = [t for t in trials if not t.run.diverged]
    return max(complete or trials, key=lambda t: t.value)


def _sobol(ctx: Context) -> list[int]:
    return [r for r in ctx.recipes if r > 0] or ctx.recipes


@strategy("reference")
def reference(ctx: Context) -> float:
    """The fixed reference recipe, once."""
    return ctx.replay.score(ctx.replay.start(0))


def in_space(recipe: dict[str, Any], space: dict[str, Any]) -> bool:
    """Whether every knob of a recipe lies in a resolved search space (a range, a list of
    values or a fixed value, as hypertweaks.space.resolve_space gives it)."""
    for name, spec in space.items():
        value = recipe.get(name)
        if isinstance(spec, dict):
            if value is None or not spec["low"] - 1e-12 <= value <= spec["high"] + 1e-12:
                return False
        elif isinstance(spec, list):
            if value not in spec:
                return False
        elif value != spec:
            return False
    return True


def _in_real_space(ctx: Context) -> list[int]:
    """The design recipes inside the space the bench's real searching peers sample
    (bench.methods.search_space: hypertweaks' default text space), the reference among them."""
    from bench.methods import search_space

    layers = ctx.table.tasks[ctx.replay.task].get("meta_features", {}).get("num_layers")
    space = search_space(layers or NUM_LAYERS)
    return [
        i
        for i in ctx.recipes
        if in_space(ctx.table.run(ctx.replay.task, i, ctx.table.seeds[0]).recipe, space)
    ]


def _random(ctx: Context, pool: list[int]) -> float:
    r = ctx.replay
    for recipe in r.rng.permutation(pool):
        if not r.can_start():
            break
        r.start(int(recipe))
    return r.score(_best(r.trials))


@strategy("random")
def random_search(ctx: Context) -> float:
    """Design recipes in random order while the budget lasts; the best by validation."""
    return _random(ctx, _sobol(ctx))


@strategy("random_in_space")
def random_in_space(ctx: Context) -> float:
    """As random, over the design recipes inside the real peers' search space only: the
    like-for-like replay of the bench's `random` (the design is wider than that space)."""
    return _random(ctx, _in_real_space(ctx) or _sobol(ctx))


def _onepoch_topk(ctx: Context, pool: list[int]) -> float:
    r = ctx.replay
    k = 1 if r.budget < 4 * ctx.table.reference_cost[r.task] else 2
    for recipe in r.rng.permutation(pool):
        if r.spent >= r.budget / 2:
            break
        r.start(int(recipe), epochs=1)
    scouts = sorted(r.trials, key=lambda t: -t.value)[:k]
    finals = []
    for scout in scouts:
        if not r.can_start():
            break
        finals.append(r.start(scout.run.recipe_index))
    return r.score(_best(finals or r.trials))


@strategy("onepoch_topk")
def onepoch_topk(ctx: Context) -> float:
    """One epoch of random recipes for half the budget, then the best K (1 below 4x, else 2)
    trained again from the start (the bench peer: Egele et al. 2023)."""
    return _onepoch_topk(ctx, _sobol(ctx))


@strategy("onepoch_topk_in_space")
def onepoch_topk_in_space(ctx: Context) -> float:
    """As onepoch_topk, over the design recipes inside the real peers' search space only."""
    return _onepoch_topk(ctx, _in_real_space(ctx) or _sobol(ctx))


# The design's recipe 1 (the HF Trainer's defaults) is hypertweaks' text default since the
# meta-dataset measured it (src/hypertweaks/recipes.py); recipe 0 is the default before that.
DEFAULTS = 1


def _random_rest(ctx: Context, skip: int) -> None:
    """The design's recipes but `skip`, in random order, while the budget lets one start."""
    r = ctx.replay
    for recipe in r.rng.permutation([x for x in ctx.recipes if x != skip]):
        if not r.can_start():
            break
        r.start(int(recipe))


def _first_then_random(ctx: Context, first: int) -> Trial:
    """One recipe, then the other design recipes in random order while the budget lasts (the
    reference among them: a point of the space like any other): the best."""
    r = ctx.replay
    r.start(first)
    _random_rest(ctx, skip=first)
    return _best(r.trials)


def _reference_then_random(ctx: Context) -> Trial:
    return _first_then_random(ctx, 0)


@strategy("reference_then_random")
def reference_then_random(ctx: Context) -> float:
    """hypertweaks before the meta-dataset: the reference recipe first, then random."""
    return ctx.replay.score(_reference_then_random(ctx))


@strategy("defaults")
def defaults(ctx: Context) -> float:
    """hypertweaks' text default recipe, once."""
    return ctx.replay.score(ctx.replay.start(DEFAULTS))


@strategy("defaults_then_random")
def defaults_then_random(ctx: Context) -> float:
    """hypertweaks' default recipe first, then random design recipes."""
    return ctx.replay.score(_first_then_random(ctx, DEFAULTS))


def _keep_first_unless_beaten(ctx: Context, errors: float) -> float:
    """As defaults_then_random, but the default stays the choice unless another trial beats it
    on validation by more than `errors` binomial standard errors: a lead inside the validation
    noise is not evidence enough to leave a recipe known to work across tasks."""
    r = ctx.replay
    _first_then_random(ctx, DEFAULTS)
    return r.score(_kept_or_best(r.trials, r.trials[0], errors))


def _kept_or_best(trials: list[Trial], first: Trial, errors: float = KEEP_DEFAULTS_ERRORS) -> Trial:
    """The product's rule (KeepDefaults) with `errors` validation standard errors: the best on
    validation, unless it leads `first` (the recommended recipe) by no more than that."""
    return _selected(trials, first, lambda n: KeepDefaults("maximize", "accuracy", n, errors))


def _selected(trials: list[Trial], first: Trial, make_selector: Callable[[int], Selector]) -> Trial:
    """What a product selector (hypertweaks.strategies.selectors), made for the task's number
    of validation examples, keeps of the trials offered in the order they ran, `first` in the
    place of the recommended recipe."""
    numbered = [(n, t) for n, t in enumerate(trials) if not t.run.diverged]
    numbered = numbered or list(enumerate(trials))
    tagged = [Candidate(t.value, "defaults" if t is first else "", n) for n, t in numbered]
    return numbered[choose(make_selector(first.run.validation_examples), tagged)][1]


@strategy("defaults_keep_1se")
def defaults_keep_1se(ctx: Context) -> float:
    return _keep_first_unless_beaten(ctx, 1.0)


@strategy("defaults_keep_2se")
def defaults_keep_2se(ctx: Context) -> float:
    return _keep_first_unless_beaten(ctx, 1.96)


# The product's head-only text candidate (bench meta candidates): recorded beside the design.
HEAD_ONLY = -1


def _product(
    ctx: Context,
    keep_errors: float | None = None,
    head_first: bool = False,
    default: int = DEFAULTS,
    after: tuple[int, ...] = (),
) -> float:
    """hypertweaks today: the default recipe, the head-only candidate when it was recorded, then
    random design recipes; the best on validation, or with `keep_errors`, the default unless
    another trial beats it by more than that many validation standard errors. `head_first` runs
    the (cheap) head-only candidate before the default; `default` is the cell the default recipe
    replays (another classifier head: a candidate index); `after` are candidates run right after
    the default, before the random recipes."""
    r = ctx.replay
    recorded = (r.task, HEAD_ONLY, ctx.table.seeds[0]) in ctx.table.runs
    if head_first and recorded:
        r.start(HEAD_ONLY)
    first = r.start(default)
    if not head_first and recorded and r.can_start():
        r.start(HEAD_ONLY)
    for index in after:
        if r.can_start() and _has_cells(ctx, index):
            r.start(index)
    _random_rest(ctx, skip=DEFAULTS)
    if keep_errors is None:
        return r.score(_best(r.trials))
    return r.score(_kept_or_best(r.trials, first, keep_errors))


@strategy("defaults_then_head")
def defaults_then_head(ctx: Context) -> float:
    """hypertweaks of session 6: the default recipe, then the head-only candidate, then random."""
    return _product(ctx)


@strategy("defaults_then_head_keep_1se")
def defaults_then_head_keep_1se(ctx: Context) -> float:
    return _product(ctx, keep_errors=1.0)


@strategy("hypertweaks")
def hypertweaks(ctx: Context) -> float:
    """The head-only candidate first (it costs seconds), then the default recipe, then random."""
    return _product(ctx, head_first=True)


@strategy("hypertweaks_keep_1se")
def hypertweaks_keep_1se(ctx: Context) -> float:
    """hypertweaks now: as `hypertweaks`, keeping the default unless beaten beyond the noise."""
    return _product(ctx, keep_errors=1.0, head_first=True)


# The default recipe as the product trains it (bench meta candidates --which=-3): mean-pooled,
# its head from a linear probe (LP-FT).
DEFAULTS_LP_FT = -3
PRODUCT = "hypertweaks_soup"  # the strategy hypertweaks runs today
PRODUCT_STRATEGY = ProductStrategy()  # the Strategy an experiment gets by default
# ... with final_model: kept (the product of sessions 7-35: `hypertweaks_lp_ft`)
PRODUCT_KEPT = ProductStrategy(final="kept")


def _has_cells(ctx: Context, index: int) -> bool:
    """Whether a candidate's cells exist for the replayed task at every replayed seed."""
    return all((ctx.replay.task, index, s) in ctx.table.runs for s in ctx.table.seeds)


def _recorded(ctx: Context, index: int, fallback: int = DEFAULTS) -> int:
    """A candidate's index where its cells exist at every replayed seed, else `fallback` (run
    these strategies with --seeds limited to the seeds the candidate was recorded at)."""
    return index if _has_cells(ctx, index) else fallback


@strategy("defaults_lp_ft")
def defaults_lp_ft(ctx: Context) -> float:
    return ctx.replay.score(ctx.replay.start(_recorded(ctx, DEFAULTS_LP_FT)))


DEFAULTS_MEAN_POOLED = -2  # the default recipe, mean-pooled classifier, fresh head


@strategy("defaults_mean_pooled")
def defaults_mean_pooled(ctx: Context) -> float:
    """With `defaults` and `defaults_lp_ft`, splits LP-FT's gain between mean pooling and the
    probe's head. Its cells exist at seed 0 only: replay it with --seeds 0 (elsewhere it falls
    back to the HF default, as every candidate strategy does)."""
    return ctx.replay.score(ctx.replay.start(_recorded(ctx, DEFAULTS_MEAN_POOLED)))


# The cells that replay each of the product's starting recipes (by tag): a start the product
# gains and the table has no cells for stops the replay (KeyError), rather than drifting apart.
START_CELLS = {"head-only": HEAD_ONLY, "defaults": DEFAULTS_LP_FT}
# What the product's starts depend on, for a text study whose space leaves freezing to it.
TEXT_STUDY = SimpleNamespace(task="text-classification", space={}, trials=None)


def product_starts(strategy: ProductStrategy = PRODUCT_STRATEGY) -> list[str]:
    """The tags of the product's starting recipes, in the order its Strategy runs them."""
    return [s.tag for s in strategy.starting_recipes(TEXT_STUDY, {}, NUM_LAYERS)]


def _run_product_starts(ctx: Context, product: ProductStrategy) -> dict[str, Trial]:
    """The product's starting recipes, in its Strategy's order, by tag. The recommended recipe's
    further runs (the soup's members) replay its runs at other seeds, each started only while
    the budget lasts, as the real ones: first the table's other seeds, then the seeds only the
    averaging cells hold (bench/meta/averaging.py), whose trials replay the cost of the default's
    own cell (same recipe) and enter the result only through the soup's recorded scores."""
    r = ctx.replay
    started: dict[str, Trial] = {}
    members = member_tags(product.make_final(TEXT_STUDY.task).runs)
    for tag in product_starts(product):
        if tag in members[1:]:  # another run of the defaults trial's recipe
            default = started["defaults"].run
            if time_needed(_epoch_cost(started["defaults"]), default.epochs) <= r.left:
                seeds = _member_seeds(ctx, default.seed)
                if members.index(tag) >= len(seeds):
                    raise KeyError(
                        f"{len(seeds)} seeds cannot replay {len(members)} runs of the default: "
                        "record more (`python -m bench.meta.averaging --seeds`) or replay a "
                        "smaller soup"
                    )
                seed = seeds[members.index(tag)]
                key = (r.task, default.recipe_index, seed)
                run = ctx.table.runs.get(key) or replace(default, seed=seed)
                started[tag] = r.start_run(run)
        elif tag == "defaults":
            started[tag] = r.start(_recorded(ctx, START_CELLS[tag]))
        elif (r.task, START_CELLS[tag], ctx.table.seeds[0]) in ctx.table.runs:
            started[tag] = r.start(START_CELLS[tag])
    return started


def _member_seeds(ctx: Context, seed: int) -> list[int]:
    """The seeds of the default's runs in the order the soup takes them: the replay's own, the
    table's others, then those only the scored soups hold."""
    table_seeds = [s for s in ctx.table.seeds if s != seed]
    scored = {s for soup in ctx.table.soups.get(ctx.replay.task, {}) for s in soup}
    return [seed, *table_seeds, *sorted(scored - {seed, *table_seeds})]


def _epoch_cost(trial: Trial) -> float:
    """What an epoch of this finished trial cost, on average (the product's pace of a run)."""
    return trial.run.cost(trial.epochs) / max(trial.epochs, 1)


def _product_search(ctx: Context, defaults: Trial) -> None:
    """Random design recipes as the product's search trials: each starts only if the budget left
    holds all but its last epoch at the default's pace (`hypertweaks.study.time_needed`; the first
    that does not ends the search), and stops at the first epoch end past the budget."""
    r = ctx.replay
    for recipe in r.rng.permutation([x for x in ctx.recipes if x != DEFAULTS]):
        run = r.run_for(int(recipe))
        if time_needed(_epoch_cost(defaults), run.epochs) > r.left:
            break
        r.start_run(run, stop_past_budget=True)


def _product_choice(trials: list[Trial], defaults: Trial, product: ProductStrategy) -> Trial:
    """What the product's selector keeps of the trials run so far (a trial stopped at the budget
    scores nothing)."""
    finished = [t for t in trials if not t.stopped]
    return _selected(finished, defaults, lambda n: product.make_selector("maximize", "accuracy", n))


def _product_final(
    ctx: Context,
    kept: Trial,
    started: dict[str, Trial],
    product: ProductStrategy,
    soup_errors: float | None = None,
) -> float:
    """The product's final-model rule (strategies/finals.py, soup.py): with two or more of the
    recommended recipe's runs finished, the soup of their weights (its scores recorded by
    bench/meta/averaging.py), unless the kept trial leads it on validation by more than the
    selector's margin (`soup_errors` validation standard errors instead, when given); else the
    kept trial."""
    r = ctx.replay
    final = product.make_final(TEXT_STUDY.task)
    runs = [started[t] for t in member_tags(final.runs) if t in started]
    if len(runs) < 2:
        return r.score(kept)
    value, test = ctx.table.soup(r.task, tuple(t.run.seed for t in runs))
    examples = kept.run.validation_examples
    selector = product.make_selector("maximize", "accuracy", examples)
    if soup_errors is not None:
        selector = KeepDefaults("maximize", "accuracy", examples, soup_errors)
    number = next(n for n, t in enumerate(r.trials) if t is kept)
    among = trials_chosen_among("defaults" if kept is started["defaults"] else "", number)
    keeps = final.keeps_soup(selector, "maximize", value, kept.value, among)
    return test if keeps else r.score(kept)


def _replay_product(
    ctx: Context, product: ProductStrategy, soup_errors: float | None = None
) -> float:
    """The product, replayed by its own Strategy: its starting recipes (the head-only candidate,
    then the default recipe trained LP-FT, its head from a linear probe, and with the soup its
    further runs), random design recipes (their recorded fresh-head cells) while the budget
    lasts, its selector and its final-model rule."""
    r = ctx.replay
    started = _run_product_starts(ctx, product)
    _product_search(ctx, started["defaults"])
    kept = _product_choice(r.trials, started["defaults"], product)
    return _product_final(ctx, kept, started, product, soup_errors)


@strategy("hypertweaks_soup")
def hypertweaks_soup(ctx: Context) -> float:
    """hypertweaks now (final_model: soup, the default)."""
    return _replay_product(ctx, PRODUCT_STRATEGY)


@strategy("hypertweaks_soup_2se")
def hypertweaks_soup_2se(ctx: Context) -> float:
    """As hypertweaks_soup, but the kept trial replaces the soup only if it leads it by more
    than two validation standard errors (the soup's value is one model's; the kept trial's is
    the best of several, so its lead is inflated by the choice)."""
    return _replay_product(ctx, PRODUCT_STRATEGY, soup_errors=2.0)


@strategy("hypertweaks_soup_always")
def hypertweaks_soup_always(ctx: Context) -> float:
    """As hypertweaks_soup, but the soup is never replaced by the kept trial."""
    return _replay_product(ctx, PRODUCT_STRATEGY, soup_errors=float("inf"))


@strategy("hypertweaks_lp_ft")
def hypertweaks_lp_ft(ctx: Context) -> float:
    """hypertweaks of sessions 7-35: as now, but the final model the kept trial."""
    return _replay_product(ctx, PRODUCT_KEPT)


@strategy("hypertweaks_lp_ft_seeds")
def hypertweaks_lp_ft_seeds(ctx: Context) -> float:
    """Issue 31, lever 2 (averaging): the product's starts and selector, then the budget left
    buys the kept recipe again at the table's other seeds (each stopping early as a trial
    would); the final model averages their test probabilities (an ensemble of up to 3 seeds).
    With no budget left it is the product at 1x."""
    r = ctx.replay
    started = _run_product_starts(ctx, PRODUCT_KEPT)
    kept = _product_choice(r.trials, started["defaults"], PRODUCT_KEPT)
    members = [kept]
    for seed in ctx.table.seeds:
        key = (r.task, kept.run.recipe_index, seed)
        if seed == kept.run.seed or key not in ctx.table.runs or not r.can_start():
            continue
        member = Trial(ctx.table.runs[key], 0)
        r.advance(member, member.run.epochs)
        members.append(member)
    return r.ensemble_score(members) if len(members) > 1 else r.score(kept)


# The LP-FT default at a higher learning rate, and at a higher one still with the lower two
# layers frozen (bench meta candidates --which=-6,-7): candidates for the trials after the
# default, where the real 3x bench's peers won with such recipes (tweeteval-offensive).
LP_FT_VARIANTS = (-6, -7)


@strategy("hypertweaks_lp_ft_variants")
def hypertweaks_lp_ft_variants(ctx: Context) -> float:
    """hypertweaks_lp_ft with the LP-FT variants right after the default, then random; the
    default kept unless beaten beyond one validation standard error."""
    default = _recorded(ctx, DEFAULTS_LP_FT)
    return _product(ctx, 1.0, head_first=True, default=default, after=LP_FT_VARIANTS)


@strategy("hypertweaks_lp_ft_variants_half_se")
def hypertweaks_lp_ft_variants_half_se(ctx: Context) -> float:
    """As hypertweaks_lp_ft_variants, the default kept unless beaten by half a standard error."""
    default = _recorded(ctx, DEFAULTS_LP_FT)
    return _product(ctx, 0.5, head_first=True, default=default, after=LP_FT_VARIANTS)


@strategy("hypertweaks_lp_ft_variants_best")
def hypertweaks_lp_ft_variants_best(ctx: Context) -> float:
    """As hypertweaks_lp_ft_variants, the best trial on validation whatever its lead."""
    default = _recorded(ctx, DEFAULTS_LP_FT)
    return _product(ctx, 0.0, head_first=True, default=default, after=LP_FT_VARIANTS)


@strategy("hypertweaks_lp_ft_portfolio")
def hypertweaks_lp_ft_portfolio(ctx: Context) -> float:
    """Lever 1 over the product's own candidates: the head-only candidate, then a greedy
    portfolio learned on the other tasks (leave-one-task-out) among the LP-FT default, its
    variants and the design recipes, run in order while the budget lasts; its first member is
    kept unless another trial beats it beyond one validation standard error. Replay it with
    --seeds limited to the seeds the variants were recorded at."""
    r = ctx.replay
    pool = [i for i in (DEFAULTS_LP_FT, *LP_FT_VARIANTS) if _has_cells(ctx, i)] + ctx.recipes
    if _has_cells(ctx, HEAD_ONLY):
        r.start(HEAD_ONLY)
    order = greedy_portfolio(ctx.table, ctx.others, pool, len(pool))
    first = r.start(order[0])
    for index in order[1:]:
        if not r.can_start():
            break
        r.start(index)
    return r.score(_kept_or_best(r.trials, first, 1.0))


# Refits on train + validation of the candidates above (bench meta candidates --which=-4,-5),
# recorded at every epoch of their schedule.
REFITS = {DEFAULTS_LP_FT: -4, HEAD_ONLY: -5}


def _refit_of(ctx: Context, trial: Trial) -> Run | None:
    """The recorded refit of a trial's recipe on train + validation, at the trial's seed."""
    index = REFITS.get(trial.run.recipe_index)
    return ctx.table.runs.get((ctx.replay.task, index, trial.run.seed)) if index else None


@strategy("hypertweaks_lp_ft_refit")
def hypertweaks_lp_ft_refit(ctx: Context) -> float:
    """hypertweaks_lp_ft with a refit (lever 5): once the head-only and default trials have run,
    the one kept is trained again on train + validation for as many epochs as its best on
    validation, when that fits in the budget; then random design recipes with what is left.
    The refit is the final model unless a random trial beats the kept one beyond the noise."""
    r = ctx.replay
    default = _recorded(ctx, DEFAULTS_LP_FT)
    if (r.task, HEAD_ONLY, ctx.table.seeds[0]) in ctx.table.runs:
        r.start(HEAD_ONLY)
    first = r.start(default)
    kept = _kept_or_best(r.trials, first, 1.0)
    refit, refit_score = _refit_of(ctx, kept), None
    if refit is not None and r.left >= refit.cost(kept.best_epoch) - 1e-9:
        r.spent += refit.cost(kept.best_epoch)
        refit_score = float(refit.test_acc[kept.best_epoch - 1])
    _random_rest(ctx, skip=DEFAULTS)
    final = _kept_or_best(r.trials, first, 1.0)
    return refit_score if final is kept and refit_score is not None else r.score(final)


def _normalised_scores(table: Table, tasks: list[str], recipes: list[int]) -> np.ndarray:
    """(tasks, recipes) test accuracy at the best validation epoch, mean over seeds, scaled per
    task to [0, 1] between its worst and best recipe."""
    scores = np.zeros((len(tasks), len(recipes)))
    for i, task in enumerate(tasks):
        for j, recipe in enumerate(recipes):
            runs = [table.run(task, recipe, s) for s in table.seeds]
            scores[i, j] = np.mean([run.test_acc[int(np.argmax(run.val_acc))] for run in runs])
        low, high = scores[i].min(), scores[i].max()
        scores[i] = (scores[i] - low) / (high - low) if high > low else 1.0
    return scores


def greedy_portfolio(table: Table, tasks: list[str], recipes: list[int], size: int) -> list[int]:
    """Recipes chosen one at a time to raise the mean over tasks of the best member's
    (normalised) score most (Pfisterer et al.; Auto-sklearn 2.0)."""
    scores = _normalised_scores(table, tasks, recipes)
    chosen: list[int] = []
    best = np.zeros(len(tasks))
    for _ in range(min(size, len(recipes))):
        gains = [np.maximum(best, scores[:, j]).mean() if recipes[j] not in chosen else -1
                 for j in range(len(recipes))]  # fmt: skip
        j = int(np.argmax(gains))
        chosen.append(recipes[j])
        best = np.maximum(best, scores[:, j])
    return chosen


def _probe(ctx: Context) -> tuple[float, float] | None:
    """The head-only candidate on frozen features (a logistic regression on the frozen model's
    mean-pooled last layer, `bench meta probe`): charged one forward pass over train and
    validation; (validation, test) accuracy, or None where it was not measured."""
    r = ctx.replay
    info = ctx.table.tasks[r.task]
    tested = info.get("probe_test_accuracy", {}).get("linear_probe_layer6")
    if tested is None:
        return None
    meta = info["meta_features"]
    r.spent += (meta["train_rows"] + meta["validation_rows"]) / 3  # forward only
    return meta["linear_probe_layer6"], tested


@strategy("probe_then_reference")
def probe_then_reference(ctx: Context) -> float:
    """The head-only probe first (cheap), then the reference recipe; the better on validation."""
    probe = _probe(ctx)
    trial = ctx.replay.start(0)
    if probe is not None and probe[0] > trial.value:
        return probe[1]
    return ctx.replay.score(trial)


@strategy("probe_then_random")
def probe_then_random(ctx: Context) -> float:
    """The probe, then the reference and random recipes while the budget lasts."""
    probe = _probe(ctx)
    best = _reference_then_random(ctx)
    if probe is not None and probe[0] > best.value:
        return probe[1]
    return ctx.replay.score(best)


@strategy("portfolio")
def portfolio(ctx: Context) -> float:
    """A greedy portfolio learned on the other tasks, run in order while the budget lasts."""
    r = ctx.replay
    for recipe in greedy_portfolio(ctx.table, ctx.others, ctx.recipes, len(ctx.recipes)):
        if not r.can_start():
            break
        r.start(recipe)
    return r.score(_best(r.trials))


@strategy("portfolio_ensemble3")
def portfolio_ensemble(ctx: Context) -> float:
    """As portfolio, then the average of the top 3 trials' probabilities (an ensemble: three
    models to serve, not a headline method)."""
    r = ctx.replay
    for recipe in greedy_portfolio(ctx.table, ctx.others, ctx.recipes, len(ctx.recipes)):
        if not r.can_start():
            break
        r.start(recipe)
    top = sorted((t for t in r.trials if not t.run.diverged), key=lambda t: -t.value)[:3]
    return r.ensemble_score(top or r.trials[:1])


# ---------------------------------------------------------------- evaluation


def replay(
    table: Table, name: str, budget: float, repeats: int, base_seed: int = 0
) -> dict[str, list[float]]:
    """Test accuracy per task, one value per replay."""
    out: dict[str, list[float]] = {}
    for task in table.tasks:
        others = [t for t in table.tasks if t != task]
        scores = []
        for rep in range(repeats):
            # zlib, not hash(): str hashes differ from process to process
            rng = np.random.default_rng([base_seed, rep, zlib.crc32(task.encode())])
            ctx = Context(Replay(table, task, budget, rng), table.recipes, others, table)
            scores.append(STRATEGIES[name](ctx))
        out[task] = scores
    return out


def paired_interval(a: np.ndarray, b: np.ndarray, rng_seed: int = 0) -> tuple[float, float, float]:
    """Mean of a - b over tasks and its bootstrap 95% interval (tasks resampled)."""
    diff = np.asarray(a) - np.asarray(b)
    rng = np.random.default_rng(rng_seed)
    means = [diff[rng.integers(0, len(diff), len(diff))].mean() for _ in range(2000)]
    return float(diff.mean()), float(np.percentile(means, 2.5)), float(np.percentile(means, 97.5))


def compare(
    table: Table,
    names: list[str],
    budgets: list[float],
    repeats: int = 20,
    baseline: str = "reference",
) -> str:
    """Mean test accuracy per strategy and budget over the table's tasks (leave-one-task-out
    for the learned ones), with each strategy's paired difference to the baseline strategy at
    the same budget, and on how many tasks it wins and loses."""
    tasks = list(table.tasks)
    if len(tasks) < 2 or not table.recipes:
        return (
            f"cut {table.cut}: {len(tasks)} tasks with every seed's reference run, "
            f"{len(table.recipes)} recipes on all of them: too few to replay a strategy "
            "leave-one-task-out; collect more (python -m bench meta collect)"
        )
    lines = [
        f"cut {table.cut}: {len(tasks)} tasks, {len(table.recipes)} recipes (balanced prefix), "
        f"seeds {table.seeds}, {repeats} replays per task",
        "",
        "| strategy | " + " | ".join(f"{b:g}x" for b in budgets) + " |",
        "|---|" + "---|" * len(budgets),
    ]
    means: dict[tuple[str, float], np.ndarray] = {}
    order = list(dict.fromkeys([baseline, *names]))
    for name in order:
        for budget in budgets:
            per_task = replay(table, name, budget, repeats)
            means[(name, budget)] = np.array([np.mean(per_task[t]) for t in tasks])
    for name in order:
        cells = []
        for budget in budgets:
            value = means[(name, budget)].mean() * 100
            if name == baseline:
                cells.append(f"{value:.1f}")
                continue
            ours, theirs = means[(name, budget)], means[(baseline, budget)]
            d, low, high = paired_interval(ours, theirs)
            wins, losses = int((ours > theirs + 1e-9).sum()), int((ours < theirs - 1e-9).sum())
            cells.append(
                f"{value:.1f} ({d * 100:+.1f} [{low * 100:+.1f}, {high * 100:+.1f}], "
                f"{wins}-{losses})"
            )
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(f"In brackets: the paired difference to {baseline} at the same budget over "
                 "tasks, in points, with its bootstrap 95% interval, then the tasks it wins and "
                 "loses.")  # fmt: skip
    return "\n".join(lines)


# The image product's search in the image table: its default (the image design's recipe 0), then
# random; the text product's candidates have no image cells.
IMAGE_PRODUCT = "reference_then_random"


def headroom(
    table: Table, budgets=(1.0, 3.0), repeats: int = 20, images: bool = False
) -> list[dict[str, Any]]:
    """Per task: how much any search can gain over the whole recorded design. `images`: the
    image table, where the text product's candidates and probe do not exist."""
    product = IMAGE_PRODUCT if images else PRODUCT
    rows = []
    for task in table.tasks:
        runs = [table.run(task, r, s) for r in table.recipes for s in table.seeds]
        by_recipe = {
            r: np.mean([table.run(task, r, s).chosen_test for s in table.seeds])
            for r in table.recipes
        }
        by_val = max(runs, key=lambda run: run.val_acc.max())
        top3 = sorted(runs, key=lambda run: -run.val_acc.max())[:3]
        probs = sum(run.probs("test")[int(np.argmax(run.val_acc))].astype(np.float32)
                    for run in top3)  # fmt: skip
        labels = np.array(table.tasks[task]["test_labels"])
        row = {
            "task": task,
            "classes": table.tasks[task]["meta_features"]["classes"],
            "oracle": max(by_recipe.values()),
            "best_by_validation": float(by_val.test_acc[int(np.argmax(by_val.val_acc))]),
            "reference": by_recipe[0],
            "top3_ensemble": float((probs.argmax(axis=1) == labels).mean()),
        }
        if not images:
            # a logistic regression on frozen features (bench meta probe), and the product's
            # head-only candidate (bench meta candidates), whatever validation says
            probe = table.tasks[task].get("probe_test_accuracy", {})
            row["linear_probe"] = probe.get("linear_probe_layer6", float("nan"))
            row["head_only"] = _candidate_test(table, task, HEAD_ONLY)
            row["lp_ft_default"] = _candidate_test(table, task, DEFAULTS_LP_FT)
        for budget in budgets:
            for name in ("random", "onepoch_topk", product):
                single = replace(table, tasks={task: table.tasks[task]})
                row[f"{name}@{budget:g}x"] = float(
                    np.mean(replay(single, name, budget, repeats)[task])
                )
        rows.append(row)
    return rows


def _candidate_test(table: Table, task: str, index: int) -> float:
    """A candidate's test accuracy at its best validation epoch, mean over the seeds (NaN where
    a seed was not recorded)."""
    if not all((task, index, s) in table.runs for s in table.seeds):
        return float("nan")
    return float(np.mean([table.run(task, index, s).chosen_test for s in table.seeds]))


def write_headroom(table: Table, cut, images: bool = False) -> str:
    rows = headroom(table, images=images)
    if not rows:
        return "no complete tasks in the table yet"
    columns = [c for c in rows[0] if c not in ("task", "classes")]
    legend = (
        f"{IMAGE_PRODUCT}: the image product's search, simulated (its default, the design's "
        "recipe 0, then random design recipes)."
        if images
        else "linear_probe: a logistic regression on the frozen model's mean-pooled features "
        "(`bench meta probe`); head_only: the product's head-only candidate (`bench meta "
        "candidates`), at its best validation epoch; lp_ft_default: the default recipe as the "
        f"product trains it (LP-FT); {PRODUCT}: the product's strategy, simulated (head-only, "
        "the LP-FT default, random)."
    )
    lines = [
        f"# Headroom on the meta-dataset ({table.cut})",
        "",
        f"{len(rows)} tasks, {len(table.recipes)} recipes recorded on every task at seeds "
        f"{table.seeds}; test accuracy %. oracle: the best recipe by test (mean over seeds); "
        "best_by_validation: the run with the best validation accuracy over the whole design; "
        "random / onepoch_topk: simulated at the budget (mean of 20 replays); top3_ensemble: "
        "the average probabilities of the three best runs by validation; " + legend,
        "",
        "| task | classes | " + " | ".join(columns) + " |",
        "|---|---|" + "---|" * len(columns),
    ]
    for row in rows:
        lines.append(f"| {row['task']} | {row['classes']} | "
                     + " | ".join(f"{row[c] * 100:.1f}" for c in columns) + " |")  # fmt: skip
    mean = {c: np.mean([row[c] for row in rows]) * 100 for c in columns}
    lines.append("| mean | | " + " | ".join(f"{mean[c]:.1f}" for c in columns) + " |")
    text = "\n".join(lines) + "\n"
    out = META_DIR / table.cut / "HEADROOM.md"
    out.write_text(text)
    return text


def against_real(
    table: Table, cells: Path, budget: float = 3.0, repeats: int = 20, product: bool = False
) -> str:
    """Simulated against real bench cells (bench/results/cells/<cut>/) for the methods both
    have, on the tasks both have: per task, the real mean and sd over seeds beside the
    simulated mean and sd over replays. `product`: the cells' hypertweaks is the product as
    shipped (PRODUCT), not an earlier one."""
    pairs = {"reference": "defaults", "random": "random", "onepoch_topk": "onepoch_topk"}
    pairs |= {"random_in_space": "random", "onepoch_topk_in_space": "onepoch_topk"}
    if len(table.recipes) < MIN_RECIPES_TO_SEARCH:  # a search over a handful replays nothing real
        pairs = {"reference": "defaults"}
    if product:
        pairs[PRODUCT] = "hypertweaks"
    lines = [
        f"# Simulated against real runs at {budget:g}x ({table.cut})",
        "",
        "Test accuracy %, mean ± sd: real over the committed bench seeds, simulated over "
        f"{repeats} replays of the meta-dataset's seeds {table.seeds} and its first "
        f"{len(table.recipes)} design recipes. Agreement means |difference| within the larger sd.",
        "",
        "| task | strategy | real | simulated | difference | within spread |",
        "|---|---|---|---|---|---|",
    ]
    agree: dict[str, list[bool]] = {}
    diffs: dict[str, list[float]] = {}
    for task in table.tasks:
        for sim_name, method in pairs.items():
            suffix = "" if method == "defaults" else f"__{budget:g}x"
            real = []
            for path in sorted(cells.glob(f"{task}__{method}{suffix}__s*.json")):
                real.append(json.loads(path.read_text())["result"]["test_metrics"]["accuracy"])
            if not real:
                continue
            single = Table(table.cut, {task: table.tasks[task]}, table.runs, table.recipes,
                           table.seeds, table.reference_cost)  # fmt: skip
            sim = replay(single, sim_name, budget, repeats)[task]
            diff = np.mean(sim) - np.mean(real)
            spread = max(np.std(real), np.std(sim))
            lines.append(
                f"| {task} | {sim_name} | {np.mean(real) * 100:.1f} ± {np.std(real) * 100:.1f} "
                f"(n={len(real)}) | {np.mean(sim) * 100:.1f} ± {np.std(sim) * 100:.1f} | "
                f"{diff * 100:+.1f} | {'yes' if abs(diff) <= spread else 'no'} |"
            )
            agree.setdefault(sim_name, []).append(abs(diff) <= spread)
            diffs.setdefault(sim_name, []).append(diff * 100)
    lines += [""] + [
        f"- {name}: within spread on {sum(ok)} of {len(ok)} tasks; mean difference "
        f"{np.mean(diffs[name]):+.1f} points, mean |difference| {np.mean(np.abs(diffs[name])):.1f}"
        for name, ok in agree.items()
    ]
    return "\n".join(lines) + "\n"
