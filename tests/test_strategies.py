"""Every registered strategy setting runs a real (tiny) study, and maps to Ray or says how."""

import pytest

from hypertweaks import tune
from hypertweaks.config import make_experiment
from hypertweaks.strategies import PRUNERS, SAMPLERS, ray_scheduler


@pytest.mark.parametrize(
    "setting", [("sampler", s) for s in SAMPLERS] + [("pruner", p) for p in PRUNERS]
)
def test_each_strategy_setting_runs_a_study(setting, text_experiment):
    field, name = setting
    result = tune({**text_experiment, field: name, "trials": 3, "smoke": False})
    assert result.trials == 3 and result.best_value is not None
    assert result.default_value is not None  # the study started from the default recipe


@pytest.mark.parametrize("pruner", list(PRUNERS))
def test_each_pruner_has_a_ray_counterpart_named_to_the_user(pruner, text_experiment):
    pytest.importorskip("ray.tune")
    exp = make_experiment({**text_experiment, "pruner": pruner})
    scheduler, note = ray_scheduler(exp, max_epochs=4)
    expected = {
        "hyperband": "AsyncHyperBandScheduler",
        "median": "MedianStoppingRule",
        "none": None,
    }
    assert (type(scheduler).__name__ if scheduler else None) == expected[pruner]
    assert (pruner in note) == (scheduler is not None)
