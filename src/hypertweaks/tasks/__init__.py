"""One module per task kind; `make_task` is the single place that dispatches on the kind."""

from __future__ import annotations

from pathlib import Path

from hypertweaks.config import Experiment
from hypertweaks.tasks.base import Task


def make_task(experiment: Experiment, cache_dir: Path) -> Task:
    if experiment.task == "text-classification":
        from hypertweaks.tasks.text import TextClassification

        return TextClassification(experiment, cache_dir)
    if experiment.task == "image-classification":
        from hypertweaks.tasks.image import ImageClassification

        return ImageClassification(experiment, cache_dir)
    if experiment.task == "causal-lm":
        from hypertweaks.tasks.causal_lm import CausalLM

        return CausalLM(experiment, cache_dir)
    raise ValueError(f"unknown task {experiment.task!r}")
