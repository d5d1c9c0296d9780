import json

import optuna
import pytest
import yaml
from conftest import patch_fit

import hypertweaks.trial
from hypertweaks import load_experiment, tune
from hypertweaks.backends.embedded import EmbeddedBackend
from hypertweaks.study import open_study, trial_seconds
from hypertweaks.train import Diverged


def study_trials(exp):
    storage = f"sqlite:///{exp['runs_dir']}/{exp['name']}/study.db"
    return optuna.load_study(study_name=exp["name"], storage=storage).get_trials()


def test_tune_returns_the_best_model_its_recipe_and_a_test_score(text_experiment, tmp_path):
    result = tune(text_experiment)
    run_dir = tmp_path / "runs" / "tiny"
    assert result.best_model_dir == run_dir / "best"
    assert {"config.json", "labels.json", "best.yaml", "tokenizer.json"} <= {
        p.name for p in result.best_model_dir.iterdir()
    }
    assert len(list((run_dir / "checkpoints").iterdir())) == 1  # only the best trial's weights
    assert set(result.test_metrics) == {"loss", "accuracy", "macro_f1"}

    results = json.loads((run_dir / "results.json").read_text())
    assert [t["number"] for t in results["trials"]] == [0, 1, 2]
    # the head-only candidate (seconds) goes first, then the recommended recipe
    assert [t["tag"] for t in results["trials"][:2]] == ["head-only", "defaults"]
    for trial in results["trials"]:
        assert trial["state"] in ("complete", "pruned")
        assert trial["curve"] and trial["seconds"] > 0 and trial["examples"] > 0
        assert trial["seed"] is not None and len(trial["recipe"]) == 9
    assert results["best_value"] == result.best_value
    assert results["test_metrics"] == result.test_metrics
    from hypertweaks.train import native_cpu_bfloat16  # text: bfloat16 where the CPU has it

    assert results["precision"] == ("bfloat16" if native_cpu_bfloat16() else "float32")


def test_best_yaml_reproduces_the_recipe(text_experiment):
    result = tune(text_experiment)
    refit = load_experiment(result.best_model_dir / "best.yaml")
    assert refit.space == result.best_params and refit.trials == 1
    assert yaml.safe_load((result.best_model_dir / "best.yaml").read_text())["model"]


