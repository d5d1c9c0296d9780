"""A folder a study wrote (runs/NAME, or its best/ model): what it holds, read without loading
any weights, and where it will run. Shared by predict, evaluate and generate."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import yaml

from hypertweaks.models import ModelError
from hypertweaks.train import resolve_device

Progress = Callable[[int], None]  # called with how many more examples are done


def model_dir(path: str | Path) -> Path:
    """A study folder (runs/NAME) -> its best/ model; a model folder as it is; else an error."""
    path = Path(path)
    if not path.exists():
        raise ModelError(
            f"model {str(path)!r} does not exist; give a study folder (runs/NAME) or a model "
            "folder a study wrote (runs/NAME/best)"
        )
    if (path / "best").is_dir():
        path = path / "best"
    if not ((path / "labels.json").is_file() or (path / "hypertweaks.json").is_file()):
        hint = (
            "it is a study folder whose best model was never written (no trial finished)"
            if (path / "results.json").is_file() or (path / "study.db").is_file()
            else "it has no labels.json (classifiers) nor hypertweaks.json (causal LMs)"
        )
        raise ModelError(
            f"{str(path)!r} is not a hypertweaks model: {hint}; give a study folder "
            "(runs/NAME) after `hypertweaks tune`, or its best/ folder"
        )
    return path


@dataclass
class ModelInfo:
    """What a saved model's small files say (best.yaml, labels.json), read without its weights:
    enough to check the inputs before loading anything."""

    directory: Path
    task: str
    recipe: dict[str, Any]  # best.yaml: the experiment it was tuned in
    labels: dict[str, Any]  # labels.json; {} for causal LMs

    @property
    def classes(self) -> list[Any]:
        return list(self.labels.get("classes", []))

    @property
    def positive(self) -> int:
        """With two classes, the one whose recall matters (the defect), as training chose it."""
        from hypertweaks.tasks.image import positive_class

        return int(self.labels.get("positive_class", positive_class(self.classes)))

    def column(self, option: str) -> str:
        """text_column, image_column or label_column as the model was tuned with."""
        defaults = {"text_column": "text", "image_column": "image", "label_column": "label"}
        return str(self.recipe.get(option) or defaults[option])


def describe(path: str | Path | ModelInfo) -> ModelInfo:
    if isinstance(path, ModelInfo):
        return path
    directory = model_dir(path)
    best = directory / "best.yaml"
    recipe = (yaml.safe_load(best.read_text()) or {}) if best.is_file() else {}
    labels_file = directory / "labels.json"
    labels = json.loads(labels_file.read_text()) if labels_file.is_file() else {}
    meta_file = directory / "hypertweaks.json"
    meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
    # the kind the folder records; folders saved before it was recorded: best.yaml, else a guess
    task = (
        labels.get("task")
        or meta.get("task")
        or recipe.get("task")
        or (
            "causal-lm"
            if (directory / "hypertweaks.json").is_file()
            else "image-classification"
            if "image_size" in labels
            else "text-classification"
        )
    )
    return ModelInfo(directory, task, recipe, labels)


def device_of(device: str) -> torch.device:
    """auto, cpu, cuda, cuda:N or mps, checked against what this machine has."""
    if not re.fullmatch(r"auto|cpu|mps|cuda(:\d+)?", device):
        raise ModelError(f"device must be auto, cpu, cuda, cuda:N or mps. Got {device!r} instead")
    if device.startswith("cuda"):
        index = int(device.partition(":")[2] or 0)
        if not torch.cuda.is_available() or index >= torch.cuda.device_count():
            raise ModelError(
                f"device {device!r}: no such CUDA GPU here ({torch.cuda.device_count()} visible); "
                "use --device cpu, or auto to take a GPU when there is one"
            )
    return resolve_device(device)


def as_list(inputs: str | Path | Sequence[Any]) -> list[Any]:
    return [inputs] if isinstance(inputs, str | Path) else list(inputs)
