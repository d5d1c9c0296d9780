"""Bad input never crashes and is never silently wrong.

Each case gives the tool one malformed or unusual input, as a new user would, and pins the exact
outcome: the message (what is wrong, where, what to do), exit code 2, no traceback, and that
nothing finished was lost. Most cases fail before any training; the CLI runs in-process."""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import yaml
from conftest import cli, make_texts

from hypertweaks.cli import main
from hypertweaks.config import ConfigError, load_experiment, make_experiment
from hypertweaks.data import DataError, load_splits, read_table
from hypertweaks.study import (
    StudyError,
    fail_dead_trials,
    no_trial_completed,
    normalise_storage,
    open_study,
    sqlite_url,
)

TRAIN = make_texts(8, seed=0)
VALIDATION = make_texts(3, seed=1)


pytestmark = pytest.mark.usefixtures("wide_console")


def refused(code: int, text: str, pattern: str) -> None:
    assert "Traceback" not in text, text
    assert code == 2, text
    assert re.search(pattern, text), f"{pattern!r} not in: {text}"


def csv_text(frame: pd.DataFrame) -> str:
    return frame.to_csv(index=False)


@pytest.fixture
def text_args(tiny_bert, tmp_path):
    """Flags of a valid, tiny text study; cases write their own files."""
    (tmp_path / "val.csv").write_text(csv_text(VALIDATION))
    (tmp_path / "train.csv").write_text(csv_text(TRAIN))

    def args(train="train.csv", validation="val.csv"):
        flags = ["tune", "--model", tiny_bert, "--train", tmp_path / train]
        if validation:
            flags += ["--validation", tmp_path / validation]
        return flags + ["--name", "t", "--runs-dir", tmp_path / "runs", "--trials", 1]

    args.folder = tmp_path
    return args


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    return path


# --- tables: (file name, content, validation file or None, expected message) ---------------
_joy = TRAIN.assign(
    label=TRAIN.label.where(TRAIN.index != TRAIN.index[TRAIN.label == "joy"][0], "Joy")
)
_spaces = TRAIN.assign(
    label=TRAIN.label.where(TRAIN.index != TRAIN.index[TRAIN.label == "calm"][0], "calm ")
)
_no_labels = TRAIN.assign(label=TRAIN.label.where(TRAIN.index > 2, None))
TABLES = {
    "empty file": (
        "train.csv",
        "",
        "val.csv",
        r"train data '.*train\.csv' cannot be read: No columns",
    ),
    "header only": (
        "train.csv",
        "text,label\n",
        "val.csv",
        r"train data '.*train\.csv' holds no rows",
    ),
    "no text column": (
        "train.csv",
        csv_text(TRAIN.rename(columns={"text": "words"})),
        "val.csv",
        r"train\.csv: no column 'text' \(set by text_column\); the columns are: words, label",
    ),
    "no label column": (
        "train.csv",
        csv_text(TRAIN.rename(columns={"label": "tag"})),
        "val.csv",
        r"no column 'label' \(set by label_column\); the columns are: text, tag",
    ),
    "duplicated column": (
        "train.csv",
        "text,label,label\nhappy day,joy,anger\nangry day,anger,joy\n",
        "val.csv",
        r"train\.csv:1: column 'label' appears twice \(columns 2 and 3\); rename or remove one",
    ),
    "labels differing by case": (
        "train.csv",
        csv_text(_joy),
        "val.csv",
        r"labels that differ only by case, surrounding spaces or type would become separate "
        r"classes: "
        r"'joy' \(7 rows\), 'Joy' \(1 rows\)\. Make each class's label identical",
    ),
    "labels with a trailing space": (
        "train.csv",
        csv_text(_spaces),
        "val.csv",
        r"'calm' \(\d rows\), 'calm ' \(1 rows\)",
    ),
    "single class": (
        "train.csv",
        csv_text(TRAIN.assign(label="joy")),
        "val.csv",
        r"train has a single class \('joy'\); classification needs at least two",
    ),
    "all texts empty": (
        "train.csv",
        csv_text(TRAIN.assign(text="")),
        "val.csv",
        r"24 of 24 texts \(100%\) are empty or missing, more than max_dropped_fraction=0\.1",
    ),
    "labels missing": (
        "train.csv",
        csv_text(_no_labels),
        "val.csv",
        r"3 rows have no label \(e\.g\. row 0\); remove them or fill them in",
    ),
    "class with one example, no validation file": (
        "train.csv",
        csv_text(pd.concat([TRAIN, pd.DataFrame([{"text": "a day", "label": "rare"}])])),
        None,
        r"class 'rare' has only 1 example in train; .* or give a validation file",
    ),
    "unknown file type": ("train.txt", csv_text(TRAIN), "val.csv", r"unknown file type '\.txt'"),
    "not UTF-8": (
        "train.csv",
        "text,label\ncaf\xe9 day,joy\n".encode("latin-1"),
        "val.csv",
        r"train data '.*train\.csv' is not UTF-8 text \(byte \d+\); save it as UTF-8",
    ),
    "ragged rows": (
        "train.csv",
        "text,label\nhappy,joy\nsad,anger,extra,fields\n",
        "val.csv",
        r"cannot be read: Error tokenizing data\. C error: Expected 2 fields in line 3, saw 4",
    ),
    "unterminated quote": (
        "train.csv",
        'text,label\n"happy day,joy\nangry,anger\n',
        "val.csv",
        r"train data '.*train\.csv' cannot be read: .*EOF",
    ),
    "bad JSON Lines table": (
        "train.jsonl",
        '{"text": "happy day", "label": "joy"}\n{"text": broken\n',
        "val.csv",
        r"train data '.*train\.jsonl' cannot be read",
    ),
    "list-valued labels": (
        "train.jsonl",
        '{"text": "happy day", "label": ["joy", "calm"]}\n{"text": "angry", "label": "anger"}\n',
        "val.csv",
        r"1 labels are lists or objects, not single values \(e\.g\. row 0: \['joy', 'calm'\]\)",
    ),
    "corrupt parquet": ("train.parquet", b"not parquet", "val.csv", r"cannot be read"),
    "validation label train lacks": (
        "train.csv",
        csv_text(TRAIN),
        "bad-val.csv",
        r"validation has labels that train does not have: 'sad'; a model cannot learn classes",
    ),
    "validation label differing by case": (
        "train.csv",
        csv_text(TRAIN),
        "case-val.csv",
        r"validation has labels that train does not have: 'JOY' \(they differ from train's only "
        r"by case or spaces: 'JOY' -> 'joy'\)",
    ),
}


