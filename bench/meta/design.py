"""The fixed design of recipes the meta-dataset runs on every task: the reference recipe, the
recipes the literature recommends, then a scrambled Sobol sample of a space wider than
hypertweaks' default one. Recipe i of the design never changes once cells exist for it: new
recipes are appended (a longer Sobol prefix), so every prefix stays a balanced design."""

from __future__ import annotations

import math
from typing import Any

from bench.reference import reference_recipe

SOBOL_SEED = 20261127
MINILM_DROPOUT = 0.1  # the packaged MiniLM's pretrained dropout: the reference recipe's

# The wide space the Sobol part covers (issue 15): lr 5e-6..5e-4 (log), every freezing depth
# from none to all six layers, gradual unfreezing on and off, 1-8 epochs, the other knobs across
# their ranges.
WIDE_SPACE: dict[str, Any] = {
    "learning_rate": (5e-6, 5e-4),  # log scale
    "batch_size": (8, 16, 32, 64),
    "epochs": (1, 8),
    "dropout": (0.0, 0.3),
    "weight_decay": (0.0, 0.1),
    "schedule": ("constant", "linear", "cosine"),
    "warmup_ratio": (0.0, 0.2),
    "freeze_layers": (0, 6),  # MiniLM-L6: 6 blocks; 6 = head only
    "gradual_unfreeze": (False, True),
}

# Recipes practitioners start from, each with its source.
LITERATURE: list[tuple[str, dict[str, Any]]] = [
    # The HF Trainer's own defaults (TrainingArguments): lr 5e-5, batch 8, 3 epochs, linear
    # decay, no warmup, no weight decay.
    (
        "hf-trainer-defaults",
        {
            "learning_rate": 5e-5,
            "batch_size": 8,
            "epochs": 3,
            "weight_decay": 0.0,
            "warmup_ratio": 0.0,
        },
    ),
    # Mosbach et al. 2021 / Zhang et al. 2021: small data needs more steps at a small lr, with
    # warmup; fewer epochs make few-sample fine-tuning unstable.
    ("mosbach-more-steps", {"learning_rate": 2e-5, "batch_size": 16, "epochs": 8}),
    # Small sentence-embedding encoders (MiniLM, the sentence-transformers recipes) train at
    # about 1e-4 and above: fewer, wider layers than BERT-base.
    ("small-encoder-high-lr", {"learning_rate": 1e-4, "batch_size": 16, "epochs": 5}),
    # A linear probe: the frozen encoder, only the head trains, at a head's learning rate.
    (
        "linear-probe",
        {
            "learning_rate": 2e-3,
            "batch_size": 32,
            "epochs": 8,
            "freeze_layers": 6,
            "dropout": 0.0,
            "warmup_ratio": 0.0,
            "schedule": "constant",
        },
    ),
    # ULMFiT (Howard & Ruder 2018): gradual unfreezing with a slanted triangular schedule.
    (
        "ulmfit-gradual",
        {
            "learning_rate": 1e-4,
            "batch_size": 16,
            "epochs": 6,
            "freeze_layers": 6,
            "gradual_unfreeze": True,
        },
    ),
    # Devlin et al. 2019's grid, the other corner: lr 3e-5, batch 32, 4 epochs.
    ("bert-grid-3e-5-b32", {"learning_rate": 3e-5, "batch_size": 32, "epochs": 4}),
]


def sobol_recipe(u, s: dict[str, Any] = WIDE_SPACE) -> dict[str, Any]:
    """A point of the unit cube -> a recipe of the space `s` (ranges as in WIDE_SPACE)."""

    def pick(options: tuple, x: float):
        return options[min(int(x * len(options)), len(options) - 1)]

    low, high = s["learning_rate"]
    epochs_low, epochs_high = s["epochs"]
    freeze_low, freeze_high = s["freeze_layers"]
    return {
        "learning_rate": float(f"{math.exp(math.log(low) + u[0] * math.log(high / low)):.3g}"),
        "batch_size": pick(s["batch_size"], u[1]),
        "epochs": epochs_low
        + min(int(u[2] * (epochs_high - epochs_low + 1)), epochs_high - epochs_low),
        "dropout": round(float(s["dropout"][0] + u[3] * (s["dropout"][1] - s["dropout"][0])), 3),
        "weight_decay": round(float(u[4] * s["weight_decay"][1]), 4),
        "schedule": pick(s["schedule"], u[5]),
        "warmup_ratio": round(float(u[6] * s["warmup_ratio"][1]), 3),
        "freeze_layers": freeze_low
        + min(int(u[7] * (freeze_high - freeze_low + 1)), freeze_high - freeze_low),
        "gradual_unfreeze": bool(pick(s["gradual_unfreeze"], u[8])),
    }


def design(size: int = 71) -> list[dict[str, Any]]:
    """The first `size` recipes of the design, each {"name", "source", "recipe"}."""
    from scipy.stats import qmc

    reference = reference_recipe(MINILM_DROPOUT)
    recipes = [{"name": "reference", "source": "bench/reference.py", "recipe": reference}]
    for name, change in LITERATURE:
        recipes.append({"name": name, "source": "literature", "recipe": reference | change})
    sobol = qmc.Sobol(d=len(WIDE_SPACE), scramble=True, seed=SOBOL_SEED)
    points = sobol.random(64)  # a power of two keeps the sequence balanced
    for i, u in enumerate(points):
        recipes.append({"name": f"sobol-{i:02d}", "source": "sobol", "recipe": sobol_recipe(u)})
    return recipes[:size]
