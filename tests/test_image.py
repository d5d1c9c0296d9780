import json
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from hypertweaks import DataError, ModelError, tune
from hypertweaks.backbones import map_state_dict
from hypertweaks.config import make_experiment
from hypertweaks.tasks.image import ImageClassification, positive_class

timm = pytest.importorskip("timm")


def write_images(root, counts, seed=0, mode="L"):
    """Class 'defect' has a bright square on noise; class 'ok' is noise only."""
    rng = np.random.default_rng(seed)
    for label, count in counts.items():
        (root / label).mkdir(parents=True, exist_ok=True)
        for i in range(count):
            pixels = rng.integers(0, 90, size=(40, 40), dtype=np.uint8)
            if label == "defect":
                x, y = rng.integers(4, 24, size=2)
                pixels[y : y + 12, x : x + 12] = 255
            image = Image.fromarray(pixels, "L")
            (image.convert("RGB") if mode == "RGB" else image).save(root / label / f"{i}.png")
    return root


@pytest.fixture(scope="session")
def tiny_cnn_weights(tmp_path_factory):
    """A tiny random timm EfficientNet as a local weights file (its names, 1000 classes)."""
    path = tmp_path_factory.mktemp("weights") / "tiny.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("test_efficientnet").state_dict(), path)
    return path


@pytest.fixture
def image_experiment(tmp_path, tiny_cnn_weights):
    return {
        "task": "image-classification",
        "model": "test_efficientnet",
        "weights": str(tiny_cnn_weights),
        "train": str(write_images(tmp_path / "train", {"defect": 24, "ok": 24})),
        "test": str(write_images(tmp_path / "test", {"defect": 8, "ok": 8}, seed=1)),
        "image_size": 32,
        "name": "img",
        "runs_dir": str(tmp_path / "runs"),
        "trials": 3,
        "quiet": True,
        "metric": "roc_auc",
        "space": {"epochs": {"low": 1, "high": 3}, "batch_size": [8, 16]},
    }


def test_tunes_an_image_folder_end_to_end(image_experiment):
    result = tune(image_experiment)
    assert {"accuracy", "macro_f1", "roc_auc", "defect_recall"} <= set(result.test_metrics)
    labels = json.loads((result.best_model_dir / "labels.json").read_text())
    assert labels["classes"] == ["defect", "ok"] and labels["positive_class"] == 0
    assert (result.best_model_dir / "model.safetensors").exists()


def test_reads_a_table_of_image_paths(image_experiment, tmp_path):
    rows = [
        {"path": f"train/{label}/{i}.png", "kind": label}
        for label in ("defect", "ok")
        for i in range(24)
    ]
    pd.DataFrame(rows).to_csv(tmp_path / "images.csv", index=False)
    exp = make_experiment(
        {
            **image_experiment,
            "train": str(tmp_path / "images.csv"),
            "image_column": "path",
            "label_column": "kind",
        }
    )
    task = ImageClassification(exp, tmp_path / "cache")
    task.prepare()
    assert len(task.splits.train) + len(task.splits.validation) == 48


def test_a_copy_of_the_training_images_is_refused_as_test(image_experiment, tmp_path):
    validation = write_images(tmp_path / "val", {"defect": 4, "ok": 4}, seed=2)
    image_experiment = {**image_experiment, "validation": str(validation)}
    shutil.copytree(tmp_path / "train", tmp_path / "copy")
    exp = make_experiment({**image_experiment, "test": str(tmp_path / "copy")})
    with pytest.raises(DataError, match=r"48 of 48 test .* are also in train \(the same pixels"):
        ImageClassification(exp, tmp_path / "cache").prepare()
    # two copied pictures among new ones: a warning
    for label in ("defect", "ok"):
        shutil.copy(tmp_path / "train" / label / "0.png", tmp_path / "test" / label / "copy.png")
    task = ImageClassification(make_experiment(image_experiment), tmp_path / "cache")
    task.prepare()
    assert any(n.startswith("warning: 2 of 18 test") for n in task.splits.notes)