@pytest.mark.parametrize("case", TABLES, ids=list(TABLES))
def test_bad_tables_are_refused_before_training(case, text_args, capsys):
    name, content, validation, pattern = TABLES[case]
    folder = text_args.folder
    write(folder / name, content)
    write(folder / "bad-val.csv", csv_text(VALIDATION.assign(label="sad")))
    write(folder / "case-val.csv", csv_text(VALIDATION.assign(label="JOY")))
    refused(*cli(capsys, *text_args(name, validation)), pattern)
    assert not (folder / "runs" / "t" / "study.db").exists()  # no study for bad data


def test_a_folder_that_is_no_dataset_is_refused(text_args, capsys):
    write(text_args.folder / "data" / "train.csv", csv_text(TRAIN))
    refused(
        *cli(capsys, *text_args("data")),
        r"train data '.*data' is a folder but not one saved by the `datasets` library",
    )


def test_missing_train_file_is_refused(text_args, capsys):
    refused(*cli(capsys, *text_args("nope.csv")), r"train data '.*nope\.csv' does not exist")


def test_a_byte_order_mark_is_not_part_of_the_first_column(tmp_path):
    # Excel's "CSV UTF-8" starts with a BOM; the column is still called 'text'
    path = write(tmp_path / "bom.csv", "\ufeff" + csv_text(TRAIN))
    assert list(read_table(path).columns) == ["text", "label"]


def test_labels_1_and_text_1_are_not_two_classes():
    train = pd.DataFrame({"text": ["a", "b", "c", "d"], "label": [1, "1", 2, 2]})
    with pytest.raises(
        DataError, match=r"or type would become separate classes: 1 \(1 rows\), '1'"
    ):
        load_splits(
            {"train": (train, "t.jsonl"), "validation": (train, "v.jsonl")},
            "text",
            "label",
            0.15,
            0,
        )


def test_a_class_with_one_example_is_warned_about_even_with_a_validation_file():
    train = pd.concat([TRAIN, pd.DataFrame([{"text": "a day", "label": "rare"}])])
    validation = pd.concat([VALIDATION, pd.DataFrame([{"text": "the day", "label": "rare"}])])
    splits = load_splits(
        {"train": (train, "train.csv"), "validation": (validation, "val.csv")},
        "text",
        "label",
        0.15,
        0,
    )
    assert any(
        re.search(r"warning: 1 class\(es\) have a single training example \('rare'\)", n)
        for n in splits.notes
    )


# --- JSON Lines for causal LMs: refused with file and line before the model loads -----------
_chat = '{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]}'
JSONL = {
    "invalid JSON": (
        '{"prompt": "a", "completion": "b"}\n{"prompt": "a" "completion": "b"}\n',
        r"train\.jsonl:2: not valid JSON \(Expecting ',' delimiter at column \d+\)",
    ),
    "mixed formats": (
        '{"prompt": "a", "completion": "b"}\n' + _chat + "\n",
        r"mixes formats: prompt-completion \(first on line 1\), messages \(first on line 2\)",
    ),
    "unknown role": (
        '{"messages": [{"role": "bot", "content": "x"}]}\n',
        r"train\.jsonl:1: messages\[0\] has role 'bot'; use one of system, user, assistant",
    ),
    "no assistant turn": (
        '{"messages": [{"role": "user", "content": "x"}]}\n',
        r"train\.jsonl:1: no assistant message, so nothing to learn from",
    ),
    "empty completion": (
        '{"prompt": "a", "completion": "  "}\n',
        r"train\.jsonl:1: 'completion' is empty, so there is nothing to learn",
    ),
    "a list, not an object": ('["a", "b"]\n', r"train\.jsonl:1: expected a JSON object, got list"),
    "content not text": (
        '{"messages": [{"role": "user", "content": 3}, {"role": "assistant", "content": "x"}]}\n',
        r"train\.jsonl:1: messages\[0\]\.content must be a string",
    ),
    "no known field": (
        '{"question": "a"}\n',
        r"no 'messages', 'prompt'/'completion' or 'text' field",
    ),
    "empty file": ("\n\n", r"train file '.*train\.jsonl' has no examples"),
    "a field given twice": (
        '{"prompt": "a", "completion": "b", "prompt": "c"}\n',
        r"train\.jsonl:1: field 'prompt' is given twice in one object",
    ),
}


