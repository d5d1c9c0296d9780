"""What every task kind offers the trainer and the search (text, image, causal LM), and the
behaviour they share: datasets cached by what they hold (split name and rows), and
classification's loss and evaluation, which a task with another loss overrides."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn
from torch.utils.data import Dataset

from hypertweaks.config import Experiment
from hypertweaks.data import Split, Splits
from hypertweaks.models import LayerStack
from hypertweaks.space import Recipe
from hypertweaks.train import autocast

T = TypeVar("T")


class IndexedExamples(Dataset):
    """Yields example indices; the subclass's `collate(indices)` builds a whole batch at once,
    which is much faster than stacking examples one by one."""

    labels: torch.Tensor

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> int:
        return index


class Features(IndexedExamples):
    """Pooled features of a frozen pretrained model, for recipes that train only the head."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor):
        self.features, self.labels = features, labels

    def collate(self, indices: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        index = torch.as_tensor(indices)
        return {"features": self.features[index]}, self.labels[index]


class TaskBase:
    """The contract. A subclass sets `splits`, `num_layers` and `pretrained_dropout` in
    `prepare`, and implements `build`, `dataset`, `forward`, `metrics`, `save` and `load`.
    Classification trains with cross-entropy over `forward`'s logits; a task with another loss
    (causal-lm: over target tokens) overrides `loss_sum`, `count_targets` and `evaluate`."""

    splits: Splits
    num_layers: int  # how many blocks freeze_layers can freeze
    pretrained_dropout: float

    cpu_bfloat16 = False  # whether `precision: auto` computes in bfloat16 on a CPU that can

    def __init__(self, experiment: Experiment, cache_dir: Path):
        self.experiment = experiment
        self.cache_dir = cache_dir
        self._cache: dict[tuple[str, tuple[str, str]], Any] = {}

    def autocast(self, device: torch.device):
        """The precision the experiment asks for on `device` (train.autocast)."""
        return autocast(device, self.experiment.precision, self.cpu_bfloat16)

    def cached(self, kind: str, split: Split, make: Callable[[], T]) -> T:
        """`make()` once per kind of data and split contents (its name and rows): a subset of a
        split is cached apart from the split itself, and never mistaken for another subset."""
        key = (kind, split.key)
        if key not in self._cache:
            self._cache[key] = make()
        return self._cache[key]

    def cache_joined(self, whole: Split, parts: list[Split]) -> None:
        """Cache `whole`, the rows of `parts` in order, from their cached tensors (pixels,
        frozen features) joined: never decoded or computed twice."""
        for kind in {kind for kind, _ in self._cache}:
            cached = [self._cache.get((kind, part.key)) for part in parts]
            if all(isinstance(value, torch.Tensor) for value in cached):
                self._cache[(kind, whole.key)] = torch.cat(cached)

    # -- what each task implements ------------------------------------------------------
    def prepare(self) -> None:
        """Load, check and encode the data, and check the model, before any training."""
        raise NotImplementedError

    def build(self, recipe: Recipe) -> tuple[nn.Module, LayerStack]:
        """A fresh pretrained model for this recipe (dropout set), and its layers for freezing."""
        raise NotImplementedError

    def dataset(self, split: Split, train: bool, recipe: Recipe | None = None) -> Dataset:
        """Examples of one split; `train` turns on augmentation where the task has it; the recipe
        may change what is fed (e.g. cached features when the backbone is frozen). The dataset's
        `collate(examples) -> (model inputs, labels)` makes its batches."""
        raise NotImplementedError

    def forward(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        """Model inputs -> logits."""
        raise NotImplementedError

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        """Validation / test metrics from logits."""
        raise NotImplementedError

    def save(self, model: nn.Module, directory: Path) -> None:
        """Write the model so that `load` (or the model's own library) reads it back."""
        raise NotImplementedError

    def load(self, directory: Path) -> nn.Module:
        raise NotImplementedError

    # -- classification's defaults ------------------------------------------------------
    def loss_sum(self, model: nn.Module, inputs: dict[str, torch.Tensor], labels: torch.Tensor):
        """The summed training loss of a batch (divided by `count_targets` over the batch)."""
        logits = self.forward(model, inputs)
        weight = self.class_weights(logits.device)
        return nn.functional.cross_entropy(logits.float(), labels, weight=weight, reduction="sum")

    def class_weights(self, device: torch.device | str = "cpu") -> torch.Tensor | None:
        """Per-class loss weights (experiment `class_weights: balanced`): train rows / (classes x
        the class's rows), so they average to 1 over the training rows; None: unweighted. Made
        once per device, not at every step."""
        if self.experiment.class_weights == "none":
            return None
        train, classes = self.splits.train, len(self.splits.classes)
        key = f"class_weights:{device}"
        return self.cached(key, train, lambda: _balanced(train.labels, classes).to(device))

    def fit_linear_probe(
        self, features: Callable[[Split], Features], make: Callable[[int, int], nn.Module]
    ) -> nn.Module:
        """A linear probe, `make(features, classes)`, fitted on the frozen backbone's cached
        `features(split)` as the text head-only candidate is (seconds on the CPU): the head that
        LP-FT fine-tunes from (Kumar et al. 2022)."""
        from hypertweaks.strategies import HEAD_ONLY_TEXT
        from hypertweaks.train import fit

        # drawn from the trial's seed first: the same probe whether the features were cached or
        # had to be computed (which may build a model, drawing from the generator)
        seed = int(torch.randint(0, 2**31 - 1, ()).item())
        train, val = features(self.splits.train), features(self.splits.validation)
        torch.manual_seed(seed)
        probe = make(train.features.shape[1], len(self.splits.classes))
        recipe = Recipe(**{**HEAD_ONLY_TEXT, "freeze_layers": 0})
        stack = LayerStack([], [], list(probe.parameters()))
        exp = self.experiment
        fit(self, probe, stack, recipe, train, val, metric=exp.metric, direction=exp.direction,
            patience=exp.patience, seed=seed)  # fmt: skip
        return probe

    @torch.no_grad()
    def recompute_norm_statistics(
        self, model: nn.Module, names: list[str], device: torch.device | str, batch_size: int = 64
    ) -> None:
        """The running statistics of the batch-norm layers `names`, computed again as the
        cumulative mean over one pass of the training rows (torch's SWA `update_bn`), in
        training mode; the model's other layers and its mode are left as they were."""
        norms = [model.get_submodule(name) for name in names]
        momenta = [norm.momentum for norm in norms]
        for norm in norms:
            norm.reset_running_stats()
            norm.momentum = None  # a cumulative average over the pass
        training = model.training
        model.train()
        for module in model.modules():  # other batch-norm layers (frozen ones) keep theirs
            if isinstance(module, nn.modules.batchnorm._BatchNorm) and module not in norms:
                module.eval()
        data = self.dataset(self.splits.train, False)
        for start in range(0, len(data), batch_size):
            inputs, _ = data.collate(list(range(start, min(start + batch_size, len(data)))))
            self.forward(model, {k: v.to(device) for k, v in inputs.items()})
        for norm, momentum in zip(norms, momenta, strict=True):
            norm.momentum = momentum
        model.train(training)

    def count_targets(self, labels: torch.Tensor) -> int:
        return len(labels)

    def evaluate(
        self, model: nn.Module, data: Dataset, device: torch.device, batch_size: int = 64
    ) -> dict[str, float]:
        from hypertweaks.train import predict_logits

        return self.metrics(*predict_logits(self, model, data, device, batch_size))


def _balanced(labels, classes: int) -> torch.Tensor:
    counts = torch.bincount(torch.as_tensor(labels), minlength=classes).float()
    return len(labels) / (classes * counts.clamp(min=1))


Task = TaskBase  # the name the rest of the package uses for "a task"
