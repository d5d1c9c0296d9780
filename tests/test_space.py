import optuna
import pytest

from hypertweaks.space import fit_into, max_epochs, resolve_space, suggest, tunable


def test_defaults_cover_the_seven_knobs_with_log_learning_rate():
    space = resolve_space({}, num_layers=6)
    assert space["learning_rate"]["log"] is True
    assert space["freeze_layers"] == {"low": 0, "high": 6}
    assert set(tunable(space)) >= {
        "learning_rate",
        "batch_size",
        "epochs",
        "dropout",
        "weight_decay",
        "schedule",
        "freeze_layers",
    }


def test_fixed_knobs_are_not_searched():
    space = resolve_space({"epochs": 4, "schedule": ["cosine"], "dropout": 0.2}, num_layers=6)
    study = optuna.create_study()
    trial = study.ask()
    recipe = suggest(trial, space)
    assert (recipe.epochs, recipe.schedule, recipe.dropout) == (4, "cosine", 0.2)
    assert not {"epochs", "schedule", "dropout"} & set(trial.params)
    assert max_epochs(space) == 4


def test_freezing_more_layers_than_the_model_has_is_an_error():
    with pytest.raises(ValueError, match="has 2 layers"):
        resolve_space({"freeze_layers": 3}, num_layers=2)


def test_default_recipe_is_moved_into_the_users_space():
    space = resolve_space({"learning_rate": {"low": 1e-4, "high": 1e-3}, "batch_size": [32, 64]}, 6)
    params = fit_into(
        space,
        {
            "learning_rate": 5e-5,
            "batch_size": 16,
            "epochs": 3,
            "dropout": 0.1,
            "weight_decay": 0.01,
            "schedule": "linear",
            "warmup_ratio": 0.1,
            "freeze_layers": 0,
            "gradual_unfreeze": False,
        },
    )
    assert params["learning_rate"] == 1e-4 and params["batch_size"] == 32


def test_text_default_space_freezes_at_most_half_the_layers_and_never_gradually():
    from hypertweaks.kinds import default_space

    space = resolve_space(default_space("text-classification", {}), num_layers=7)
    assert space["freeze_layers"] == {"low": 0, "high": 3}
    assert space["gradual_unfreeze"] is False
    assert space["learning_rate"]["low"] >= 2e-5
    # a user's range overrides the task's, and "half" is theirs to use too
    mine = default_space("text-classification", {"freeze_layers": {"low": 1, "high": "all"}})
    assert resolve_space(mine, num_layers=7)["freeze_layers"] == {"low": 1, "high": 7}
    assert resolve_space({"freeze_layers": "half"}, num_layers=6)["freeze_layers"] == 3


def test_a_layer_word_range_that_ends_below_its_start_on_this_model_is_refused():
    with pytest.raises(ValueError, match="low 'half' is 3 layers on this model, above high 2"):
        resolve_space({"freeze_layers": {"low": "half", "high": 2}}, num_layers=6)
    assert resolve_space({"freeze_layers": {"low": "half", "high": 3}}, num_layers=6)[
        "freeze_layers"
    ] == {"low": 3, "high": 3}