@pytest.mark.parametrize("case", JSONL, ids=list(JSONL))
def test_bad_instruction_data_is_refused_with_its_line(case, tmp_path, capsys):
    content, pattern = JSONL[case]
    train = write(tmp_path / "train.jsonl", content)
    code, text = cli(
        capsys, "tune", "--task", "causal-lm", "--model", "some/llm", "--train", train,
        "--runs-dir", tmp_path / "runs", "--trials", 1,
    )  # fmt: skip
    refused(code, text, pattern)


def test_causal_lm_refuses_a_csv_file(tmp_path, capsys):
    train = write(tmp_path / "train.csv", csv_text(TRAIN))
    code, text = cli(
        capsys, "tune", "--task", "causal-lm", "--model", "some/llm", "--train", train,
        "--runs-dir", tmp_path / "runs",
    )  # fmt: skip
    refused(code, text, r"causal-lm reads JSON Lines \(\.jsonl\), one example per line")


# --- experiment YAML ------------------------------------------------------------------------
YAMLS = {
    "syntax error": ("model: [unclosed\ntrials: 3\n", r"exp\.yaml:2:\d+: not valid YAML"),
    "tab indentation": ("space:\n\tepochs: 2\n", r"exp\.yaml:2:1: not valid YAML"),
    "a list at the top": ("- model\n- train\n", r"exp\.yaml must hold a mapping of fields"),
    "a key given twice": (
        "trials: 3\nmodel: a\ntrials: 5\n",
        r"exp\.yaml:3:1: not valid YAML \('trials' is given twice \(first on line 1\)\)",
    ),
    "misspelt field": ("learnig_rate: 0.1\n", r"learnig_rate: unknown field; check its spelling"),
    "clock-time timeout": (
        "timeout: 1:30\n",
        r"timeout: cannot read '1:30' as a duration; use e\.g\. 90s, 30m, 2h \(a clock time "
        r"like 1:30 is ambiguous: write 90m or 1\.5h\)",
    ),
    "a knob as text": (
        "space:\n  learning_rate: fast\n",
        r"knob 'learning_rate' must be a finite float\. Got 'fast' instead \(text, not a number",
    ),
    "zero trials": ("trials: 0\n", r"trials: must be at least 1 \(or empty for no limit\)\. Got 0"),
    "trials as a word": ("trials: ten\n", r"trials: Input should be a valid integer"),
    "metric of another task": (
        "metric: roc_auc\n",
        r"metric 'roc_auc' is not one of text-classification's",
    ),
    "unknown knob": (
        "space:\n  momentum: 0.9\n",
        r"unknown knob 'momentum'; the knobs are: learning_rate",
    ),
    "log range from zero": (
        "space:\n  weight_decay: {low: 0, high: 0.1, log: true}\n",
        r"knob 'weight_decay': a log range needs low > 0\. Got 0",
    ),
    "low above high": (
        "space:\n  dropout: {low: 0.3, high: 0.1}\n",
        r"knob 'dropout': low 0\.3 is above high 0\.1",
    ),
    "negative timeout": ("timeout: -5\n", r"timeout must be positive\. Got -5\.0 seconds"),
    "bad study name": ("name: my/study\n", r"name: must be letters, digits"),
    "unknown task": (
        "task: translation\n",
        r"task: must be one of text-classification, image-classification",
    ),
    "unknown backend": ("backend: spark\n", r"backend: Input should be 'optuna' or 'ray'"),
    "tiny image size": (
        "image_size: 8\n",
        r"image_size: Input should be greater than or equal to 32",
    ),
    "max_length below 8": (
        "max_length: 4\n",
        r"max_length: Input should be greater than or equal to 8",
    ),
}


@pytest.fixture
def yaml_file(text_args):
    """An experiment file beside its data, with relative paths; cases add or override lines."""
    folder = text_args.folder

    def make(extra: str = "") -> Path:
        base = {
            "model": str(text_args()[2]),
            "train": "train.csv",
            "validation": "val.csv",
            "runs_dir": "runs",
            "trials": 1,
            "quiet": True,
        }
        for line in extra.splitlines():  # the case's fields replace the base's
            base.pop(line.split(":")[0], None)
        return write(folder / "exp.yaml", yaml.safe_dump(base) + extra)

    return make


@pytest.mark.parametrize("case", YAMLS, ids=list(YAMLS))
def test_bad_experiment_files_are_refused(case, yaml_file, capsys):
    content, pattern = YAMLS[case]
    if case in ("syntax error", "tab indentation", "a list at the top", "a key given twice"):
        path = write(yaml_file().parent / "exp.yaml", content)
    else:
        path = yaml_file(content)
    refused(*cli(capsys, "tune", path), pattern)


def test_missing_experiment_file(capsys, tmp_path):
    refused(
        *cli(capsys, "tune", tmp_path / "nope.yaml"),
        r"experiment file '.*nope\.yaml' does not exist",
    )


