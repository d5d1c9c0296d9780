"""What a saved model answers can be trusted (issue 33): a text model folder whose head is gone or
broken is refused, not run with a random head; texts that training cannot use are refused by
predict too (or skipped and counted with --skip-bad); and a chat-trained adapter is prompted
through the chat template it was trained with."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pytest
import torch
from conftest import cli
from lm_fixtures import as_chat, build_tiny_llama, make_pairs, write_jsonl

import hypertweaks
from hypertweaks.data import DataError
from hypertweaks.models import ModelError
from hypertweaks.predict import predict_file

pytestmark = pytest.mark.usefixtures("wide_console")


# -- text models: the saved folder -------------------------------------------------------------


def test_a_text_model_without_its_head_file_is_refused(text_model, tmp_path, capsys):
    (text_model / "head.safetensors").unlink()
    with pytest.raises(ModelError) as error:
        hypertweaks.load(text_model)
    message = str(error.value)
    assert "head.safetensors" in message and str(text_model) in message
    assert "hypertweaks tune" in message and "restore" in message
    (tmp_path / "new.csv").write_text("text\nhappy day\n")
    code, out = cli(capsys, "predict", text_model, tmp_path / "new.csv")
    assert code == 2 and "Traceback" not in out and "head.safetensors" in out, out
    assert not (tmp_path / "new.predictions.csv").exists()


def test_a_text_model_with_a_corrupt_head_file_is_refused(text_model):
    (text_model / "head.safetensors").write_bytes(b"\x00 not a safetensors file")
    with pytest.raises(ModelError, match=r"head\.safetensors.*cannot be read.*hypertweaks tune"):
        hypertweaks.load(text_model)


def test_a_hugging_face_classifier_folder_still_loads(task, tmp_path):
    # models saved before LP-FT (or by the bench's "hf" classifier) have no head file, by design
    from hypertweaks.models import load_text_classifier

    classifier = load_text_classifier(task.model_source, 3, task.id2label, 0.0)
    task.save(classifier, tmp_path)
    assert not (tmp_path / "head.safetensors").exists()
    assert len(hypertweaks.load(tmp_path).predict(["happy day", "angry day"])) == 2


# -- texts that training refuses ---------------------------------------------------------------


def test_predict_refuses_texts_that_training_refuses(text_model):
    model = hypertweaks.load(text_model)
    texts = ["happy day", "", None, ["happy", "day"], "  ", float("nan"), "quiet day"]
    with pytest.raises(DataError) as error:
        model.predict(texts)
    message = str(error.value)
    assert "4 of 7 texts are empty or missing" in message
    assert "1 is a list or object" in message
    assert re.search(r"\(inputs 1, 2, 4, 5\).*\(input 3: \['happy', 'day'\]\)", message), message
    assert "counting inputs from 0" in message
    assert "drop or fill" in message and "skip_bad" in message
    proba = model.predict_proba(texts, skip_bad=True)  # skipped rows are NaN, as for images
    assert pd.isna(proba[[1, 2, 3, 4, 5]]).all() and not pd.isna(proba[[0, 6]]).any()
    assert model.notes == ["skipped 5 of 7 texts that are empty, missing or not a single text"]


def test_predict_file_refuses_bad_texts_before_loading(text_model, tmp_path, capsys, monkeypatch):
    rows = [
        {"text": "happy day", "id": 1},
        {"text": "", "id": 2},
        {"text": None, "id": 3},
        {"text": ["angry", "day"], "id": 4},
        {"text": "quiet day", "id": 5},
    ]
    path = write_jsonl(tmp_path / "new.jsonl", rows)

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("hypertweaks.predict.load", refuse)
    code, out = cli(capsys, "predict", text_model, path)
    assert code == 2 and "Traceback" not in out, out
    assert str(path) in out and "(rows 2, 3)" in out and "counting rows from 1" in out, out
    assert "(row 4: ['angry', 'day'])" in out, out
    assert "--skip-bad" in out and not (tmp_path / "new.predictions.jsonl").exists()
    monkeypatch.undo()
    _, table, predictor = predict_file(text_model, path, skip_bad=True)
    assert table["id"].tolist() == [1, 5] and table["predicted_label"].notna().all()
    assert predictor.notes == ["skipped 3 of 5 texts that are empty, missing or not a single text"]


def test_training_refuses_list_valued_texts():
    from hypertweaks.tasks.text import drop_empty_texts

    table = pd.DataFrame({"text": ["a day", ["happy", "day"], "b day"], "label": ["x", "y", "x"]})
    with pytest.raises(DataError, match=r"train: 1 of 3 texts is a list or object.*row 1"):
        drop_empty_texts(0.5, "text")(table, "train")


# -- causal LMs trained on chat ----------------------------------------------------------------


@pytest.fixture(scope="module")
def chat_adapter(tmp_path_factory) -> Path:
    """A LoRA adapter trained on chat messages (user: prompt, assistant: the emotion word)."""
    from hypertweaks.config import make_experiment
    from hypertweaks.recipes import CAUSAL_LM
    from hypertweaks.space import Recipe
    from hypertweaks.tasks.causal_lm import CausalLM
    from hypertweaks.train import fit

    root = tmp_path_factory.mktemp("chat-adapter")
    llama = build_tiny_llama(root / "llama")
    train = write_jsonl(root / "train.jsonl", as_chat(make_pairs(20, seed=0)))
    exp = make_experiment(
        {"task": "causal-lm", "model": str(llama), "train": train, "max_length": 32, "trials": 1}
    )
    task = CausalLM(exp, root / "cache")
    task.prepare()
    recipe = Recipe(**{**CAUSAL_LM, "dropout": 0.0, "batch_size": 8, "epochs": 20})
    recipe = Recipe(**{**recipe.as_dict(), "learning_rate": 1e-2})
    torch.manual_seed(0)  # the adapter's initial weights
    model, layers = task.build(recipe)
    splits = task.splits
    train_data, val_data = task.dataset(splits.train, True), task.dataset(splits.validation, False)
    fit(task, model, layers, recipe, train_data, val_data, metric="loss", direction="minimize")
    task.save(model, root / "best")
    return root / "best"


def test_a_chat_adapter_records_its_training_format(chat_adapter):
    meta = json.loads((chat_adapter / "hypertweaks.json").read_text())
    assert meta["format"] == "messages"


def test_a_chat_adapter_answers_a_raw_prompt_through_its_chat_template(chat_adapter, tmp_path):
    model = hypertweaks.load(chat_adapter)
    rows = make_pairs(3, seed=5)  # prompts it was not trained on; a word gives the answer away
    prompts = [row["prompt"] for row in rows]
    chats = [{"messages": [{"role": "user", "content": p}]} for p in prompts]
    assert [model.encode(p) for p in prompts] == [model.encode(c) for c in chats]
    answers = model.generate(prompts, max_new_tokens=3)
    assert model.notes == [
        "9 plain prompts were sent as user messages through the chat template the model was "
        "trained with (chat messages)"
    ]
    assert answers == model.generate(chats, max_new_tokens=3) and model.notes == []
    assert set(answers) <= {"joy", "anger", "calm"}, answers  # raw text: '' or continued text
    right = sum(a == row["completion"].strip() for a, row in zip(answers, rows, strict=True))
    assert right >= 6, answers  # chance: 3 of 9
    path = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": prompts[0], "id": 7}])
    _, table, _ = predict_file(model, path, generation={"max_new_tokens": 3})
    assert table["generated"].tolist() == answers[:1] and table["id"].tolist() == [7]


def test_an_adapter_saved_before_the_format_was_recorded_still_loads(chat_adapter, tmp_path):
    import shutil

    old = tmp_path / "old"
    shutil.copytree(chat_adapter, old)
    meta = json.loads((old / "hypertweaks.json").read_text())
    del meta["format"]
    (old / "hypertweaks.json").write_text(json.dumps(meta))
    model = hypertweaks.load(old)
    prompt = "the happy day feeling:"
    assert model.encode(prompt) == model.tokenizer(prompt)["input_ids"]  # as it was before
    assert len(model.generate(prompt, max_new_tokens=2)) == 1
