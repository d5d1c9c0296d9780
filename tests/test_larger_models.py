"""larger_models: the largest backbone whose default run the timeout holds is tuned, the choice is
kept when the study resumes, and a setting that cannot work is refused before any compute."""

import json
import math
from pathlib import Path

import pytest
import yaml
from conftest import make_bert

import hypertweaks.larger_models as larger
from hypertweaks import tune
from hypertweaks.config import ConfigError, load_experiment, make_experiment


@pytest.fixture(scope="session")
def wider_bert(tmp_path_factory) -> Path:
    """The tiny BERT's vocabulary on a wider, deeper encoder: the 'larger model'."""
    return make_bert(tmp_path_factory.mktemp("wider-bert"), hidden_size=64, layers=3)


def costing(seconds: float, layers: int = 3) -> larger.RunEstimate:
    """An estimate whose whole default run takes `seconds` (30 training rows, one epoch)."""
    return larger.RunEstimate(
        seconds / 40, seconds / 120, train_rows=30, validation_rows=0, epochs=1, layers=layers
    )


def costed(estimates: dict[str, float]):
    return lambda exp, device: costing(estimates[exp.model])


def with_larger(text_experiment, wider_bert, timeout):
    return {**text_experiment, "larger_models": [str(wider_bert)], "timeout": timeout}


@pytest.mark.parametrize(
    "change, says",
    [
        ({"timeout": None}, "needs a timeout"),
        ({"task": "image-classification"}, "is for text-classification"),
        ({"larger_models": ["same"], "model": "same"}, "given twice"),
        ({"larger_models": ["a", "a"]}, "given twice"),
        ({"larger_models": [" "]}, "empty model name"),
    ],
)
def test_larger_models_that_cannot_work_are_refused(text_experiment, change, says):
    data = {**text_experiment, "larger_models": ["bigger"], "timeout": 3600, **change}
    with pytest.raises((ConfigError, ValueError), match=says):
        make_experiment(data)


def test_a_yaml_files_larger_models_are_relative_to_it(text_experiment, wider_bert, tmp_path):
    folder = wider_bert.parent
    path = folder / "experiment.yaml"
    data = {**text_experiment, "timeout": 3600, "larger_models": [wider_bert.name, "org/hub-id"]}
    path.write_text(yaml.safe_dump(data))
    exp = load_experiment(path)
    assert exp.larger_models == [str(wider_bert), "org/hub-id"]


def test_the_estimate_is_a_positive_number_of_seconds(text_experiment, wider_bert):
    exp = make_experiment({**text_experiment, "model": str(wider_bert)})
    estimate = larger.estimate_default_run(exp, larger.torch.device("cpu"))
    seconds = estimate.seconds()
    assert 0 < seconds < 600 and math.isfinite(seconds)
    assert estimate.layers == 3
    assert 0 < estimate.forward_per_example < estimate.per_example  # no backward pass
    # freezing the lowest layers costs less, and never more than MOST_FROZEN_SHARE are frozen
    assert estimate.seconds(2) < estimate.seconds(1) < seconds
    assert estimate.fitting_freeze(seconds) == 0
    assert estimate.fitting_freeze(estimate.seconds(1)) == 1
    assert estimate.fitting_freeze(estimate.seconds(2) * 0.99) is None
    assert estimate.fitting_freeze(estimate.seconds(1), may_freeze=False) is None