def test_experiment_file_that_is_a_folder(capsys, tmp_path):
    refused(*cli(capsys, "tune", tmp_path), r"experiment file '.*' is a folder; give a YAML file")


def test_empty_experiment_file(capsys, tmp_path):
    refused(*cli(capsys, "tune", write(tmp_path / "e.yaml", "")), r"model: is required")


def test_experiment_file_not_utf8(capsys, tmp_path):
    path = write(tmp_path / "e.yaml", "model: caf\xe9\n".encode("latin-1"))
    refused(*cli(capsys, "tune", path), r"e\.yaml: not UTF-8 text \(byte 10\); save the experiment")


def test_yaml_reads_numbers_as_yaml_1_2(tmp_path):
    # 1e-3 is a number (YAML 1.1 reads it as text); 1:30 is text (YAML 1.1 reads 90)
    path = write(tmp_path / "e.yaml", "model: m\ntrain: t.csv\nspace:\n  learning_rate: 1e-3\n")
    assert load_experiment(path).space["learning_rate"] == pytest.approx(0.001)
    with pytest.raises(ConfigError, match="1:30 is ambiguous"):
        load_experiment(write(tmp_path / "f.yaml", "model: m\ntrain: t.csv\ntimeout: 1:30\n"))


def test_relative_paths_are_relative_to_the_experiment_file(tmp_path, monkeypatch):
    # from another working directory, the file's own folder decides
    path = write(tmp_path / "project" / "exp.yaml", "model: m\ntrain: data/t.csv\nruns_dir: runs\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    exp = load_experiment(path, {"validation": "v.csv"})
    assert exp.train == tmp_path / "project" / "data" / "t.csv"
    assert exp.runs_dir == tmp_path / "project" / "runs"
    assert exp.validation == elsewhere / "v.csv"  # flags: the current directory


def test_a_missing_relative_path_says_what_it_is_relative_to(yaml_file, capsys):
    path = yaml_file("train: data/train.csv\n")
    refused(
        *cli(capsys, "tune", path),
        r"train data '.*data/train\.csv' does not exist \(relative paths in an experiment file "
        r"are relative to its folder\)",
    )


# --- flags ----------------------------------------------------------------------------------
FLAGS = {
    "unknown device": (
        ["--device", "gpu"],
        r"device: must be auto, cpu, cuda, cuda:N or mps\. Got 'gpu'",
    ),
    "trials not a number": (["--trials", "abc"], r"argument --trials: invalid int value: 'abc'"),
    "clock-time timeout": (["--timeout", "1:30"], r"1:30 is ambiguous: write 90m or 1\.5h"),
    "timeout as a word": (["--timeout", "soon"], r"cannot read 'soon' as a duration"),
    "name with a slash": (["--name", "a/b"], r"name: must be letters, digits, '\.', '_' or '-'"),
    "max_length beyond the model": (
        ["--max-length", "1024"],
        r"max_length 1024 is longer than model '.*' reads \(64 tokens, max_position_embeddings\); "
        r"set max_length to at most 64",
    ),
    "metric of another task": (["--metric", "perplexity"], r"metric 'perplexity' is not one of"),
    "model folder missing": (
        ["--model", "./no-such-model"],
        r"model folder './no-such-model' does not exist",
    ),
    "image size too small": (
        ["--image-size", "10"],
        r"image_size: Input should be greater than or equal to 32",
    ),
    "unknown backend": (["--backend", "spark"], r"backend: Input should be 'optuna' or 'ray'"),
    "negative cpus per trial": (
        ["--cpus-per-trial", "-1"],
        r"cpus_per_trial: Input should be greater than 0",
    ),
}


@pytest.mark.parametrize("case", FLAGS, ids=list(FLAGS))
def test_bad_flags_are_refused(case, text_args, capsys):
    extra, pattern = FLAGS[case]
    refused(*cli(capsys, *text_args(), *extra), pattern)


def test_cuda_without_a_gpu_is_refused(text_args, capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    refused(
        *cli(capsys, *text_args(), "--device", "cuda"),
        r"device 'cuda': no CUDA GPU is visible to this process .*use --device cpu or auto",
    )


def test_no_model_given(tmp_path, capsys):
    refused(*cli(capsys, "tune", "--train", "x.csv"), r"model: is required")


# --- runs folders -----------------------------------------------------------------------------
def test_runs_folder_that_is_a_file(text_args, capsys):
    write(text_args.folder / "runs", "not a folder")
    refused(
        *cli(capsys, *text_args()),
        r"runs folder: '.*runs' is a file, not a folder; pass --runs-dir with a folder",
    )


def test_runs_folder_below_a_file(text_args, capsys):
    write(text_args.folder / "file", "x")
    refused(
        *cli(capsys, *text_args(), "--runs-dir", text_args.folder / "file" / "runs"),
        r"runs folder: '.*file' is a file, not a folder",
    )


def test_runs_folder_that_cannot_be_written(text_args, capsys, tmp_path):
    if os.geteuid() == 0:  # root writes anywhere a file system allows: take one that does not
        place = Path("/sys/hypertweaks-runs")
    else:
        place = tmp_path / "locked"
        place.mkdir()
        place.chmod(0o500)
    refused(
        *cli(capsys, *text_args(), "--runs-dir", place),
        r"runs folder '.*' cannot be written \(.*\); pass --runs-dir with a folder you may write",
    )


def test_runs_folder_with_url_characters_in_its_name(tmp_path):
    # '?' and '%' in a folder name must not end up as a URL's query or escapes
    exp = make_experiment({"model": "m", "train": "t.csv", "runs_dir": str(tmp_path / "a?b%20c")})
    exp.run_dir.mkdir(parents=True)
    study, created = open_study(exp, 2)
    assert created and (tmp_path / "a?b%20c" / "study" / "study.db").is_file()


# --- storage URLs -----------------------------------------------------------------------------
STORAGES = {
    "unknown scheme": (
        "foo://host/db",
        r"storage 'foo://host/db': unknown database kind 'foo'; use sqlite:///",
    ),
    "not a URL": ("just-a-name", r"storage 'just-a-name' is not a database URL; use sqlite:///"),
    "driver not installed": (
        "mysql://me:secret@host/db",
        r"storage 'mysql://me:\*\*\*@host/db': its driver is not installed .*install the Python "
        r"driver of mysql",
    ),
}


@pytest.mark.parametrize("case", STORAGES, ids=list(STORAGES))
def test_bad_storage_urls_are_refused(case, text_args, capsys):
    url, pattern = STORAGES[case]
    code, text = cli(capsys, *text_args(), "--storage", url)
    refused(code, text, pattern)
    assert "secret" not in text  # passwords are never printed


def test_plain_postgresql_urls_get_the_installed_driver(monkeypatch):
    # the README's postgresql:// works with whichever driver the [postgres] extra installed
    assert normalise_storage("postgresql://u:p@h/db").startswith("postgresql+psycopg")
    assert normalise_storage("postgres://u:p@h/db").startswith("postgresql+psycopg")
    assert normalise_storage("postgresql+psycopg2://u:p@h/db") == "postgresql+psycopg2://u:p@h/db"
    import importlib.util

    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(
        ConfigError, match=r"needs a PostgreSQL driver: pip install 'hypertweaks\[postgres\]'"
    ):
        normalise_storage("postgresql://u:p@h/db")


# --- image folders ----------------------------------------------------------------------------
def png(path: Path, value: int = 40, dtype=np.uint8) -> Path:
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((8, 8), value, dtype=dtype)).save(path)
    return path


def _images_flat(root):
    png(root / "a.png")


def _images_empty_class(root):
    png(root / "ok" / "a.png")
    (root / "defect").mkdir()


def _images_corrupt(root):
    png(root / "ok" / "a.png")
    png(root / "ok" / "b.png")
    write(root / "defect" / "a.png", b"not an image")
    write(root / "defect" / "b.png", b"not an image")


def _images_one_class(root):
    png(root / "ok" / "a.png")
    png(root / "ok" / "b.png")


IMAGES = {
    "no class folders": (
        _images_flat,
        r"train folder '.*' has no class sub-folders; lay it out as",
    ),
    "empty class folder": (_images_empty_class, r"train: class folder '.*defect' holds no images"),
    "unreadable image": (
        _images_corrupt,
        r"cannot read image '.*defect/[ab]\.png': .*; fix or remove",
    ),
    "single class": (_images_one_class, r"train has a single class \('ok'\)"),
}


@pytest.mark.parametrize("case", IMAGES, ids=list(IMAGES))
def test_bad_image_folders_are_refused(case, tmp_path, capsys):
    pytest.importorskip("timm")
    make, pattern = IMAGES[case]
    make(tmp_path / "images")
    code, text = cli(
        capsys, "tune", "--task", "image-classification", "--model", "resnet18",
        "--train", tmp_path / "images", "--runs-dir", tmp_path / "runs", "--image-size", 32,
    )  # fmt: skip
    refused(code, text, pattern)


def test_image_table_with_missing_files(tmp_path, capsys):
    write(tmp_path / "images.csv", "image,label\nmissing/a.png,ok\nmissing/b.png,defect\n")
    code, text = cli(
        capsys, "tune", "--task", "image-classification", "--model", "resnet18",
        "--train", tmp_path / "images.csv", "--runs-dir", tmp_path / "runs",
    )  # fmt: skip
    refused(code, text, r"2 of 2 image paths in column 'image' point to missing files")


@pytest.mark.parametrize(
    "name,content,pattern",
    [
        (
            "w.pth",
            b"garbage",
            r"weights file '.*w\.pth' cannot be read \(.*\); give a \.safetensors",
        ),
        (
            "w.safetensors",
            b"garbage",
            r"'.*w\.safetensors' cannot be read \(Error while deserializing",
        ),
        ("nope.pth", None, r"weights file '.*nope\.pth' does not exist"),
    ],
)
def test_bad_weights_files_are_refused(name, content, pattern, tmp_path, capsys):
    pytest.importorskip("timm")
    for label, value in (("a", 40), ("b", 200)):
        for i in range(3):
            png(tmp_path / "images" / label / f"{i}.png", value)
    if content is not None:
        write(tmp_path / name, content)
    code, text = cli(
        capsys, "tune", "--task", "image-classification", "--model", "resnet18",
        "--weights", tmp_path / name, "--train", tmp_path / "images",
        "--runs-dir", tmp_path / "runs", "--image-size", 32,
    )  # fmt: skip
    refused(code, text, pattern)


def test_dashboard_of_a_folder_without_a_study(tmp_path, capsys):
    refused(*cli(capsys, "dashboard", tmp_path / "nope"), r"nope holds no study\.db; pass a study")


def test_an_image_too_large_to_decode_safely(tmp_path, monkeypatch):
    from PIL import Image

    from hypertweaks.data.images import decode_images

    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10)  # an 8x8 scan stands in for a huge one
    with pytest.raises(DataError, match=r"image '.*big\.png' is too large to decode safely"):
        decode_images([str(png(tmp_path / "big.png"))], 8)


