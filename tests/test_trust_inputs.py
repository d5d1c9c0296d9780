"""What evaluate and a saved image model answer can be trusted: texts that training refuses
(empty, missing, list-valued) are refused by evaluate too, naming the file's rows before any
compute (or skipped and counted with --skip-bad); and an image model folder whose weights are
missing or broken is refused with a message naming the file, never run with random weights."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from conftest import cli
from lm_fixtures import write_jsonl

import hypertweaks
from hypertweaks.data.inputs import read_texts
from hypertweaks.evaluate import evaluate
from hypertweaks.models import ModelError

pytestmark = pytest.mark.usefixtures("wide_console")


def refuse_loading(monkeypatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("hypertweaks.predict.load", refuse)
    monkeypatch.setattr("hypertweaks.evaluate.load", refuse)


# -- texts: read_texts and evaluate ------------------------------------------------------------


ROWS = [
    {"text": "happy day", "label": "joy"},
    {"text": "", "label": "joy"},
    {"text": None, "label": "anger"},
    {"text": ["angry", "day"], "label": "anger"},
    {"text": "quiet day", "label": "calm"},
]


def test_read_texts_gives_the_raw_texts_not_silently_changed_ones(tmp_path):
    path = write_jsonl(tmp_path / "labeled.jsonl", ROWS)
    table, texts = read_texts(path, "text")
    assert len(table) == 5 and texts[0] == "happy day" and texts[1] == ""
    assert texts[2] is None or pd.isna(texts[2])  # missing stays missing, not ""
    assert list(texts[3]) == ["angry", "day"]  # a list stays a list, for the check to name


def test_evaluate_refuses_bad_texts_naming_rows_before_loading(
    text_model, tmp_path, capsys, monkeypatch
):
    path = write_jsonl(tmp_path / "labeled.jsonl", ROWS)
    refuse_loading(monkeypatch)
    code, out = cli(capsys, "evaluate", text_model, path)
    assert code == 2 and "Traceback" not in out, out
    assert str(path) in out and "(rows 2, 3)" in out and "counting rows from 1" in out, out
    assert "(row 4: ['angry', 'day'])" in out and "--skip-bad" in out, out
    with pytest.raises(hypertweaks.DataError, match=r"rows 2, 3"):
        evaluate(text_model, path)


def test_evaluate_skips_bad_texts_with_skip_bad_and_counts_them(text_model, tmp_path, capsys):
    path = write_jsonl(tmp_path / "labeled.jsonl", ROWS)
    report = evaluate(text_model, path, skip_bad=True)
    assert report["examples"] == 2
    assert report["notes"] == ["skipped 3 of 5 texts that are empty, missing or not a single text"]
    code, out = cli(capsys, "evaluate", text_model, path, "--skip-bad", "--quiet")
    assert code == 0 and "skipped 3 of 5 texts" in out, out


def test_skip_bad_help_names_texts_too(capsys):
    code, out = cli(capsys, "evaluate", "--help")
    assert code == 0
    assert "skip unreadable images, or texts that are empty, missing or not a single text" in out


# -- images: the saved folder ------------------------------------------------------------------


def save_image_model(folder: Path, model: str, net: torch.nn.Module) -> Path:
    """Save `net` as a study saves its best image model (ImageClassification.save)."""
    from hypertweaks.tasks.image import ImageClassification

    task = SimpleNamespace(
        experiment=SimpleNamespace(model=model, image_size=32),
        splits=SimpleNamespace(classes=["defect", "ok"]),
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        positive=0,
    )
    ImageClassification.save(task, net, folder)
    return folder


@pytest.fixture
def timm_model(tmp_path) -> Path:
    timm = pytest.importorskip("timm")
    torch.manual_seed(0)
    net = timm.create_model("test_efficientnet", pretrained=False, num_classes=2)
    return save_image_model(tmp_path / "timm-model", "test_efficientnet", net)


@pytest.fixture
def hf_model(tmp_path) -> Path:
    from transformers import ViTConfig, ViTForImageClassification

    config = ViTConfig(
        hidden_size=16,
        num_hidden_layers=1,
        num_attention_heads=2,
        intermediate_size=32,
        image_size=32,
        patch_size=8,
        num_labels=2,
    )
    torch.manual_seed(0)
    net = ViTForImageClassification(config)
    return save_image_model(tmp_path / "hf-model", "someone/tiny-vit", net)


@pytest.fixture
def scans(tmp_path) -> Path:
    from test_image import write_images

    return write_images(tmp_path / "scans", {"defect": 2, "ok": 2})


def assert_refused(folder: Path, file: Path, why: str, capsys, scans: Path) -> None:
    with pytest.raises(ModelError) as error:
        hypertweaks.load(folder)
    message = str(error.value)
    assert str(file) in message and why in message, message
    assert "hypertweaks tune" in message and "restore" in message, message
    code, out = cli(capsys, "predict", folder, scans, "--quiet")
    assert code == 2 and "Traceback" not in out and str(file) in out, out
    assert not (scans.parent / "scans.predictions.csv").exists()


@pytest.mark.parametrize("fixture", ["timm_model", "hf_model"])
def test_a_saved_image_model_loads_and_predicts(fixture, request, scans):
    folder = request.getfixturevalue(fixture)
    assert len(hypertweaks.load(folder).predict(sorted(map(str, scans.rglob("*.png"))))) == 4


@pytest.mark.parametrize("fixture", ["timm_model", "hf_model"])
def test_an_image_model_without_its_weights_is_refused(fixture, request, capsys, scans):
    folder = request.getfixturevalue(fixture)
    weights = folder / "model.safetensors"
    weights.unlink()
    assert_refused(folder, weights, "is missing", capsys, scans)


@pytest.mark.parametrize("fixture", ["timm_model", "hf_model"])
def test_an_image_model_with_corrupt_weights_is_refused(fixture, request, capsys, scans):
    folder = request.getfixturevalue(fixture)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])  # cut short, as by a failed copy
    assert_refused(folder, weights, "cannot be read", capsys, scans)


@pytest.mark.parametrize("fixture", ["timm_model", "hf_model"])
def test_image_weights_lacking_the_classifier_are_refused_not_randomised(
    fixture, request, capsys, scans
):
    from safetensors.torch import load_file, save_file

    folder = request.getfixturevalue(fixture)
    weights = folder / "model.safetensors"
    state = load_file(weights)
    kept = {k: v for k, v in state.items() if not k.startswith("classifier")}
    assert len(kept) < len(state)
    save_file(kept, weights, metadata={"format": "pt"})
    assert_refused(folder, weights, "classifier", capsys, scans)


def test_a_timm_model_saved_for_other_classes_is_refused(timm_model, capsys, scans):
    labels = json.loads((timm_model / "labels.json").read_text())
    labels["classes"] = ["a", "b", "c"]
    (timm_model / "labels.json").write_text(json.dumps(labels))
    assert_refused(timm_model, timm_model / "model.safetensors", "does not fit", capsys, scans)


def test_a_hugging_face_image_model_with_a_corrupt_config_is_refused(hf_model, capsys, scans):
    (hf_model / "config.json").write_text("{ not json")
    assert_refused(hf_model, hf_model / "config.json", "cannot be read", capsys, scans)