def test_the_timeout_decides_and_the_choice_is_kept(text_experiment, wider_bert, monkeypatch):
    estimates = {str(wider_bert): 100.0}
    monkeypatch.setattr(larger, "estimate_default_run", costed(estimates))
    device, said = larger.torch.device("cpu"), []

    short = make_experiment(with_larger(text_experiment, wider_bert, 40))  # < 50 s, 2 frozen
    exp, choice = larger.choose_backbone(short, device, said.append)
    assert exp.model == text_experiment["model"] and choice["model"] == exp.model
    assert choice["estimated_seconds"] == {str(wider_bert): 100.0}
    assert "does not hold" in said[0]
    assert "holds none of the larger models" in larger.describe_backbone(choice)

    # the same study resumed with a longer timeout keeps its backbone: no estimate is made
    monkeypatch.setattr(larger, "estimate_default_run", lambda exp, device: 1 / 0)
    longer = make_experiment(with_larger(text_experiment, wider_bert, 3600))
    exp, choice = larger.choose_backbone(longer, device, said.append)
    assert exp.model == text_experiment["model"] and "kept" in choice

    # --fresh chooses again
    monkeypatch.setattr(larger, "estimate_default_run", costed(estimates))
    fresh = make_experiment({**with_larger(text_experiment, wider_bert, 3600), "fresh": True})
    exp, choice = larger.choose_backbone(fresh, device, said.append)
    assert exp.model == str(wider_bert) and exp.larger_models == []
    stored = json.loads((exp.run_dir / larger.CHOICE_FILE).read_text())
    assert stored["model"] == str(wider_bert)


def test_a_larger_model_whose_whole_run_does_not_fit_is_tuned_with_its_lowest_layers_frozen(
    text_experiment, wider_bert, monkeypatch
):
    def slow(exp, device):  # the estimate's time is paid from the timeout
        larger.time.sleep(0.5)
        return costing(100.0)

    monkeypatch.setattr(larger, "estimate_default_run", slow)
    said = []
    exp = make_experiment(with_larger(text_experiment, wider_bert, 80))  # 1 frozen: 75 s
    exp, choice = larger.choose_backbone(exp, larger.torch.device("cpu"), said.append)
    assert exp.model == str(wider_bert) and choice["freeze_layers"] == 1
    assert 0.5 <= choice["choosing_seconds"] < 4
    assert exp.timeout == pytest.approx(80 - choice["choosing_seconds"])
    # a choice that took the whole timeout leaves the study less than the user gave, not more
    assert larger._tuned(exp, {**choice, "choosing_seconds": 200}).timeout < 1e-2
    assert "holds one with the lowest 1 of 3 layers frozen" in said[0]
    assert "with its lowest 1 layers frozen" in larger.describe_backbone(choice)
    # a user who set freeze_layers in the space keeps it: no layer is frozen for them
    mine = {**with_larger(text_experiment, wider_bert, 80), "fresh": True}
    mine["space"] = {**mine["space"], "freeze_layers": {"low": 0, "high": 1}}
    exp, choice = larger.choose_backbone(make_experiment(mine), larger.torch.device("cpu"))
    assert exp.model == text_experiment["model"] and "freeze_layers" not in choice

    # the study's default recipe (and its soup runs) freeze them; 2 is past the space's range
    data = {**with_larger(text_experiment, wider_bert, 60), "trials": 3, "fresh": True}
    result = tune(data)  # 2 frozen: 50 s
    assert result.backbone["freeze_layers"] == 2
    trials = json.loads(result.results_path.read_text())["trials"]
    defaults = [t for t in trials if t.get("tag", "").startswith("defaults")]
    assert defaults and all(t["recipe"]["freeze_layers"] == 2 for t in defaults)


def test_a_study_tunes_the_larger_model_the_timeout_holds(text_experiment, wider_bert, monkeypatch):
    import hypertweaks.search

    def slow_smoke(*args):  # a larger encoder's first forward pass runs in the smoke run
        larger.time.sleep(1.0)
        return smoke_trial(*args)

    smoke_trial = hypertweaks.search.smoke_trial
    monkeypatch.setattr(hypertweaks.search, "smoke_trial", slow_smoke)
    data = with_larger(text_experiment, wider_bert, 3600)
    result = tune({**data, "trials": 2})
    assert result.backbone["model"] == str(wider_bert)
    results = json.loads(result.results_path.read_text())
    assert results["backbone"]["model"] == str(wider_bert)
    # the choice and the smoke run (with the first pass its estimate priced) are paid from the
    # timeout: the trials had what is left
    paid = results["backbone"]["choosing_seconds"] + results["backbone"]["smoke_seconds"]
    assert results["backbone"]["smoke_seconds"] >= 1.0
    assert results["budget"]["timeout_seconds"] == pytest.approx(3600 - paid, abs=0.11)
    assert "the largest offered" in larger.describe_backbone(result.backbone)
    saved = json.loads((result.best_model_dir / "config.json").read_text())
    assert saved["hidden_size"] == 64  # the wider encoder's weights were tuned and saved
    best = yaml.safe_load((result.best_model_dir / "best.yaml").read_text())
    assert best["model"] == str(wider_bert) and best["larger_models"] == []
    make_experiment(best)  # retrains without a timeout: no larger model is left to choose


