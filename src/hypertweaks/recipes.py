"""Recommended fine-tuning recipes per task, the first trial of every study."""

from __future__ import annotations

from typing import Any

from hypertweaks.space import CORE_KNOBS, LM_KNOBS

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

# Small causal LMs with LoRA (the peft and TRL examples, and QLoRA): r 16, alpha 32 (a scale of
# 2), adapter dropout 0.05 on every linear layer of the blocks, lr 2e-4, cosine decay after 3%
# warmup. The model's own dropout stays at its pretraining value (0 for current LLMs).
CAUSAL_LM = {
    "learning_rate": 2e-4,
    "batch_size": 16,
    "epochs": 2,
    "weight_decay": 0.0,
    "schedule": "cosine",
    "warmup_ratio": 0.03,
    "freeze_layers": 0,
    "gradual_unfreeze": False,
    "adapter": "lora",
    "lora_r": 16,
    "lora_alpha": 32,
    "lora_dropout": 0.05,
    "lora_targets": "all-linear",
}

_BY_TASK = {
    "text-classification": TEXT_CLASSIFICATION,
    "image-classification": IMAGE_CLASSIFICATION,
    "causal-lm": CAUSAL_LM,
}

# Search ranges that differ from the knobs' general defaults (space.KNOBS): CNNs fine-tune at
# learning rates about ten times those of transformers; text encoders on small data need
# enough updates to move at all.
_SPACE_BY_TASK = {
    # Measured on MiniLM with 600 training rows (the bench cells at commit c2e574c): every trial
    # that froze more than half the layers, trained with gradual unfreezing on 2-5 epochs, or
    # used lr < 2e-5 barely beat the majority class, so a small budget spent there is wasted.
    # Users with more data or epochs can widen any of these (freeze_layers: {low: 0, high: all}).
    "text-classification": {
        "learning_rate": {"low": 2e-5, "high": 2e-4, "log": True},
        "freeze_layers": {"low": 0, "high": "half"},
        "gradual_unfreeze": False,
    },
    "image-classification": {"learning_rate": {"low": 1e-4, "high": 3e-3, "log": True}},
    # LoRA trains at about ten times the full fine-tuning lr; the LM's own dropout is not searched
    # (lora_dropout is the regulariser), nor is gradual unfreezing (the adapters are small).
    "causal-lm": {
        "learning_rate": {"low": 3e-5, "high": 1e-3, "log": True},
        "epochs": {"low": 1, "high": 3},
        "dropout": 0.0,
        "weight_decay": [0.0, 0.01, 0.1],
        "warmup_ratio": {"low": 0.0, "high": 0.1},
        "gradual_unfreeze": False,
    },
}


def task_knobs(task: str) -> tuple[str, ...]:
    """The knobs a task has: the LoRA ones belong to causal language models only."""
    return LM_KNOBS if task == "causal-lm" else CORE_KNOBS


def default_recipe(task: str, pretrained_dropout: float) -> dict[str, Any]:
    """The recommended recipe; dropout is the one the model was pretrained with."""
    return {**_BY_TASK[task], "dropout": float(pretrained_dropout)}


def default_space(task: str, user_space: dict[str, Any]) -> dict[str, Any]:
    """The task's default search ranges, overridden knob by knob by the user's."""
    return {**_SPACE_BY_TASK[task], **user_space}