@pytest.mark.parametrize("suffix", [".png", ".tif"])
def test_16_bit_scans_are_scaled_not_clipped(suffix, tmp_path):
    # two 16-bit scans of different brightness stay different (PIL's conversion clips both)
    from hypertweaks.data.images import decode_images

    dark = png(tmp_path / f"dark{suffix}", 20000, np.uint16)
    bright = png(tmp_path / f"bright{suffix}", 50000, np.uint16)
    pixels = decode_images([str(dark), str(bright)], 8)
    assert pixels[:, 0, 0, 0].tolist() == [round(20000 / 65535 * 255), round(50000 / 65535 * 255)]


STAGES = {  # what freeze_layers: 1 freezes: the stem and the first stage, nothing else
    "resnet18": ("conv1.", "bn1.", "layer1."),
    "convnext_atto": ("stem.", "stages.0."),
    "efficientnet_b0": ("conv_stem.", "bn1.", "blocks.0."),
    "vit_tiny_patch16_224": ("cls_token", "pos_embed", "patch_embed.", "blocks.0."),
}


@pytest.mark.parametrize("name", STAGES)
def test_freeze_layers_1_freezes_the_stem_and_first_stage(name):
    timm = pytest.importorskip("timm")
    from hypertweaks.backbones import timm_layer_stack

    model = timm.create_model(name, pretrained=False, num_classes=2)
    timm_layer_stack(model).set_trainable(freeze_layers=1, gradual_unfreeze=False, epoch=0)
    frozen = {n for n, p in model.named_parameters() if not p.requires_grad}
    assert frozen == {n for n, _ in model.named_parameters() if n.startswith(STAGES[name])}


