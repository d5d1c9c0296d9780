"""One module per task kind; `make_task` builds the one the experiment names (kinds.KINDS)."""

from __future__ import annotations

from pathlib import Path

from hypertweaks.config import Experiment
from hypertweaks.kinds import kind_of
from hypertweaks.tasks.base import Task


def make_task(experiment: Experiment, cache_dir: Path) -> Task:
    return kind_of(experiment.task).load_class("task")(experiment, cache_dir)
