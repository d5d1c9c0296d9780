"""Recommended fine-tuning recipes per task, the first trial of every study."""

from __future__ import annotations

from typing import Any

# BERT-style encoders (Devlin et al. 2019, and the transformers examples): lr in 2e-5..5e-5,
# batch 16-32, 3 epochs, AdamW with weight decay 0.01, linear decay after 10% warmup, nothing
# frozen. Small datasets take the upper lr and the smaller batch: more updates per epoch.
TEXT_CLASSIFICATION = {
    "learning_rate": 5e-5,
    "batch_size": 16,
    "epochs": 3,
    "weight_decay": 0.01,
    "schedule": "linear",
    "warmup_ratio": 0.1,
    "freeze_layers": 0,
    "gradual_unfreeze": False,
}

# ImageNet CNNs fine-tuned with AdamW (timm's fine-tuning defaults): a higher lr than for
# transformers, cosine decay, short warmup, nothing frozen.
IMAGE_CLASSIFICATION = {
    "learning_rate": 1e-3,
    "batch_size": 32,
    "epochs": 5,
    "weight_decay": 0.01,
    "schedule": "cosine",
    "warmup_ratio": 0.05,
    "freeze_layers": 0,
    "gradual_unfreeze": False,
}

_BY_TASK = {
    "text-classification": TEXT_CLASSIFICATION,
    "image-classification": IMAGE_CLASSIFICATION,
}

# Search ranges that differ from the knobs' general defaults (space.KNOBS): CNNs fine-tune at
# learning rates about ten times those of transformers.
_SPACE_BY_TASK = {
    "text-classification": {},
    "image-classification": {"learning_rate": {"low": 1e-4, "high": 3e-3, "log": True}},
}


def default_recipe(task: str, pretrained_dropout: float) -> dict[str, Any]:
    """The recommended recipe; dropout is the one the model was pretrained with."""
    return {**_BY_TASK[task], "dropout": float(pretrained_dropout)}


def default_space(task: str, user_space: dict[str, Any]) -> dict[str, Any]:
    """The task's default search ranges, overridden knob by knob by the user's."""
    return {**_SPACE_BY_TASK[task], **user_space}