def test_rgb_and_grayscale_images_become_three_channels(image_experiment, tmp_path):
    write_images(tmp_path / "rgb", {"defect": 4, "ok": 4}, mode="RGB")
    exp = make_experiment({**image_experiment, "train": str(tmp_path / "rgb"), "test": None})
    task = ImageClassification(exp, tmp_path / "cache")
    task.prepare()
    inputs, _ = task.dataset(task.splits.train, False).collate([0, 1])
    assert inputs["pixel_values"].shape == (2, 3, 32, 32)


def test_head_only_recipes_train_on_cached_features(image_experiment, tmp_path):
    # freezing the whole backbone: features computed once, then only the classifier trains
    exp = make_experiment({**image_experiment, "space": {"freeze_layers": "all", "epochs": 2}})
    task = ImageClassification(exp, tmp_path / "cache")
    task.prepare()
    from hypertweaks.space import resolve_space, suggest
    from hypertweaks.train import fit

    class Fixed:  # a trial that takes every knob's first value
        def suggest_categorical(self, name, choices):
            return choices[0]

        def suggest_float(self, name, low, high, log=False):
            return low

        suggest_int = suggest_float

    recipe = suggest(Fixed(), resolve_space(exp.space, task.num_layers))
    train = task.dataset(task.splits.train, True, recipe)
    assert "features" in train.collate([0])[0]
    assert len(list((tmp_path / "cache").glob("features-*.pt"))) == 1
    model, layers = task.build(recipe)
    backbone = [p.detach().clone() for p in model.blocks.parameters()]
    fit(task, model, layers, recipe, train, task.dataset(task.splits.validation, False, recipe))
    assert all(torch.equal(a, b) for a, b in zip(backbone, model.blocks.parameters(), strict=True))


def test_fine_tuning_starts_from_a_linear_probe_head(image_experiment, tmp_path):
    # LP-FT, as text: a recipe that trains the backbone gets a head that already fits the task
    from hypertweaks.space import Recipe
    from hypertweaks.train import evaluate

    task = ImageClassification(make_experiment(image_experiment), tmp_path / "cache")
    task.prepare()
    fine_tune = Recipe(1e-3, 8, 2, 0.2, 0.01, "cosine", 0.05, 0, False)
    torch.manual_seed(0)
    model, layers = task.build(fine_tune)
    fresh, _ = task._load(dropout=0.2)
    assert torch.equal(model.conv_stem.weight, fresh.conv_stem.weight)  # the backbone untouched
    validation = task.dataset(task.splits.validation, False)
    assert (
        evaluate(task, model, validation, "cpu")["loss"]
        < evaluate(task, fresh, validation, "cpu")["loss"]
    )
    torch.manual_seed(0)
    again, _ = task.build(fine_tune)  # the features now cached: the same probe
    assert torch.equal(again.get_classifier().weight, model.get_classifier().weight)
    task.probe_start = False
    torch.manual_seed(0)
    plain, _ = task.build(fine_tune)
    assert not torch.equal(plain.get_classifier().weight, model.get_classifier().weight)


def test_backbone_stages_are_the_freezable_layers(image_experiment, tmp_path):
    exp = make_experiment(image_experiment)
    task = ImageClassification(exp, tmp_path / "cache")
    task.prepare()
    model, layers = task._load(dropout=0.1)
    assert task.num_layers == len(model.blocks) + 1  # the stages, then the neck (conv_head)
    classifier = {id(p) for p in model.get_classifier().parameters()}
    assert {id(p) for p in layers.top} == classifier


def test_positive_class_is_found_by_name():
    assert positive_class(["defective", "functional"]) == 0
    assert positive_class(["free", "crack"]) == 1


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: (root / "train" / "empty").mkdir(), "class folder .*empty.* holds no images"),
        (
            lambda root: (root / "train" / "ok" / "broken.png").write_bytes(b"not an image"),
            "cannot read image .*broken.png",
        ),
        (lambda root: write_images(root / "train", {"lonely": 1}), "class 'lonely' has only 1"),
    ],
)
def test_bad_image_data_is_a_clear_error_before_training(
    image_experiment, tmp_path, setup, message
):
    setup(tmp_path)
    with pytest.raises(DataError, match=message):
        tune(image_experiment)


def test_missing_image_paths_in_a_table(image_experiment, tmp_path):
    pd.DataFrame({"image": ["nope.png", "train/ok/0.png"], "label": ["a", "b"]}).to_csv(
        tmp_path / "t.csv", index=False
    )
    with pytest.raises(DataError, match="1 of 2 image paths .* missing files, e.g. .*nope.png"):
        tune({**image_experiment, "train": str(tmp_path / "t.csv")})