def test_a_worker_on_another_machine_joins_the_backbone_the_study_started_on(
    text_experiment, wider_bert, tmp_path, monkeypatch
):
    """Workers share the storage, not RUN_DIR: the stored study tells the backbone."""
    storage = f"sqlite:///{tmp_path / 'shared.db'}"
    data = {**with_larger(text_experiment, wider_bert, 3600), "storage": storage, "trials": 1}
    data["space"] = {**data["space"], "epochs": 1}
    first = tune(data)
    assert first.backbone["model"] == str(wider_bert)
    monkeypatch.setattr(larger, "estimate_default_run", lambda exp, device: 1 / 0)
    elsewhere = {**data, "runs_dir": str(tmp_path / "other-machine"), "trials": 2}
    exp, choice = larger.choose_backbone(make_experiment(elsewhere), larger.torch.device("cpu"))
    assert exp.model == str(wider_bert) and "kept" in choice
    assert "freeze_layers" not in choice

    # a study whose default recipe froze the larger model's lowest layers: so does the worker's
    monkeypatch.setattr(larger, "estimate_default_run", costed({str(wider_bert): 100.0}))
    frozen = {**data, "name": "frozen", "timeout": 60}  # 2 frozen: 50 s
    assert tune(frozen).backbone["freeze_layers"] == 2
    monkeypatch.setattr(larger, "estimate_default_run", lambda exp, device: 1 / 0)
    elsewhere = {**frozen, "runs_dir": str(tmp_path / "other-machine"), "trials": 2}
    exp, choice = larger.choose_backbone(make_experiment(elsewhere), larger.torch.device("cpu"))
    assert exp.model == str(wider_bert) and choice["freeze_layers"] == 2


def test_a_study_on_the_users_own_model_keeps_its_smoke_run_outside_the_timeout(text_experiment):
    exp = make_experiment({**text_experiment, "timeout": 600})
    kept = {"model": exp.model, "candidates": [exp.model, "m"], "estimated_seconds": {"m": 900.0}}
    assert larger.smoke_run_paid(exp, kept, 30.0) is None
    assert larger.smoke_run_paid(exp, None, 30.0) is None
    paid, choice = larger.smoke_run_paid(exp, {**kept, "model": "m"}, 30.0)
    assert paid.timeout == 570.0 and choice["smoke_seconds"] == 30.0


def test_a_timeout_that_held_many_default_runs_points_to_a_larger_encoder(text_experiment):
    exp = make_experiment({**text_experiment, "timeout": 3600})
    hint = larger.larger_model_hint(exp, {"units": 9.6})
    assert "held 9.6 runs of the default recipe" in hint and "--larger-model" in hint
    assert larger.larger_model_hint(exp, {"units": 3.0}) is None  # the soup still had room
    assert larger.larger_model_hint(exp, {"units": None}) is None  # no default run finished
    offered = make_experiment({**text_experiment, "timeout": 3600, "larger_models": ["m"]})
    assert larger.larger_model_hint(offered, {"units": 9.6}) is None
    trials_only = make_experiment(text_experiment)  # a number of trials, not a time budget
    assert larger.larger_model_hint(trials_only, {"units": 9.6}) is None
