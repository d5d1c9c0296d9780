"""What every task kind offers the trainer and the search (text, image, ...)."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import torch
from torch import nn
from torch.utils.data import Dataset

from hypertweaks.data import Split, Splits
from hypertweaks.models import LayerStack
from hypertweaks.space import Recipe


class IndexedExamples(Dataset):
    """Yields example indices; the subclass's `collate(indices)` builds a whole batch at once,
    which is much faster than stacking examples one by one."""

    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> int:
        return index


class Task(Protocol):
    """Classification tasks train with cross-entropy over `forward`'s logits. A task with another
    loss (causal-lm: over target tokens) also defines `loss_sum(model, inputs, labels)`,
    `count_targets(labels)` and `evaluate(model, data, device, batch_size)`; `train` uses them
    when present."""

    splits: Splits
    num_layers: int  # how many blocks freeze_layers can freeze
    pretrained_dropout: float

    def prepare(self) -> None:
        """Load, check and encode the data, and check the model, before any training."""

    def build(self, recipe: Recipe) -> tuple[nn.Module, LayerStack]:
        """A fresh pretrained model for this recipe (dropout set), and its layers for freezing."""

    def dataset(self, split: Split, train: bool, recipe: Recipe | None = None) -> Dataset:
        """Examples of one split; `train` turns on augmentation where the task has it; the recipe
        may change what is fed (e.g. cached features when the backbone is frozen). The dataset's
        `collate(examples) -> (model inputs, labels)` makes its batches."""

    def forward(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model inputs -> logits."""

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Validation / test metrics from logits."""

    def save(self, model: nn.Module, directory: Path) -> None:
        """Write the model so that `load` (or the model's own library) reads it back."""

    def load(self, directory: Path) -> nn.Module: ...
