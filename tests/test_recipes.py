"""The recommended text recipe knows the data size: enough optimiser updates on small data,
the HF Trainer's defaults where the meta-dataset measured them, larger batches on large data."""

import pytest

from hypertweaks.kinds import default_recipe
from hypertweaks.recipes import MIN_UPDATES


def updates(recipe: dict, rows: int) -> int:
    return -(-rows // recipe["batch_size"]) * recipe["epochs"]


def test_on_the_meta_datasets_size_the_text_default_is_the_hf_trainers_defaults():
    recipe = default_recipe("text-classification", 0.1, train_rows=600)
    assert recipe == {
        "learning_rate": 5e-5,
        "batch_size": 8,
        "epochs": 3,
        "weight_decay": 0.0,
        "schedule": "linear",
        "warmup_ratio": 0.0,
        "freeze_layers": 0,
        "gradual_unfreeze": False,
        "dropout": 0.1,
    }


@pytest.mark.parametrize("rows", [40, 120, 300, 600, 2000, 5000, 50000])
def test_every_data_size_gets_enough_updates_without_a_runaway_epoch_count(rows):
    recipe = default_recipe("text-classification", 0.1, train_rows=rows)
    assert 3 <= recipe["epochs"] <= 10
    assert updates(recipe, rows) >= MIN_UPDATES or recipe["epochs"] == 10


def test_small_data_trains_longer_and_large_data_in_larger_batches():
    small = default_recipe("text-classification", 0.1, train_rows=150)
    large = default_recipe("text-classification", 0.1, train_rows=50000)
    assert small["epochs"] > 3 and small["batch_size"] == 8
    assert large["batch_size"] == 32 and large["epochs"] == 3


def test_other_tasks_keep_their_recipe_whatever_the_data_size():
    for task in ("image-classification", "causal-lm"):
        assert default_recipe(task, 0.0, train_rows=100) == default_recipe(task, 0.0)


def test_the_default_text_space_reaches_the_default_epochs_on_small_data():
    from hypertweaks.kinds import default_space

    small = default_space("text-classification", {}, train_rows=150)
    assert small["epochs"]["high"] == default_recipe("text-classification", 0.1, 150)["epochs"]
    assert "epochs" not in default_space("text-classification", {}, train_rows=600)
    assert default_space("text-classification", {"epochs": 2}, train_rows=150)["epochs"] == 2
