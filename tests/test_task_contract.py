"""The task contract (tasks.base.TaskBase), the same for every task kind: a trial trains,
reports each epoch, can be pruned, frees its model, and its saved model reloads to the same
validation score; datasets are cached by what they hold."""

import gc
import json
import weakref

import pytest
import torch
from conftest import make_texts
from lm_fixtures import build_tiny_llama, make_pairs, write_jsonl

from hypertweaks.checkpoints import BestCheckpoint
from hypertweaks.config import make_experiment
from hypertweaks.kinds import KINDS, default_recipe
from hypertweaks.space import Recipe
from hypertweaks.tasks import make_task
from hypertweaks.train import evaluate
from hypertweaks.trial import run_trial

CPU = torch.device("cpu")


def text_setup(tmp_path, tiny_bert):
    for role, n in (("train", 16), ("validation", 6)):
        make_texts(n, seed=len(role)).to_csv(tmp_path / f"{role}.csv", index=False)
    return {
        "model": str(tiny_bert),
        "train": str(tmp_path / "train.csv"),
        "validation": str(tmp_path / "validation.csv"),
        "max_length": 16,
    }


def image_setup(tmp_path, tiny_bert):
    timm = pytest.importorskip("timm")
    from test_image import write_images

    weights = tmp_path / "tiny.pth"
    torch.manual_seed(0)
    torch.save(timm.create_model("test_efficientnet").state_dict(), weights)
    return {
        "task": "image-classification",
        "model": "test_efficientnet",
        "weights": str(weights),
        "train": str(write_images(tmp_path / "train", {"defect": 12, "ok": 12})),
        "validation": str(write_images(tmp_path / "val", {"defect": 4, "ok": 4}, seed=1)),
        "image_size": 32,
    }


def lm_setup(tmp_path, tiny_bert):
    pytest.importorskip("peft")
    return {
        "task": "causal-lm",
        "model": str(build_tiny_llama(tmp_path / "llama")),
        "train": str(write_jsonl(tmp_path / "train.jsonl", make_pairs(8))),
        "validation": str(write_jsonl(tmp_path / "val.jsonl", make_pairs(3, seed=1))),
        "max_length": 32,
    }


SETUPS = {
    "text-classification": text_setup,
    "image-classification": image_setup,
    "causal-lm": lm_setup,
}


@pytest.fixture(params=list(KINDS))  # every registered task kind
def prepared(request, tmp_path, tiny_bert):
    assert request.param in SETUPS, f"task kind {request.param!r}: add its tiny setup to SETUPS"
    fields = SETUPS[request.param](tmp_path, tiny_bert)
    exp = make_experiment({**fields, "runs_dir": str(tmp_path / "runs"), "trials": 1})
    task = make_task(exp, tmp_path / "cache")
    task.prepare()
    recipe = default_recipe(exp.task, task.pretrained_dropout)
    recipe = Recipe(**{**recipe, "epochs": 2, "batch_size": 8, "warmup_ratio": 0.0})
    return exp, task, recipe


def watch_models(task, monkeypatch) -> list:
    """Weak references to every model the task builds."""
    built, build = [], task.build

    def tracked(recipe):
        model, layers = build(recipe)
        built.append(weakref.ref(model))
        return model, layers

    monkeypatch.setattr(task, "build", tracked)
    return built


def test_a_trial_trains_reports_each_epoch_frees_its_model_and_reloads(prepared, monkeypatch):
    exp, task, recipe = prepared
    built = watch_models(task, monkeypatch)
    best = BestCheckpoint(exp.run_dir, exp.direction)
    epochs = []
    record = run_trial(
        exp, task, recipe, number=0, seed=0, device=CPU, best=best,
        on_epoch=lambda report: epochs.append(report.epoch) and False,
    )  # fmt: skip
    assert epochs == [1, 2] and [row["epoch"] for row in record.curve] == [1, 2]
    assert record.stopped == "completed" and record.examples > 0
    gc.collect()
    assert len(built) == 1 and built[0]() is None  # the model's memory went back
    assert best.meta() == {"trial": 0, "value": record.value, "tag": ""}
    model = task.load(best.link)
    score = evaluate(task, model, task.dataset(task.splits.validation, False), CPU)
    assert score[exp.metric] == pytest.approx(record.value, rel=1e-4, abs=1e-5)


def test_a_pruned_trial_stops_after_its_epoch_and_saves_nothing(prepared, monkeypatch):
    exp, task, recipe = prepared
    built = watch_models(task, monkeypatch)
    best = BestCheckpoint(exp.run_dir, exp.direction)
    record = run_trial(
        exp, task, recipe, number=0, seed=0, device=CPU, best=best, on_epoch=lambda r: True
    )
    assert record.stopped == "pruned" and len(record.curve) == 1
    assert best.meta() is None
    gc.collect()
    assert built[0]() is None


def test_datasets_are_cached_by_split_and_rows(prepared):
    _, task, _ = prepared
    train = task.splits.train
    first, second = train.subset([0, 1, 2, 3]), train.subset([4, 5, 6, 7])
    for split in (train, first, second, train.subset([0, 1, 2, 3])):
        data = task.dataset(split, False)
        assert len(data) == len(split)
        if hasattr(data, "labels"):  # classification: one label per example
            assert torch.equal(torch.as_tensor(data.labels), torch.as_tensor(split.labels))
    assert first.key == train.subset([0, 1, 2, 3]).key
    assert len({train.key, first.key, second.key, task.splits.validation.key}) == 4
    assert {first.key, second.key} <= {key for _, key in task._cache}
    assert train.subset([1, 2]).subset([1]).rows == (2,)  # rows of the full split


def test_a_saved_model_folder_records_its_kind_and_loads_as_its_predictor(prepared, tmp_path):
    from hypertweaks import load
    from hypertweaks.model_folder import describe

    exp, task, recipe = prepared
    model, _ = task.build(recipe)
    folder = tmp_path / "saved"
    folder.mkdir()
    task.save(model, folder)
    # no best.yaml beside it (e.g. copied without it): the folder alone says what it is
    meta = folder / ("hypertweaks.json" if exp.task == "causal-lm" else "labels.json")
    assert json.loads(meta.read_text())["task"] == exp.task
    assert describe(folder).task == exp.task
    assert isinstance(load(folder, device="cpu"), KINDS[exp.task].load_class("predictor"))
