"""The task kinds, one registry line each. A kind names the module that trains it (tasks/, on
the contract of tasks/base.py) and the predictor that `load` returns for its saved models, and
says what the rest of the package asks of it: its metrics, its knobs, its recommended recipe and
search ranges (recipes.py), what `predict` and `evaluate` read. Nothing heavy is imported here:
the experiment's schema reads it."""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hypertweaks import recipes
from hypertweaks.space import CORE_KNOBS, LM_KNOBS


@dataclass(frozen=True)
class TaskKind:
    name: str  # what the experiment's `task` says, and a saved model folder records
    task: str  # "module:Class" that prepares the data and trains (tasks/base.TaskBase)
    predictor: str  # "module:Class" that `load` returns for a saved model of this kind
    metrics: tuple[str, ...]  # the first is the default
    recipe: Callable[[int | None], dict[str, Any]]  # training rows (when known) -> the defaults
    space: Callable[[int | None], dict[str, Any]]  # training rows -> ranges unlike space.KNOBS'
    knobs: tuple[str, ...] = CORE_KNOBS
    inputs: str = "texts"  # what predict and evaluate read: texts | images | prompts
    generates: bool = False  # a language model: trains on tokens, no classes; reads GGUF
    head_only_start: bool = False  # its studies start with the head-only candidate
    # the final-model rules it takes (strategies/finals.py), the first its default: each the one
    # measured to win for it (text: the soup; images: the refit; bench/README.md, IMAGES.md)
    finals: tuple[str, ...] = ("kept",)

    def load_class(self, which: str = "task") -> type:
        module, name = getattr(self, which).split(":")
        return getattr(importlib.import_module(module), name)

    def default_recipe(self, pretrained_dropout: float, train_rows: int | None = None):
        """The recommended recipe; dropout is the one the model was pretrained with."""
        return {**self.recipe(train_rows), "dropout": float(pretrained_dropout)}

    def default_space(self, user_space: dict[str, Any], train_rows: int | None = None):
        """The kind's default search ranges, overridden knob by knob by the user's."""
        return {**self.space(train_rows), **user_space}


KINDS = {
    kind.name: kind
    for kind in (
        TaskKind(
            "text-classification",
            task="hypertweaks.tasks.text:TextClassification",
            predictor="hypertweaks.predict:TextClassifier",
            metrics=("accuracy", "macro_f1", "loss"),
            recipe=recipes.text_recipe,
            space=recipes.text_space,
            head_only_start=True,
            finals=("soup", "kept"),
        ),
        TaskKind(
            "image-classification",
            task="hypertweaks.tasks.image:ImageClassification",
            predictor="hypertweaks.predict:ImageClassifier",
            metrics=("accuracy", "macro_f1", "loss", "roc_auc", "defect_recall"),
            recipe=lambda rows: recipes.IMAGE_CLASSIFICATION,
            space=lambda rows: recipes.IMAGE_SPACE,
            inputs="images",
            finals=("refit", "kept"),
        ),
        TaskKind(
            "causal-lm",
            task="hypertweaks.tasks.causal_lm:CausalLM",
            predictor="hypertweaks.generate:Generator",
            metrics=("loss", "perplexity", "exact_match"),
            recipe=lambda rows: recipes.CAUSAL_LM,
            space=lambda rows: recipes.CAUSAL_LM_SPACE,
            knobs=LM_KNOBS,
            inputs="prompts",
            generates=True,
        ),
    )
}
METRICS = tuple(dict.fromkeys(m for kind in KINDS.values() for m in kind.metrics))


def kind_of(name: str) -> TaskKind:
    if name not in KINDS:
        raise ValueError(f"unknown task {name!r}: one of {', '.join(KINDS)}")
    return KINDS[name]


def default_recipe(
    task: str, pretrained_dropout: float, train_rows: int | None = None
) -> dict[str, Any]:
    """The recommended recipe of the task kind `task`, for this many training rows."""
    return kind_of(task).default_recipe(pretrained_dropout, train_rows)


def default_space(
    task: str, user_space: dict[str, Any], train_rows: int | None = None
) -> dict[str, Any]:
    """The search ranges of the task kind `task`, the user's knobs over its own."""
    return kind_of(task).default_space(user_space, train_rows)
