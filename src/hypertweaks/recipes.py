"""Recommended fine-tuning recipes and search ranges per task kind (kinds.py names which are
whose): the first trial of every study, and where the search looks."""

from __future__ import annotations

import math
from typing import Any

from hypertweaks.space import KNOBS

# BERT-style encoders: the HF Trainer's defaults (lr 5e-5, 3 epochs, linear decay, no warmup, no
# weight decay, nothing frozen) with a batch size and epoch count that follow the data size (see
# text_recipe). On the meta-dataset (13 text sets x 600 rows x 2 seeds, bench/results/meta) they
# beat the BERT recipe that was our default before (batch 16, 10% warmup, weight decay 0.01) by
# +3.0 test points [+1.5, +4.5].
TEXT_CLASSIFICATION = {
    "learning_rate": 5e-5,
    "batch_size": 8,
    "epochs": 3,
    "weight_decay": 0.0,
    "schedule": "linear",
    "warmup_ratio": 0.0,
    "freeze_layers": 0,
    "gradual_unfreeze": False,
}

# Few-sample fine-tuning fails when it makes too few optimiser updates (Mosbach et al. 2021;
# Zhang et al. 2021, "Revisiting few-sample BERT fine-tuning"): the measured winner made 225
# updates in all on 600 rows, so smaller data gets more epochs. Batch 8 has evidence up to 2,000
# rows (the meta-dataset's 600; HF's defaults scored 0.815 on tweeteval-emotion's 2,000 tweets,
# 11 points over a common BERT recipe); a larger batch, which trains faster on a GPU, only once an
# epoch still makes hundreds of updates with it.
MIN_UPDATES = 225
LARGER_BATCH_UPDATES_PER_EPOCH = 300
MAX_EPOCHS = 10
DEFAULT_EPOCHS_HIGH = KNOBS["epochs"].default["high"]


def text_recipe(train_rows: int | None = None) -> dict[str, Any]:
    """The text default for this many training rows: batch 8, or 16 or 32 once an epoch still
    has LARGER_BATCH_UPDATES_PER_EPOCH updates at that batch; epochs for MIN_UPDATES in all."""
    if train_rows is None:
        return TEXT_CLASSIFICATION
    batch = max(
        [b for b in (16, 32) if train_rows >= LARGER_BATCH_UPDATES_PER_EPOCH * b], default=8
    )
    updates_per_epoch = max(1, math.ceil(train_rows / batch))
    epochs = min(MAX_EPOCHS, max(3, math.ceil(MIN_UPDATES / updates_per_epoch)))
    return {**TEXT_CLASSIFICATION, "batch_size": batch, "epochs": epochs}


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

# Search ranges that differ from the knobs' general defaults (space.KNOBS): CNNs fine-tune at
# learning rates about ten times those of transformers; text encoders on small data need
# enough updates to move at all.
# Text: measured on MiniLM with 600 training rows (the bench cells at commit c2e574c): every trial
# that froze more than half the layers, trained with gradual unfreezing on 2-5 epochs, or used
# lr < 2e-5 barely beat the majority class, so a small budget spent there is wasted. Users with
# more data or epochs can widen any of these (freeze_layers: {low: 0, high: all}).
TEXT_SPACE = {
    "learning_rate": {"low": 2e-5, "high": 2e-4, "log": True},
    "freeze_layers": {"low": 0, "high": "half"},
    "gradual_unfreeze": False,
}
IMAGE_SPACE = {"learning_rate": {"low": 1e-4, "high": 3e-3, "log": True}}
# LoRA trains at about ten times the full fine-tuning lr; the LM's own dropout is not searched
# (lora_dropout is the regulariser), nor is gradual unfreezing (the adapters are small).
CAUSAL_LM_SPACE = {
    "learning_rate": {"low": 3e-5, "high": 1e-3, "log": True},
    "epochs": {"low": 1, "high": 3},
    "dropout": 0.0,
    "weight_decay": [0.0, 0.01, 0.1],
    "warmup_ratio": {"low": 0.0, "high": 0.1},
    "gradual_unfreeze": False,
}


def text_space(train_rows: int | None = None) -> dict[str, Any]:
    """Text's search ranges: on small data the epoch range reaches the recommended recipe's."""
    space = dict(TEXT_SPACE)
    if train_rows is not None:
        epochs = text_recipe(train_rows)["epochs"]
        if epochs > DEFAULT_EPOCHS_HIGH:
            space["epochs"] = {"low": 2, "high": epochs}
    return space
