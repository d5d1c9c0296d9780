"""Image classification (and defect detection) with a timm or Hugging Face backbone.

Images are decoded and resized once per study. The frozen backbone's pooled features are
computed once per study and image size: a recipe that freezes the whole backbone trains only the
classifier on them, and (timm backbones) fine-tuning starts from a linear probe on them (LP-FT).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import Dataset

from hypertweaks.atomic import save_torch
from hypertweaks.backbones import (
    is_hf_model,
    load_image_classifier,
    normalisation,
    pretrained_dropout,
)
from hypertweaks.data import Split, check_not_in_train, load_splits
from hypertweaks.data.images import load_images_cached, read_images_source
from hypertweaks.models import RESAVE, ModelError, error_reason, unreadable
from hypertweaks.space import Recipe
from hypertweaks.tasks.base import Features, IndexedExamples, TaskBase
from hypertweaks.tasks.metrics import classification_metrics
from hypertweaks.train import resolve_device

DEFECT_NAMES = (
    "defect",
    "defective",
    "defects",
    "bad",
    "ng",
    "nok",
    "anomaly",
    "faulty",
    "1",
    "true",
    "yes",
    "positive",
)


def positive_class(classes: list[Any]) -> int:
    """For two classes, the one whose recall matters (the defect): found by name, else class 1."""
    for index, name in enumerate(classes):
        if str(name).strip().lower() in DEFECT_NAMES:
            return index
    return 1


class Images(IndexedExamples):
    """uint8 images; training batches get a light augmentation (small crop, horizontal flip)."""

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, mean, std, augment: bool):
        self.images, self.labels, self.augment = images, labels, augment
        self.mean = torch.tensor(mean).view(1, -1, 1, 1)
        self.std = torch.tensor(std).view(1, -1, 1, 1)
        if augment:
            from torchvision.transforms import v2

            size = images.shape[-1]
            self.transform = v2.Compose(
                [
                    v2.RandomResizedCrop(size, scale=(0.8, 1.0), ratio=(0.9, 1.1), antialias=True),
                    v2.RandomHorizontalFlip(),
                ]
            )

    def collate(self, indices: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        batch = self.images[torch.as_tensor(indices)]
        if self.augment:
            batch = torch.stack([self.transform(image) for image in batch])
        pixels = batch.float().div_(255).expand(-1, 3, -1, -1)  # grayscale scans -> 3 channels
        pixels = (pixels - self.mean) / self.std
        return {"pixel_values": pixels}, self.labels[torch.as_tensor(indices)]


class LinearProbe(nn.Module):
    """A timm classifier alone, trained on cached features (`forward`'s head-only path)."""

    drop_rate = 0.0

    def __init__(self, num_features: int, num_classes: int):
        super().__init__()
        self.classifier = nn.Linear(num_features, num_classes)

    def get_classifier(self) -> nn.Linear:
        return self.classifier


class ImageClassification(TaskBase):
    # Fine-tuning starts from a linear probe on the frozen features (LP-FT) rather than a fresh
    # random head; measured against the fresh head in bench/results/IMAGES.md.
    probe_start = True

    def prepare(self) -> None:
        exp = self.experiment
        tables = {}
        for role in ("train", "validation", "test"):
            path = getattr(exp, role)
            tables[role] = (
                None
                if path is None
                else (
                    read_images_source(Path(path), exp.image_column, exp.label_column, role),
                    str(path),
                )
            )
        self.splits = load_splits(
            tables, "image", "label", exp.validation_fraction, exp.seed, compare_inputs=False
        )
        for split in (self.splits.train, self.splits.validation, self.splits.test):
            if split is not None:  # decode now: an unreadable image fails before any training
                self._images(split)
        self._check_copies_of_training_images()
        self.positive = positive_class(self.splits.classes)
        self.pretrained_dropout = pretrained_dropout(exp.model)
        probe, layers = self._load(self.pretrained_dropout)
        self.num_layers = len(layers.blocks)
        self.mean, self.std = normalisation(probe)

    @property
    def id2label(self) -> dict[int, str]:
        return {i: str(name) for i, name in enumerate(self.splits.classes)}

    def _load(self, dropout: float):
        exp = self.experiment
        return load_image_classifier(
            exp.model, len(self.splits.classes), dropout, exp.weights, self.id2label
        )

    def build(self, recipe: Recipe):
        """The classifier; for a recipe that trains some of a timm backbone, its head from a
        linear probe on the frozen features (LP-FT, Kumar et al. 2022), as text does."""
        model, layers = self._load(recipe.dropout)
        classifier = None if is_hf_model(self.experiment.model) else model.get_classifier()
        if (
            self.probe_start
            and isinstance(classifier, nn.Linear)
            and not self.trains_head_only(recipe)
        ):
            classifier.load_state_dict(
                self.fit_linear_probe(self._features, LinearProbe).classifier.state_dict()
            )
        return model, layers

    def _check_copies_of_training_images(self) -> None:
        """The same picture in train and in validation or test, under its own path or another
        (a folder copied), compared by decoded pixels."""

        def digests(split: Split) -> list[bytes]:
            return [hashlib.sha1(image.numpy().tobytes()).digest() for image in self._images(split)]

        train = digests(self.splits.train)
        for role in ("validation", "test"):
            split = getattr(self.splits, role)
            if split is None or split.rows is not None:  # none, or carved from train
                continue
            where = f"{role} ({getattr(self.experiment, role)})"
            if note := check_not_in_train(train, digests(split), where, "the same pixels"):
                self.splits.notes.append(note)

    def _images(self, split: Split) -> torch.Tensor:
        return self.cached(
            "pixels",
            split,
            lambda: load_images_cached(split.inputs, self.experiment.image_size, self.cache_dir),
        )

    def trains_head_only(self, recipe: Recipe) -> bool:
        return recipe.freeze_layers >= self.num_layers and not is_hf_model(self.experiment.model)

    def dataset(self, split: Split, train: bool, recipe: Recipe | None = None) -> Dataset:
        labels = torch.as_tensor(split.labels)
        if recipe is not None and self.trains_head_only(recipe):
            return self._features(split)
        return Images(self._images(split), labels, self.mean, self.std, augment=train)

    def _features(self, split: Split) -> Features:
        return Features(self._backbone_features(split), torch.as_tensor(split.labels))

    def _backbone_features(self, split: Split) -> torch.Tensor:
        """Pooled features of the frozen pretrained backbone: computed once per study and image
        size (never paying twice for the same forward passes), on disk and in memory."""
        return self.cached("features", split, lambda: self._compute_features(split))

    @torch.no_grad()
    def _compute_features(self, split: Split) -> torch.Tensor:
        exp = self.experiment
        digest = hashlib.sha256(json.dumps([exp.model, str(exp.weights), exp.image_size]).encode())
        digest.update("\0".join(split.inputs).encode())
        path = self.cache_dir / f"features-{digest.hexdigest()[:24]}.pt"
        if path.exists():
            features = torch.load(path, weights_only=True)
        else:
            device = resolve_device(exp.device)
            model, _ = self._load(dropout=0.0)
            model.to(device).eval()
            data = Images(
                self._images(split),
                torch.as_tensor(split.labels),
                self.mean,
                self.std,
                augment=False,
            )
            chunks = []
            for start in range(0, len(data), 64):
                inputs, _ = data.collate(list(range(start, min(start + 64, len(data)))))
                pixels = inputs["pixel_values"].to(device)
                features = model.forward_head(model.forward_features(pixels), pre_logits=True)
                chunks.append(features.float().cpu())
            features = torch.cat(chunks)
            save_torch(features, path)
        return features

    def forward(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        if "features" in inputs:  # the frozen backbone ran once already: only the head trains
            head_dropout = getattr(model, "drop_rate", 0.0)
            features = nn.functional.dropout(inputs["features"], head_dropout, model.training)
            return model.get_classifier()(features)
        if is_hf_model(self.experiment.model):
            return model(pixel_values=inputs["pixel_values"]).logits
        return model(inputs["pixel_values"])

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return classification_metrics(logits, labels, positive=self.positive)

    def save(self, model: nn.Module, directory: Path) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        meta = {
            "model": self.experiment.model,
            "classes": [str(c) for c in self.splits.classes],
            "image_size": self.experiment.image_size,
            "mean": list(self.mean),
            "std": list(self.std),
            "positive_class": self.positive,
            "task": "image-classification",  # the folder's kind, read by predict and evaluate
        }
        if is_hf_model(self.experiment.model):
            model.save_pretrained(directory)
        else:
            from safetensors.torch import save_file

            state = {k: v.contiguous() for k, v in model.state_dict().items()}
            save_file(state, directory / "model.safetensors")
        (directory / "labels.json").write_text(json.dumps(meta, indent=2))

    def load(self, directory: Path) -> nn.Module:
        return load_saved(directory, self.experiment.model, len(self.splits.classes))


def load_saved(directory: Path, model: str, num_classes: int) -> nn.Module:
    """A classifier written by `ImageClassification.save`: a Hugging Face folder, or timm weights
    for the backbone `model` (labels.json names it). Weights that are missing, unreadable or
    incomplete are refused, naming the file: random weights would answer in their place."""
    from safetensors import SafetensorError

    read_errors = (SafetensorError, OSError, ValueError, RuntimeError, KeyError)
    if (directory / "config.json").is_file():
        from transformers import AutoConfig, AutoModelForImageClassification

        try:
            config = AutoConfig.from_pretrained(directory)
        except read_errors as error:
            config_file = directory / "config.json"
            raise unreadable(config_file, error) from None
        weights = _hf_weights(directory)
        if weights is None:
            raise ModelError(
                f"{directory / 'model.safetensors'} is missing: {directory} holds the model's "
                f"config but not its weights; {RESAVE}"
            )
        try:
            net, info = AutoModelForImageClassification.from_pretrained(
                directory, config=config, output_loading_info=True
            )
        except read_errors as error:
            raise unreadable(weights, error) from None
        missing = sorted(info.get("missing_keys") or []) + sorted(info.get("mismatched_keys") or [])
        if missing:
            raise ModelError(_incomplete(weights, [str(k) for k in missing]))
        return net
    import timm
    from safetensors.torch import load_file

    weights = directory / "model.safetensors"
    if not weights.is_file():
        raise ModelError(f"{weights} is missing: it holds the model's weights; {RESAVE}")
    try:
        state = load_file(weights)
    except read_errors as error:
        raise unreadable(weights, error) from None
    net = timm.create_model(model, pretrained=False, num_classes=num_classes)
    missing = [key for key in net.state_dict() if key not in state]
    if missing:
        raise ModelError(_incomplete(weights, missing))
    try:
        net.load_state_dict(state)  # strict: unexpected keys and other shapes are refused too
    except RuntimeError as error:
        raise ModelError(
            f"{weights} does not fit {model!r} with {num_classes} classes (labels.json) "
            f"({error_reason(error)}); {RESAVE}"
        ) from None
    return net


def _hf_weights(directory: Path) -> Path | None:
    """The weights file of a Hugging Face folder (sharded: its index), or None."""
    for name in (
        "model.safetensors",
        "model.safetensors.index.json",
        "pytorch_model.bin",
        "pytorch_model.bin.index.json",
    ):
        if (directory / name).is_file():
            return directory / name
    return None


def _incomplete(weights: Path, missing: list[str]) -> str:
    shown = ", ".join(missing[:4]) + (f", ... ({len(missing)} in all)" if len(missing) > 4 else "")
    return (
        f"{weights} cannot be read as this model: it lacks {shown}, which would be left "
        f"random; {RESAVE}"
    )