def test_weights_for_another_architecture_are_refused(tmp_path):
    model = timm.create_model("test_efficientnet")
    wrong = {k: v for k, v in list(model.state_dict().items())[:-3]}
    with pytest.raises(ModelError, match="have .* tensors but"):
        map_state_dict({f"_x{i}": v for i, v in enumerate(wrong.values())}, model, tmp_path)
    shuffled = dict(reversed(list(model.state_dict().items())))
    with pytest.raises(ModelError, match="do not fit the model"):
        map_state_dict({f"_{k}": v for k, v in shuffled.items()}, model, tmp_path)


def test_unknown_backbone_name(image_experiment):
    with pytest.raises(ModelError, match="unknown model 'efficientnet_lite9'"):
        tune({**image_experiment, "model": "efficientnet_lite9"})


def test_images_hand_over_the_kept_recipe_refit_on_every_labelled_row(
    image_experiment, monkeypatch
):
    from hypertweaks import load, refit
    from hypertweaks.train import fit

    calls = []

    def recorded_fit(task, model, layers, recipe, train_data, val_data, **kwargs):
        calls.append((len(train_data), val_data, kwargs.get("stop_after")))
        return fit(task, model, layers, recipe, train_data, val_data, **kwargs)

    monkeypatch.setattr(refit, "fit", recorded_fit)
    exp = {**image_experiment, "trials": 2}  # no validation: 15% of the 48 carved from train
    result = tune(exp)
    done = result.refit
    kept = json.loads(result.results_path.read_text())["trials"][done["trial"]]
    # every labelled row, no validation score, the kept recipe's whole schedule
    assert calls == [(48, None, None)]
    assert done["kept"] and done["rows"] == 48 and done["epochs"] == kept["recipe"]["epochs"]
    assert done["estimate"] == result.best_value == kept["value"]
    assert result.best_model_dir.resolve().name == f"refit-{done['trial']}"
    assert json.loads(result.results_path.read_text())["refit"] == done
    assert (
        "refit on train + validation (48 rows)" in (result.best_model_dir / "best.yaml").read_text()
    )
    classifier = load(result.best_model_dir)
    images = sorted(str(p) for p in (Path(exp["test"]) / "ok").iterdir())[:2]
    assert len(classifier.predict(images)) == 2

    again = tune(exp)  # resumed with nothing left to do: the refit is not made twice
    assert again.refit == done and len(calls) == 1
    assert again.test_metrics == result.test_metrics

    kept_only = tune({**exp, "name": "kept", "final_model": "kept"})
    assert kept_only.refit is None and len(calls) == 1


def test_the_refit_is_refused_where_it_is_not_measured(image_experiment, text_experiment):
    from hypertweaks.config import ConfigError

    with pytest.raises(ConfigError, match="final_model 'soup' is not one of image-classification"):
        make_experiment({**image_experiment, "final_model": "soup"})
    with pytest.raises(ConfigError, match="final_model 'refit' is not one of text-classification"):
        make_experiment({**text_experiment, "final_model": "refit"})


def test_a_refit_needs_its_epochs_at_its_trial_s_pace_on_more_rows():
    from datetime import datetime, timedelta

    from optuna.trial import TrialState, create_trial

    from hypertweaks.refit import refit_need

    trial = create_trial(
        state=TrialState.COMPLETE,
        value=0.5,
        user_attrs={"curve": [{}] * 3, "best_epoch": 1, "recipe": {"epochs": 5}},
    )
    trial.datetime_start = datetime(2026, 1, 1)
    trial.datetime_complete = trial.datetime_start + timedelta(minutes=6)
    # 2 minutes an epoch (3 run, early stopped), 1.2 times the rows: 2.4 minutes an epoch, all
    # but the last of the recipe's 5, whatever epoch the trial chose
    assert refit_need(trial, 1.2) == pytest.approx(4 * 144)
    assert refit_need(trial, 1.2, whole=True) == pytest.approx(5 * 144)
    trial.user_attrs["recipe"] = {"epochs": 1}
    assert refit_need(trial, 1.2) == pytest.approx(144)  # at least one
    assert refit_need(create_trial(state=TrialState.COMPLETE, value=0.5), 1.2) is None


