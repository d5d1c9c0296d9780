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


def default_recipe(task: str, pretrained_dropout: float) -> dict[str, Any]:
    """The recommended recipe; dropout is the one the model was pretrained with."""
    return {**_BY_TASK[task], "dropout": float(pretrained_dropout)}