# --- run folders: interrupted, corrupted, changed data -----------------------------------------
@pytest.fixture(scope="module")
def finished(tiny_bert, tmp_path_factory):
    """A finished one-trial study; tests work on copies of its data and run folder."""
    from hypertweaks import tune

    root = tmp_path_factory.mktemp("finished")
    write(root / "data" / "train.csv", csv_text(TRAIN))
    write(root / "data" / "val.csv", csv_text(VALIDATION))
    exp = {
        "model": str(tiny_bert), "train": str(root / "data" / "train.csv"),
        "validation": str(root / "data" / "val.csv"), "name": "done", "trials": 1,
        "runs_dir": str(root / "runs"), "max_length": 16, "quiet": True, "smoke": False,
    }  # fmt: skip
    tune(exp)
    return root, exp


@pytest.fixture
def study_copy(finished, tmp_path):
    """A copy of the finished study (data and run folder); returns its flags and run folder."""
    root, exp = finished
    shutil.copytree(root / "data", tmp_path / "data")
    shutil.copytree(root / "runs", tmp_path / "runs", symlinks=True)
    flags = [
        "tune", "--model", exp["model"], "--train", tmp_path / "data" / "train.csv",
        "--validation", tmp_path / "data" / "val.csv", "--name", "done", "--trials", 1,
        "--runs-dir", tmp_path / "runs", "--max-length", 16, "--quiet", "--no-smoke",
    ]  # fmt: skip
    return flags, tmp_path / "runs" / "done"


def with_trials(flags: list, trials: int) -> list:
    flags = list(flags)
    flags[flags.index("--trials") + 1] = trials
    return flags


def digest(run_dir: Path) -> dict[str, str]:
    """What a finished study holds on disk: the best model and results, by content."""
    files = sorted(p for p in (run_dir / "best").resolve().rglob("*") if p.is_file())
    out = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in files}
    out["trials"] = json.dumps(
        [
            (t["number"], t["value"])
            for t in json.loads((run_dir / "results.json").read_text())["trials"]
        ]
    )
    return out


def test_changed_data_under_the_same_name_is_refused(study_copy, capsys):
    flags, run_dir = study_copy
    before = digest(run_dir)
    train = Path(flags[flags.index("--train") + 1])
    write(train, csv_text(make_texts(8, seed=7)))  # fixed in place, same name
    refused(
        *cli(capsys, *flags),
        r"study 'done' in sqlite:///.* was started with other train data \(its content "
        r"changed\)\. Its 1 finished trials were scored on that; give a new --name .* or pass "
        r"--fresh to discard this one",
    )
    assert digest(run_dir) == before


def test_changed_settings_are_named(study_copy, capsys):
    flags, run_dir = study_copy
    refused(
        *cli(capsys, *flags[:-2], "--max-length", 32),
        r"was started with other max_length \(16, now 32\)",
    )


