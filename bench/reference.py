"""The budget unit: one fixed reference recipe, the text default as it stood when the committed
cells were run. It stays fixed when hypertweaks' own default recipe changes, so that budgets
(1x, 3x, ...) mean the same compute in every cell and every session."""

from __future__ import annotations

REFERENCE_RECIPE = {
    "learning_rate": 5e-5,
    "batch_size": 16,
    "epochs": 3,
    "dropout": 0.1,  # MiniLM's pretrained dropout
    "weight_decay": 0.01,
    "schedule": "linear",
    "warmup_ratio": 0.1,
    "freeze_layers": 0,
    "gradual_unfreeze": False,
}