def test_an_interrupted_study_resumes_without_repeating_finished_trials(
    text_experiment, monkeypatch
):
    first = tune({**text_experiment, "trials": 2})
    before = {t.number: (t.params, t.value) for t in study_trials(text_experiment)}
    assert len(before) == 2

    calls = []
    real_fit = hypertweaks.trial.fit

    def interrupt_second_call(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:  # the smoke run is the first call, trial 2 the second
            raise KeyboardInterrupt
        return real_fit(*args, **kwargs)

    patch_fit(monkeypatch, interrupt_second_call)
    with pytest.raises(KeyboardInterrupt):
        tune({**text_experiment, "trials": 4})
    patch_fit(monkeypatch, real_fit)

    result = tune({**text_experiment, "trials": 4})
    trials = study_trials(text_experiment)
    for number, (params, value) in before.items():  # finished trials are untouched
        assert (trials[number].params, trials[number].value) == (params, value)
    finished = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("interrupted")]
    assert len(finished) == 4
    interrupted = [t for t in trials if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1
    retry = next(t for t in trials if t.user_attrs.get("retry_of") == interrupted[0].number)
    assert retry.params == interrupted[0].params  # its recipe was tried again
    assert result.best_value >= first.best_value


def test_rerunning_a_finished_study_trains_nothing(text_experiment, monkeypatch):
    tune({**text_experiment, "trials": 2})
    monkeypatch.setattr(EmbeddedBackend, "objective", lambda *a: pytest.fail("trained"))
    result = tune({**text_experiment, "trials": 2, "smoke": False})
    assert result.trials == 2 and result.test_metrics is not None


def test_a_diverging_trial_fails_alone(text_experiment, monkeypatch):
    real_fit = hypertweaks.trial.fit
    calls = []

    def diverge_on_trial_1(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # smoke, trial 0, then trial 1
            raise Diverged("loss became nan at epoch 1, step 1")
        return real_fit(*args, **kwargs)

    patch_fit(monkeypatch, diverge_on_trial_1)
    result = tune(text_experiment)
    trials = study_trials(text_experiment)
    assert trials[1].state == optuna.trial.TrialState.FAIL
    assert "loss became nan" in trials[1].user_attrs["error"]
    assert result.trials == 3 and result.best_value is not None


def test_smoke_run_fails_fast_before_any_trial(text_experiment, monkeypatch):
    def broken_forward(self, model, inputs):
        raise RuntimeError("shape mismatch in the head")

    monkeypatch.setattr("hypertweaks.tasks.text.TextClassification.forward", broken_forward)
    with pytest.raises(RuntimeError, match="shape mismatch"):
        tune(text_experiment)
    # nothing trained: only the starting trials wait, queued for the run after the fix
    trials = study_trials(text_experiment)
    assert [(t.state, t.user_attrs["tag"]) for t in trials] == [
        (optuna.trial.TrialState.WAITING, "head-only"),
        (optuna.trial.TrialState.WAITING, "defaults"),
    ]

    monkeypatch.undo()
    result = tune({**text_experiment, "trials": 2})
    trials = study_trials(text_experiment)
    assert result.trials == 2 and trials[1].user_attrs["tag"] == "defaults"
    assert sum(t.user_attrs.get("tag") == "defaults" for t in trials) == 1


def test_a_candidate_enqueued_twice_by_workers_resuming_together_runs_once(text_experiment):
    tune({**text_experiment, "trials": 2})
    storage = f"sqlite:///{text_experiment['runs_dir']}/{text_experiment['name']}/study.db"
    study = optuna.load_study(study_name=text_experiment["name"], storage=storage)
    head_only = study.trials[0].user_attrs
    assert head_only["tag"] == "head-only"
    # what a second worker resuming at the same moment adds
    study.enqueue_trial({}, {"tag": "head-only", "fixed_recipe": head_only["fixed_recipe"]})

    result = tune({**text_experiment, "trials": 3})
    trials = study_trials(text_experiment)
    assert trials[2].user_attrs["duplicate_of"] == 0 and trials[2].user_attrs["surplus"]
    ran = [t for t in trials if t.state.is_finished() and not t.user_attrs.get("surplus")]
    assert [t.user_attrs.get("tag") for t in ran].count("head-only") == 1
    assert result.trials == 3 and len(ran) == 3  # the duplicate's place went to a sampled trial
    results = json.loads((result.best_model_dir.parent / "results.json").read_text())
    assert [t["number"] for t in results["trials"]] == [0, 1, 3]  # the duplicate never ran


def test_of_workers_opening_one_new_study_exactly_one_creates_it(text_experiment):
    # The creator alone enqueues the defaults trial, so workers that start together run it once.
    exp = load_experiment(overrides=text_experiment)
    exp.run_dir.mkdir(parents=True)
    opened = [open_study(exp, num_epochs=2) for _ in range(3)]
    assert [created for _, created in opened] == [True, False, False]
    assert len({study._study_id for study, _ in opened}) == 1


def test_a_resumed_study_must_be_the_same_search(text_experiment):
    tune({**text_experiment, "trials": 1})
    with pytest.raises(ValueError, match=r"was started with other metric \(.accuracy., now"):
        tune({**text_experiment, "trials": 2, "metric": "macro_f1"})


def test_the_timeout_counts_the_whole_study(text_experiment):
    tune({**text_experiment, "trials": 2})
    used = sum(trial_seconds(t) for t in study_trials(text_experiment))
    result = tune({**text_experiment, "trials": 10, "timeout": used * 0.9, "smoke": False})
    assert result.trials == 2  # the budget was spent by the first run
    # and the user is told that the clock, not the trials asked for, ended the search
    assert result.stopped_early.startswith("the timeout") and "after 2 of 10 trials" in (
        result.stopped_early
    )
    results = json.loads((result.results_path).read_text())
    assert results["stopped_early"] == result.stopped_early
    assert "ended the search after 2 of 10 trials" in result.report_path.read_text()


def test_no_trial_starts_that_the_time_left_cannot_hold():
    from datetime import datetime, timedelta

    from optuna.trial import TrialState, create_trial

    from hypertweaks.study import no_time_for

    def finished(tag: str, minutes: float, epochs: int = 3):
        trial = create_trial(
            state=TrialState.COMPLETE, value=0.5, user_attrs={"tag": tag, "curve": [{}] * epochs}
        )
        trial.datetime_start = datetime(2026, 1, 1)
        trial.datetime_complete = trial.datetime_start + timedelta(minutes=minutes)
        return trial

    trials = [finished("head-only", 1, 1), finished("defaults", 6)]  # 7 minutes used
    # a trial starts if the time left holds all but its last epoch, at the default's pace (2
    # minutes an epoch): it then ends at most an epoch past the timeout
    assert no_time_for(13 * 60, trials, epochs=3) is None  # 6 left: a whole run fits
    assert no_time_for(11 * 60, trials, epochs=3) is None  # 4 left: all but its last epoch
    refused = no_time_for(10 * 60, trials, epochs=3)
    assert refused == (
        "180s of the timeout left, less than the 240s a 3-epoch trial needs (all but its last "
        "epoch, at the default's pace)"
    )
    # a search trial of 5 epochs would be stopped at the timeout, scoring nothing; of 2, it fits
    assert "less than the 480s a 5-epoch trial" in no_time_for(13 * 60, trials, epochs=5)
    assert no_time_for(10 * 60, trials, epochs=2) is None
    assert no_time_for(9 * 60, trials, epochs=1) is None  # a one-epoch trial needs one
    assert "less than the 120s a 1-epoch trial" in no_time_for(8 * 60, trials, epochs=1)
    assert no_time_for(None, trials, epochs=3) is None  # no timeout
    assert no_time_for(60, trials[:1], epochs=3) is None  # no measured default yet
    # the time kept back for the final model's refit is not the search's
    assert no_time_for(13 * 60, trials, epochs=3, reserve=120) is None  # 4 left: it fits
    assert "left (past the 121s kept for the refit)" in no_time_for(
        13 * 60, trials, epochs=3, reserve=121
    )


def test_a_timeout_is_not_overrun_by_a_run_it_cannot_hold(text_experiment):
    tune({**text_experiment, "trials": 2, "smoke": False})  # head-only and the default
    trials = study_trials(text_experiment)
    run = trial_seconds(trials[1])
    used = sum(map(trial_seconds, trials))
    # more trials, but less time than a soup run or an epoch of the default: nothing starts
    result = tune({**text_experiment, "trials": 10, "timeout": used + 0.3 * run, "smoke": False})
    assert result.trials == 2
    skipped = [t for t in study_trials(text_experiment) if t.user_attrs.get("skipped")]
    assert skipped and all(t.user_attrs.get("surplus") for t in skipped)
    assert "trial needs (all but its last epoch" in skipped[0].user_attrs["skipped"]
    assert len(json.loads(result.results_path.read_text())["trials"]) == 2


def test_a_search_trial_that_could_not_end_is_not_started(text_experiment):
    exp = {
        **text_experiment,
        "final_model": "kept",  # no soup runs: the third trial is a search trial
        "space": {**text_experiment["space"], "epochs": 3},
        "smoke": False,
    }
    tune({**exp, "trials": 2})  # head-only and the default
    trials = study_trials(text_experiment)
    epoch = trial_seconds(trials[1]) / len(trials[1].user_attrs["curve"])
    used = sum(map(trial_seconds, trials))
    # an epoch and a half left: one epoch fits, but a trial of three would be stopped at the
    # timeout and score nothing
    result = tune({**exp, "trials": 10, "timeout": used + 1.5 * epoch})
    assert result.trials == 2
    skipped = [t for t in study_trials(text_experiment) if t.user_attrs.get("skipped")]
    assert len(skipped) == 1 and "a 3-epoch trial needs" in skipped[0].user_attrs["skipped"]


def test_the_timeout_stops_a_search_trial_at_the_end_of_its_epoch(text_experiment, monkeypatch):
    from datetime import datetime, timedelta

    from optuna.trial import TrialState, create_trial

    from hypertweaks.backends import embedded
    from hypertweaks.report import reading
    from hypertweaks.study import timeout_passed

    done = create_trial(state=TrialState.COMPLETE, value=0.5)
    done.datetime_start = datetime(2026, 1, 1)
    done.datetime_complete = done.datetime_start + timedelta(minutes=5)
    assert not timeout_passed(10 * 60, [done], running_seconds=299)
    assert timeout_passed(10 * 60, [done], running_seconds=300)
    assert not timeout_passed(None, [done], running_seconds=10**6)
    assert timeout_passed(10 * 60, [done], running_seconds=240, reserve=60)  # kept for a refit

    # the timeout passes during every trial: the starting recipes still run whole (the
    # default is the recipe the study trusts most), a search trial stops after one epoch
    monkeypatch.setattr(embedded, "timeout_passed", lambda timeout, trials, seconds, reserve: True)
    exp = {
        **text_experiment,
        "trials": 3,
        "timeout": 3600,
        "final_model": "kept",  # no soup runs: the third trial is a search trial
        "space": {**text_experiment["space"], "epochs": 3},
    }
    result = tune(exp)
    results = json.loads(result.results_path.read_text())
    starts, search = results["trials"][:2], results["trials"][2]
    assert [r["state"] for r in starts] == ["complete", "complete"]
    assert len(starts[1]["curve"]) == 3  # the default's every epoch
    assert search["state"] == "pruned" and search["stopped"] == "timeout"
    assert len(search["curve"]) == 1
    assert "1 of 3 trials were pruned (1 stopped by the timeout)" in " ".join(reading(results, {}))


def test_pruned_trials_are_recorded_with_their_curve(text_experiment):
    exp = {
        **text_experiment,
        "trials": 6,
        "pruner": "median",
        "final_model": "kept",  # no soup runs: every trial after the starts is a search trial
        "space": {**text_experiment["space"], "epochs": 3},
    }
    tune(exp)
    trials = study_trials(exp)
    for trial in trials:
        # the head-only candidate is outside the space: the pruner never sees its curve
        reported = (
            0 if "fixed_recipe" in trial.user_attrs else trial.user_attrs["curve"][-1]["epoch"]
        )
        assert len(trial.intermediate_values) == reported