def test_same_data_moved_elsewhere_resumes(study_copy, capsys, tmp_path):
    # the study is keyed by what the files hold, not where they are
    flags, run_dir = study_copy
    shutil.move(tmp_path / "data", tmp_path / "moved")
    flags = [str(f).replace(str(tmp_path / "data"), str(tmp_path / "moved")) for f in flags]
    before = digest(run_dir)
    code, text = cli(capsys, *flags)
    assert code == 0 and "1 trials" in text, text
    assert digest(run_dir) == before


def test_fresh_starts_a_changed_study_afresh(study_copy, capsys):
    flags, run_dir = study_copy
    train = Path(flags[flags.index("--train") + 1])
    write(train, csv_text(make_texts(8, seed=7)))
    code, text = cli(capsys, *flags, "--fresh")
    assert code == 0, text
    results = json.loads((run_dir / "results.json").read_text())
    assert [t["number"] for t in results["trials"]] == [0]
    assert len(list((run_dir / "checkpoints").iterdir())) == 1


def test_a_study_with_no_trial_yet_can_be_reconfigured(tmp_path):
    # e.g. its smoke run failed: nothing was scored, so nothing is lost by changing it
    data = write(tmp_path / "train.csv", csv_text(TRAIN))
    exp = make_experiment({"model": "m", "train": str(data), "runs_dir": str(tmp_path / "runs")})
    exp.run_dir.mkdir(parents=True)
    study, _ = open_study(exp, 2)
    study.enqueue_trial({"epochs": 2})
    write(data, csv_text(make_texts(8, seed=3)))
    study, created = open_study(exp, 2)
    assert created and study.get_trials() == []


RUN_FOLDER_FAULTS = {
    "truncated results.json": lambda d: write(
        d / "results.json", (d / "results.json").read_text()[:100]
    ),
    "missing results.json": lambda d: (d / "results.json").unlink(),
    "results.json not a mapping": lambda d: write(d / "results.json", "[]"),
    "results.json not UTF-8": lambda d: write(d / "results.json", b"\xff\xfe\x00"),
}


@pytest.mark.parametrize("case", RUN_FOLDER_FAULTS, ids=list(RUN_FOLDER_FAULTS))
def test_report_rebuilds_a_broken_results_file(case, study_copy, capsys):
    flags, run_dir = study_copy
    before = digest(run_dir)
    RUN_FOLDER_FAULTS[case](run_dir)
    code, text = cli(capsys, "report", run_dir)
    assert code == 0 and "report:" in text, text
    assert digest(run_dir) == before  # rebuilt from the study: the same trials


@pytest.mark.parametrize("case", ["truncated results.json", "results.json not UTF-8"])
def test_resume_rebuilds_a_broken_results_file(case, study_copy, capsys):
    flags, run_dir = study_copy
    before = digest(run_dir)
    RUN_FOLDER_FAULTS[case](run_dir)
    code, text = cli(capsys, *flags)
    assert code == 0, text
    assert digest(run_dir) == before


def test_a_stray_folder_in_checkpoints_is_left_alone(study_copy, capsys):
    flags, run_dir = study_copy
    before = digest(run_dir)
    (run_dir / "checkpoints" / "my-notes").mkdir()
    write(run_dir / "checkpoints" / "README", "mine")
    code, text = cli(capsys, *flags)
    assert code == 0, text
    assert (run_dir / "checkpoints" / "my-notes").is_dir() and digest(run_dir) == before


def test_a_corrupt_best_marker_does_not_crash_a_resume(study_copy, capsys):
    flags, run_dir = study_copy
    write(run_dir / "best" / "trial.json", "{trunc")
    code, text = cli(capsys, *flags)
    assert code == 0 and "best recipe" in text, text


def test_a_corrupt_study_database_is_a_message(study_copy, capsys):
    flags, run_dir = study_copy
    write(run_dir / "study.db", b"garbage " * 100)
    pattern = r"cannot open the study's storage 'sqlite:///.*study\.db' \(file is not a database\)"
    refused(*cli(capsys, *flags), pattern + r"; move the file away")
    (run_dir / "results.json").unlink()
    refused(*cli(capsys, "report", run_dir), pattern)
    code, text = cli(capsys, *flags, "--fresh")  # our own file: --fresh starts anew
    assert code == 0, text


def test_an_unreachable_database_is_a_message(text_args, capsys):
    code, text = cli(capsys, *text_args(), "--storage", "postgresql://me:secret@127.0.0.1:9/db")
    refused(code, text, r"cannot open the study's storage 'postgresql\+psycopg2?://me:\*\*\*@127")
    assert "check that the server runs" in text and "secret" not in text


def test_report_of_a_folder_without_a_study(tmp_path, capsys):
    refused(*cli(capsys, "report", tmp_path), r"holds no study \(no results\.json, no study\.db\)")


def dead_pid() -> int:
    process = subprocess.Popen(["true"])
    process.wait()
    return process.pid


def test_a_killed_workers_trial_is_retried_at_once(study_copy, capsys):
    # kill -9, then the same command at once: the dead process's trial does not hold the budget
    flags, run_dir = study_copy
    fields = {"model": flags[2], "train": flags[4], "validation": flags[6], "name": "done"}
    exp = make_experiment({**fields, "runs_dir": run_dir.parent, "max_length": 16})
    study, _ = open_study(exp, 2)
    trial = study.ask()
    trial.set_user_attr(
        "worker", {"host": socket.gethostname(), "pid": dead_pid(), "at": time.time()}
    )
    code, text = cli(capsys, *with_trials(flags, 2))  # budget 2: the done trial and one more
    assert code == 0, text
    trials = optuna.load_study(study_name="done", storage=sqlite_url(run_dir / "study.db")).trials
    assert [t.state.name for t in trials] == ["COMPLETE", "FAIL", "COMPLETE"]
    assert trials[1].user_attrs["worker_died"] and trials[2].system_attrs["failed_trial"] == 1


