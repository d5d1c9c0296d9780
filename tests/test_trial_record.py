"""The trial record: one versioned shape from the trial to results.json."""

from __future__ import annotations

import optuna
import pytest

from hypertweaks.results import trial_row
from hypertweaks.trial import RECORD_VERSION, TrialRecord


def finished_trial(attrs: dict, state=optuna.trial.TrialState.COMPLETE) -> optuna.trial.FrozenTrial:
    return optuna.trial.create_trial(
        state=state,
        value=0.8 if state == optuna.trial.TrialState.COMPLETE else None,
        params={"learning_rate": 1e-4},
        distributions={"learning_rate": optuna.distributions.FloatDistribution(1e-5, 1e-3)},
        intermediate_values={1: 0.7, 2: 0.8},
        user_attrs=attrs,
    )


def test_a_results_row_is_the_stored_record_plus_the_trials_state():
    record = TrialRecord(
        recipe={"learning_rate": 1e-4}, seed=3, tag="defaults", value=0.8, best_epoch=2,
        curve=[{"epoch": 1, "accuracy": 0.7}, {"epoch": 2, "accuracy": 0.8}], examples=64,
        stopped="completed", metrics={"accuracy": 0.8}, micro_batch=16,
    )  # fmt: skip
    row = trial_row(finished_trial(record.attrs()))
    assert {k: row[k] for k in record.as_dict()} == record.as_dict()
    assert row["version"] == RECORD_VERSION
    assert (row["state"], row["value"], row["last_value"]) == ("complete", 0.8, 0.8)


def test_a_pruned_trials_row_has_no_value_though_its_record_has_its_best():
    record = TrialRecord(recipe={"learning_rate": 1e-4}, value=0.7, stopped="pruned")
    row = trial_row(finished_trial(record.attrs(), optuna.trial.TrialState.PRUNED))
    assert row["value"] is None and row["stopped"] == "pruned"


def test_a_record_stored_before_versions_reads_as_version_0_with_its_params_as_recipe():
    old = {"seed": 1, "tag": "defaults", "examples": 10}  # no version, no recipe
    row = trial_row(finished_trial(old))
    assert row["version"] == 0 and row["recipe"] == {"learning_rate": 1e-4}
    assert (row["seed"], row["examples"]) == (1, 10)


def test_a_record_from_a_newer_hypertweaks_is_refused_with_the_fix():
    with pytest.raises(ValueError, match="newer hypertweaks.*upgrade hypertweaks"):
        TrialRecord.from_attrs({"recipe": {}, "version": RECORD_VERSION + 1})
