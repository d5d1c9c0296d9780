"""Every registered strategy setting reaches the study it names (a setting the study ignored
fails here), and maps to Ray or says how."""

import pytest

import hypertweaks.search
import hypertweaks.study
from hypertweaks import tune
from hypertweaks.config import make_experiment
from hypertweaks.strategies import Strategy, strategy_of
from hypertweaks.strategies.pruners import PRUNERS
from hypertweaks.strategies.samplers import SAMPLERS
from hypertweaks.strategies.selectors import SELECTORS


def _spy(monkeypatch) -> dict:
    """What the study was really built with: its sampler, pruner and checkpoint selector."""
    seen: dict = {}
    create = hypertweaks.study.optuna.create_study
    checkpoint = hypertweaks.search.study_checkpoint

    def create_study(*args, **kwargs):
        seen.update(sampler=kwargs["sampler"], pruner=kwargs["pruner"])
        return create(*args, **kwargs)

    def study_checkpoint(exp, task):
        best = checkpoint(exp, task)
        seen["selector"] = best.selector
        return best

    monkeypatch.setattr(hypertweaks.study.optuna, "create_study", create_study)
    monkeypatch.setattr(hypertweaks.search, "study_checkpoint", study_checkpoint)
    return seen


@pytest.mark.parametrize(
    "setting",
    [("sampler", s) for s in SAMPLERS]
    + [("pruner", p) for p in PRUNERS]
    + [("selector", s) for s in SELECTORS],
)
def test_each_strategy_setting_reaches_the_study(setting, text_experiment, monkeypatch):
    field, name = setting
    seen = _spy(monkeypatch)
    exp = {**text_experiment, field: name, "trials": 3, "smoke": False}
    result = tune(exp)
    assert result.trials == 3 and result.best_value is not None
    assert result.default_value is not None  # the study started from the default recipe
    built = make_experiment(exp)
    expected = {
        "sampler": SAMPLERS[built.sampler](built),
        "pruner": PRUNERS[built.pruner].optuna(built, 2),
        "selector": SELECTORS[built.selector]("maximize", "accuracy", 30),
    }
    for part, value in expected.items():
        assert type(seen[part]) is type(value), part
    assert seen["selector"].errors == expected["selector"].errors


def test_the_strategy_is_the_one_object_the_experiment_names(text_experiment):
    exp = make_experiment(
        {**text_experiment, "sampler": "random", "pruner": "none", "selector": "best"}
    )
    assert strategy_of(exp) == Strategy("defaults", "random", "none", "best")
    no_starts = make_experiment({**text_experiment, "defaults_first": False})
    assert strategy_of(no_starts).starting_recipes(no_starts, {}, 2) == []


@pytest.mark.parametrize("pruner", list(PRUNERS))
def test_each_pruner_has_a_ray_counterpart_named_to_the_user(pruner, text_experiment):
    pytest.importorskip("ray.tune")
    exp = make_experiment({**text_experiment, "pruner": pruner})
    scheduler, note = strategy_of(exp).ray_scheduler(max_epochs=4)
    expected = {
        "hyperband": "AsyncHyperBandScheduler",
        "median": "MedianStoppingRule",
        "none": None,
    }
    assert (type(scheduler).__name__ if scheduler else None) == expected[pruner]
    assert (pruner in note) == (scheduler is not None)