def test_a_trial_killed_before_its_first_heartbeat_is_retried(tmp_path):
    data = write(tmp_path / "train.csv", csv_text(TRAIN))
    exp = make_experiment({"model": "m", "train": str(data), "runs_dir": str(tmp_path / "runs"),
                           "heartbeat_seconds": 1})  # fmt: skip
    exp.run_dir.mkdir(parents=True)
    study, _ = open_study(exp, 2)
    study.ask()  # never claimed, never beat
    assert fail_dead_trials(study) == []  # not yet: it may be starting
    time.sleep(2.2)
    assert fail_dead_trials(study) == [0]
    assert [t.state.name for t in study.trials] == ["FAIL", "WAITING"]


def test_a_trial_running_on_another_machine_is_waited_for_with_a_message(tmp_path):
    data = write(tmp_path / "train.csv", csv_text(TRAIN))
    exp = make_experiment({"model": "m", "train": str(data), "runs_dir": str(tmp_path / "runs")})
    exp.run_dir.mkdir(parents=True)
    study, _ = open_study(exp, 2)
    trial = study.ask()
    trial.set_user_attr("worker", {"host": "elsewhere", "pid": 1, "at": time.time()})
    assert fail_dead_trials(study) == []
    error = no_trial_completed(study, exp, tmp_path / "results.json")
    assert isinstance(error, StudyError)
    assert re.search(
        r"no trial of study 'study' has completed yet: trial 0 is running on elsewhere \(pid 1\)\. "
        r"If that worker is dead, its trial is retried once its heartbeat is 60 s stale",
        str(error),
    )


def test_best_yaml_reproduces_the_best_trial(study_copy, capsys, tmp_path):
    # best.yaml carries the best trial's seed: training it again gives the same score
    flags, run_dir = study_copy
    code, text = cli(capsys, *with_trials(flags, 3))
    assert code == 0, text
    best = json.loads((run_dir / "best" / "trial.json").read_text())
    recipe = yaml.safe_load((run_dir / "best" / "best.yaml").read_text())
    trial = optuna.load_study(study_name="done", storage=sqlite_url(run_dir / "study.db")).trials[
        best["trial"]
    ]
    assert recipe["trial_seed"] == trial.user_attrs["seed"]
    code, text = cli(
        capsys,
        "tune",
        run_dir / "best" / "best.yaml",
        "--runs-dir",
        tmp_path / "again",
        "--no-smoke",
    )
    assert code == 0, text
    again = json.loads((tmp_path / "again" / "done-refit" / "results.json").read_text())
    assert again["best_value"] == pytest.approx(best["value"], abs=1e-6)


def test_an_internal_error_shows_its_traceback_and_the_study_resumes(study_copy, monkeypatch):
    # a bug is not the user's fault: it is not hidden, and the trial is retried on resume
    import hypertweaks.trial as trial_module

    flags, run_dir = study_copy

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(trial_module, "fit_trial", broken)
    with pytest.raises(RuntimeError, match="a bug"):
        main([str(f) for f in with_trials(flags, 2)])
    trials = optuna.load_study(study_name="done", storage=sqlite_url(run_dir / "study.db")).trials
    assert trials[1].state.name == "FAIL" and "error" not in trials[1].user_attrs  # retried later


def test_the_readme_postgresql_url_works_as_written(tmp_path):
    # `--storage postgresql://USER:PASSWORD@HOST/DB` with the [postgres] extra's driver
    from faults import Postgres

    try:
        server = Postgres()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    url = server.start().replace("postgresql+psycopg2://", "postgresql://")
    try:
        data = write(tmp_path / "train.csv", csv_text(TRAIN))
        exp = make_experiment({"model": "m", "train": str(data), "storage": url,
                               "runs_dir": str(tmp_path / "runs")})  # fmt: skip
        study, created = open_study(exp, 2)
        assert created and study.trials == []
    finally:
        server.stop()


def test_a_ray_study_resumed_from_its_folder_refuses_changed_data(tmp_path):
    # Ray resumes from runs/NAME/ray/, not from the storage: its fingerprint lies beside it
    from hypertweaks.fingerprint import check_saved_fingerprint

    data = write(tmp_path / "train.csv", csv_text(TRAIN))
    exp = make_experiment({"model": "m", "train": str(data), "runs_dir": str(tmp_path)})
    saved = tmp_path / "ray" / "fingerprint.json"
    check_saved_fingerprint(exp, saved, resumable=False)
    check_saved_fingerprint(exp, saved)  # the same data: resumes
    write(data, csv_text(make_texts(8, seed=5)))
    with pytest.raises(ConfigError, match=r"started with other train data \(its content changed\)"):
        check_saved_fingerprint(exp, saved)
    check_saved_fingerprint(exp, saved, resumable=False)  # nothing ran yet: reconfigured