def test_the_reserve_is_the_refit_of_the_model_on_disk(image_experiment, tmp_path):
    from datetime import datetime, timedelta
    from types import SimpleNamespace

    from optuna.trial import TrialState, create_trial

    from hypertweaks.checkpoints import BestCheckpoint
    from hypertweaks.refit import refit_reserve

    trials = []
    for number, minutes in ((0, 6), (1, 3)):
        trial = create_trial(
            state=TrialState.COMPLETE,
            value=0.5,
            user_attrs={"curve": [{}] * 3, "best_epoch": 2, "recipe": {"epochs": 3}},
        )
        trial.number = number
        trial.datetime_start = datetime(2026, 1, 1)
        trial.datetime_complete = trial.datetime_start + timedelta(minutes=minutes)
        trials.append(trial)
    task = SimpleNamespace(splits=SimpleNamespace(train=[0] * 80, validation=[0] * 20))
    best = BestCheckpoint(tmp_path / "run", "maximize")
    exp = make_experiment({**image_experiment, "timeout": 3600})
    assert refit_reserve(exp, task, trials, best) == 0  # no model kept yet
    best.offer(1, 0.5, lambda folder: None)
    # trial 1's pace (1 minute an epoch) on 1.25 times its rows, its 3 epochs whole: the search
    # trial that ends an epoch past its share still leaves the refit all but its last epoch
    assert refit_reserve(exp, task, trials, best) == pytest.approx(225)
    kept = make_experiment({**image_experiment, "timeout": 3600, "final_model": "kept"})
    assert refit_reserve(kept, task, trials, best) == 0
    assert refit_reserve(make_experiment(image_experiment), task, trials, best) == 0  # trials


def test_a_refit_worse_on_the_rows_it_trained_on_is_not_handed_over(image_experiment, monkeypatch):
    from hypertweaks import refit

    scored = []

    def unsettled(task, model, data, device):
        scored.append(len(data))
        return {"roc_auc": 0.0}  # below any trial's score: the refit learned nothing

    monkeypatch.setattr(refit, "evaluate", unsettled)
    exp = {**image_experiment, "trials": 2}
    result = tune(exp)
    done = result.refit
    assert scored == [7]  # the validation rows (15% of 48), which it trained on
    assert not done["kept"] and done["trained_on"] == 0.0 and "did not learn" in done["skipped"]
    assert result.best_model_dir.resolve().name == f"trial-{done['trial']}"  # the trial's model
    again = tune(exp)
    assert again.refit == done and scored == [7]  # not refit again on resume


def test_the_bench_scores_the_refit_after_every_epoch_and_hands_over_its_last(image_experiment):
    """bench.images --refit-curve: the refit's whole schedule scored on test and on its
    trained-on validation rows after every epoch; the model handed over is its last epoch's."""
    from bench.images import scored_refit

    curve = []
    exp = {**image_experiment, "trials": 1, "space": {"epochs": 3, "batch_size": 8}}
    with scored_refit(curve):
        result = tune(exp)
    assert result.refit["kept"] and result.refit["epochs"] == 3
    assert [point["epoch"] for point in curve] == [1, 2, 3]
    assert result.refit["trained_on"] == curve[-1]["trained_on"]["roc_auc"]
    assert result.test_metrics["roc_auc"] == pytest.approx(curve[-1]["test"]["roc_auc"])


def test_the_refit_rows_reuse_the_decoded_images_and_features(image_experiment, tmp_path):
    from hypertweaks.refit import every_labelled_row
    from hypertweaks.tasks import image

    task = ImageClassification(make_experiment(image_experiment), tmp_path / "cache")
    task.prepare()
    train, validation = task.splits.train, task.splits.validation
    features = torch.cat([task._features(train).features, task._features(validation).features])
    pixels = torch.cat([task._images(train), task._images(validation)])

    def never(*args, **kwargs):
        raise AssertionError("computed again")

    rows = every_labelled_row(task)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(image, "load_images_cached", never)
        patch.setattr(ImageClassification, "_compute_features", never)
        assert torch.equal(rows._images(rows.splits.train), pixels)
        assert torch.equal(rows._features(rows.splits.train).features, features)
    assert len(rows.splits.train) == len(train) + len(validation)
