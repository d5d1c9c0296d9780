"""The bench's text task: hypertweaks' own TextClassification, with the classifiers the bench
compares beside the product's own.

`fine_tune_head` says how a recipe that trains some layers builds its classifier:

    "probe"  the product's: the mean-pooled classifier whose head starts from a linear probe on
             the frozen features (LP-FT, Kumar et al. 2022)
    "mean"   the same mean-pooled classifier with a fresh head (meta candidate -2)
    "hf"     the Hugging Face sequence classifier: a fresh head on the CLS pooler, as plain Optuna
             or transformers users train it and as the committed cells were recorded

A head-only recipe (every layer frozen) always builds the product's head-only classifier. The
simulator's evidence: bench/results/meta/<cut>/SIMULATED.md.
"""

from __future__ import annotations

from pathlib import Path

from hypertweaks.config import Experiment
from hypertweaks.models import layer_stack, load_text_classifier
from hypertweaks.space import Recipe
from hypertweaks.tasks.text import MeanPooledClassifier, TextClassification, load_encoder

FINE_TUNE_HEADS = ("probe", "mean", "hf")


class BenchTextClassification(TextClassification):
    fine_tune_head = "probe"  # the product's; one of FINE_TUNE_HEADS

    def __init__(self, experiment: Experiment, cache_dir: Path, fine_tune_head: str = "probe"):
        super().__init__(experiment, cache_dir)
        self.fine_tune_head = fine_tune_head

    def build(self, recipe: Recipe):
        if self.fine_tune_head not in FINE_TUNE_HEADS:
            raise ValueError(
                f"fine_tune_head {self.fine_tune_head!r} is not one of {', '.join(FINE_TUNE_HEADS)}"
            )
        if self.fine_tune_head == "probe" or self.trains_head_only(recipe):
            return super().build(recipe)
        if self.fine_tune_head == "hf":
            model = load_text_classifier(
                self.model_source, len(self.splits.classes), self.id2label, recipe.dropout
            )
            return model, layer_stack(model)
        encoder = load_encoder(self.model_source, recipe.dropout)  # "mean": a fresh head
        model = MeanPooledClassifier(encoder, len(self.splits.classes), recipe.dropout)
        return model, layer_stack(model, body=encoder)
