"""The Ray backend's parts that need no cluster: a clear error without Ray, and its trials
written back with the distributions the embedded backend samples from."""

from __future__ import annotations

import sys

import optuna
import pytest

from hypertweaks import tune
from hypertweaks.backends.ray_tune import distributions
from hypertweaks.config import ConfigError
from hypertweaks.space import resolve_space, suggest


def test_without_ray_the_backend_says_what_to_install(monkeypatch, text_experiment):
    monkeypatch.setitem(sys.modules, "ray", None)
    with pytest.raises(ConfigError, match=r"pip install 'hypertweaks\[ray\]'"):
        tune({**text_experiment, "backend": "ray"})


def test_recorded_distributions_are_the_ones_suggest_samples():
    space = resolve_space({"epochs": 3, "batch_size": [16, 32]}, num_layers=6)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    trial = study.ask()
    suggest(trial, space)
    assert trial.distributions == distributions(space)
