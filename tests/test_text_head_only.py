"""A text recipe that freezes every layer trains a linear head on the frozen encoder's
mean-pooled features, computed once per study; its model saves, loads and predicts as any
other (issue 16, lever 2: the head-only candidate)."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest
import torch
from conftest import make_texts, readme_snippet

import hypertweaks
from hypertweaks import tune
from hypertweaks.config import make_experiment
from hypertweaks.evaluate import evaluate
from hypertweaks.space import Recipe
from hypertweaks.tasks.text import HEAD_FILE, MeanPooledClassifier, TextClassification
from hypertweaks.train import fit

HEAD_ONLY = {"freeze_layers": "all", "gradual_unfreeze": False, "learning_rate": 3e-3}


def recipe(**changes) -> Recipe:
    base = dict(
        learning_rate=3e-3,
        batch_size=8,
        epochs=3,
        dropout=0.0,
        weight_decay=0.0,
        schedule="linear",
        warmup_ratio=0.0,
        freeze_layers=2,
        gradual_unfreeze=False,
    )
    return Recipe(**{**base, **changes})


def test_head_only_text_recipes_train_a_head_on_features_computed_once(text_experiment, tmp_path):
    task = TextClassification(make_experiment(text_experiment), tmp_path / "cache")
    task.prepare()
    head_only = recipe(freeze_layers=task.num_layers)
    train = task.dataset(task.splits.train, True, head_only)
    validation = task.dataset(task.splits.validation, False, head_only)
    assert "features" in train.collate([0])[0]
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 2  # train and validation
    model, layers = task.build(head_only)
    assert isinstance(model, MeanPooledClassifier)
    encoder = [p.detach().clone() for p in model.encoder.parameters()]
    head = model.head.weight.detach().clone()
    fit(task, model, layers, head_only, train, validation)
    assert all(torch.equal(a, b) for a, b in zip(encoder, model.encoder.parameters(), strict=True))
    assert not torch.equal(head, model.head.weight)
    # the cached features are what the model computes from the tokens
    tokens, _ = task.dataset(task.splits.validation, False).collate([0, 1, 2])
    model.eval()
    with torch.no_grad(), task.autocast(torch.device("cpu")):  # in the precision of the cache
        from_tokens = task.forward(model, tokens).float()
        from_features = task.forward(model, validation.collate([0, 1, 2])[0]).float()
    assert torch.allclose(from_tokens, from_features, atol=1e-4)


def test_partial_freezing_and_gradual_unfreezing_keep_the_full_model(text_experiment, tmp_path):
    task = TextClassification(make_experiment(text_experiment), tmp_path / "cache")
    task.prepare()
    for kept in (recipe(freeze_layers=1), recipe(freeze_layers=2, gradual_unfreeze=True)):
        model, layers = task.build(kept)
        assert len(layers.blocks) == task.num_layers  # the encoder's layers, to freeze per epoch
        assert "input_ids" in task.dataset(task.splits.train, True, kept).collate([0])[0]


def test_fine_tuning_can_start_from_a_linear_probe_head(text_experiment, tmp_path):
    # LP-FT: the mean-pooled classifier, all layers trainable, its head from a trained probe
    from hypertweaks.train import evaluate as scores

    task = TextClassification(make_experiment(text_experiment), tmp_path / "cache")
    task.prepare()
    fine_tune = recipe(freeze_layers=0, learning_rate=5e-5)
    validation = task.dataset(task.splits.validation, False, recipe(freeze_layers=2))
    torch.manual_seed(0)
    model, layers = task.build(fine_tune)
    assert isinstance(model, MeanPooledClassifier)
    layers.set_trainable(fine_tune.freeze_layers, False, 0)
    assert all(p.requires_grad for p in model.encoder.encoder.parameters())
    fresh = copy.deepcopy(model)
    torch.manual_seed(0)
    fresh.head.reset_parameters()  # the same encoder with a fresh head
    probe_loss = scores(task, model, validation, "cpu")["loss"]
    assert probe_loss < scores(task, fresh, validation, "cpu")["loss"]  # it already fits the task
    train = task.dataset(task.splits.train, True, fine_tune)
    tokens = task.dataset(task.splits.validation, False, fine_tune)
    fit(task, model, layers, fine_tune, train, tokens)
    task.save(model, tmp_path / "saved")
    loaded = task.load(tmp_path / "saved")
    assert scores(task, loaded, tokens, "cpu") == scores(task, model, tokens, "cpu")


def test_a_head_only_study_saves_a_model_that_loads_and_scores_what_the_study_scored(
    tiny_bert, tmp_path
):
    for role, n, seed in (("train", 30, 0), ("validation", 8, 1), ("test", 8, 2)):
        make_texts(n, seed).to_csv(tmp_path / f"{role}.csv", index=False)
    result = tune(
        {
            "model": str(tiny_bert),
            "train": str(tmp_path / "train.csv"),
            "validation": str(tmp_path / "validation.csv"),
            "test": str(tmp_path / "test.csv"),
            "name": "probe",
            "runs_dir": str(tmp_path / "runs"),
            "trials": 1,
            "max_length": 16,
            "quiet": True,
            "space": {**HEAD_ONLY, "epochs": 4, "batch_size": 8, "dropout": 0.0},
        }
    )
    best = result.best_model_dir
    assert (best / HEAD_FILE).is_file() and (best / "config.json").is_file()
    model = hypertweaks.load(best)
    report = evaluate(model, tmp_path / "test.csv")
    assert report["metrics"]["accuracy"] == pytest.approx(result.test_metrics["accuracy"])
    proba = model.predict_proba(["joy happy glad", "anger mad"])
    assert proba.shape == (2, 3) and np.allclose(proba.sum(axis=1), 1.0, atol=1e-5)
    # and without hypertweaks, as the README shows
    done = readme_snippet("# text classifier", {"runs/feedback/best": str(best)})
    model.precision = "float32"  # as plain transformers computes
    expected = model.predict_proba(["the delivery was late again"])
    assert np.allclose(done["proba"].numpy(), expected, atol=1e-5)
    results = json.loads((best.parent / "results.json").read_text())
    assert (
        results["trials"][0]["recipe"]["freeze_layers"]
        == model.model.encoder.config.num_hidden_layers
    )


def test_text_studies_run_the_head_only_candidate_before_the_defaults(text_experiment, tmp_path):
    import optuna

    tune({**text_experiment, "trials": 3})
    run_dir = tmp_path / "runs" / "tiny"
    trials = json.loads((run_dir / "results.json").read_text())["trials"]
    # it costs seconds: even a budget of about one default run measures both
    assert [t["tag"] for t in trials[:2]] == ["head-only", "defaults"]
    head_only = trials[0]
    assert head_only["recipe"]["freeze_layers"] == 2 and head_only["recipe"]["epochs"] == 30
    assert head_only["state"] == "complete"  # never pruned
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")
    frozen = study.trials[0]
    # outside the search space: the sampler and the pruner never see it
    assert frozen.params == {} and frozen.intermediate_values == {}
    assert study.trials[2].params  # the sampler's trials go on as before
    # the report says what the frozen features reached against the default recipe
    report = (run_dir / "report.html").read_text()
    assert "A linear head on the frozen model" in report and "features (trial 0) reached" in report


def test_a_single_trial_study_runs_the_recommended_recipe(text_experiment, tmp_path):
    tune({**text_experiment, "trials": 1})
    trials = json.loads((tmp_path / "runs" / "tiny" / "results.json").read_text())["trials"]
    assert [t["tag"] for t in trials] == ["defaults"]


def test_a_single_trial_study_resumed_with_more_trials_runs_the_head_only_candidate(
    text_experiment, tmp_path
):
    tune({**text_experiment, "trials": 1})
    tune({**text_experiment, "trials": 3})  # the same study, resumed with a bigger budget
    trials = json.loads((tmp_path / "runs" / "tiny" / "results.json").read_text())["trials"]
    assert [t["tag"] for t in trials[:2]] == ["defaults", "head-only"]
    assert len(trials) == 3 and all(t["state"] == "complete" for t in trials[:2])
    tune({**text_experiment, "trials": 3})  # spent: nothing more runs, nothing is enqueued
    again = json.loads((tmp_path / "runs" / "tiny" / "results.json").read_text())["trials"]
    assert [t["tag"] for t in again] == [t["tag"] for t in trials]


def test_a_space_that_sets_freezing_gets_no_head_only_candidate(text_experiment, tmp_path):
    space = {**text_experiment["space"], "freeze_layers": {"low": 0, "high": 1}}
    tune({**text_experiment, "trials": 2, "space": space})
    trials = json.loads((tmp_path / "runs" / "tiny" / "results.json").read_text())["trials"]
    assert "head-only" not in [t.get("tag") for t in trials]


def test_an_interrupted_head_only_trial_is_retried_as_the_head_only_recipe(
    text_experiment, tmp_path, monkeypatch
):
    import optuna
    from conftest import patch_fit

    import hypertweaks.trial

    real_fit = hypertweaks.trial.fit

    def interrupt_head_only(task, model, layers, recipe, *args, **kwargs):
        if task.trains_head_only(recipe):
            raise KeyboardInterrupt
        return real_fit(task, model, layers, recipe, *args, **kwargs)

    patch_fit(monkeypatch, interrupt_head_only)
    with pytest.raises(KeyboardInterrupt):
        tune({**text_experiment, "trials": 3})
    patch_fit(monkeypatch, real_fit)
    tune({**text_experiment, "trials": 3})
    run_dir = tmp_path / "runs" / "tiny"
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{run_dir / 'study.db'}")
    retry = next(t for t in study.trials if t.user_attrs.get("retry_of") == 0)
    assert retry.user_attrs["tag"] == "head-only" and retry.params == {}
    assert retry.user_attrs["recipe"] == study.trials[0].user_attrs["fixed_recipe"]
    assert retry.state == optuna.trial.TrialState.COMPLETE


def test_the_head_only_candidate_keeps_the_knobs_the_user_fixed(text_experiment, tmp_path):
    # the README: "a value fixes a knob"; the head-only candidate's own settings give way
    space = {**text_experiment["space"], "epochs": 1, "batch_size": 16}
    tune({**text_experiment, "trials": 2, "space": space})
    trials = json.loads((tmp_path / "runs" / "tiny" / "results.json").read_text())["trials"]
    assert [t["tag"] for t in trials] == ["head-only", "defaults"]
    for trial in trials:
        assert trial["recipe"]["epochs"] == 1 and trial["recipe"]["batch_size"] == 16
    assert trials[0]["recipe"]["learning_rate"] == 3e-3  # what the user left open stays its own
