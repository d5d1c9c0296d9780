"""The budget unit: one run of a fixed reference recipe, on the same task, seed and machine.

Every method's budget is k times the wall time of that run. The recipe is written out here, not
taken from `hypertweaks.kinds.default_recipe`, so that a change to hypertweaks' own default
(which the `hypertweaks` method starts from) does not change the unit every committed cell was
measured in. It is the text default as it stood when the table was first run (the BERT
fine-tuning recipe of Devlin et al. 2019 and the transformers examples, with the smaller batch
and upper learning rate that small data sets take), with the model's pretrained dropout.
"""

from __future__ import annotations

from typing import Any

REFERENCE_RECIPE: dict[str, Any] = {
    "learning_rate": 5e-5,
    "batch_size": 16,
    "epochs": 3,
    "weight_decay": 0.01,
    "schedule": "linear",
    "warmup_ratio": 0.1,
    "freeze_layers": 0,
    "gradual_unfreeze": False,
    # "dropout": the model's own (pretrained) dropout, filled in by reference_recipe
}


def reference_recipe(pretrained_dropout: float) -> dict[str, Any]:
    """The reference recipe for a model pretrained with this dropout."""
    return {**REFERENCE_RECIPE, "dropout": float(pretrained_dropout)}


def is_reference(recipe: dict[str, Any] | None) -> bool:
    """Whether a budget unit was measured with the reference recipe (any dropout: the model's).
    Cells written before the recipe was recorded hold it as their chosen recipe."""
    if not recipe:
        return False
    return {k: v for k, v in recipe.items() if k != "dropout"} == REFERENCE_RECIPE
