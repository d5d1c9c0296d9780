"""Shared fixtures: a tiny randomly initialised BERT saved as a local model folder, and small
labelled tables whose classes can be told apart by their words."""

from __future__ import annotations

import os
import random
from pathlib import Path

import pandas as pd
import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never touch the network


def _shared_data() -> Path:
    """../shared/data beside the checkout; HYPERTWEAKS_SHARED_DATA or /work/shared/data else."""
    candidates = [
        os.environ.get("HYPERTWEAKS_SHARED_DATA", ""),
        Path(__file__).resolve().parents[2] / "shared" / "data",
        "/work/shared/data",
    ]
    for candidate in candidates:
        if candidate and Path(candidate).is_dir():
            return Path(candidate)
    return Path(candidates[1])


SHARED_DATA = _shared_data()
# the bench finds the data beside its checkout; a clone elsewhere uses the one the tests found
os.environ.setdefault("HYPERTWEAKS_BENCH_DATA", str(SHARED_DATA))
WORDS = {
    "joy": ["happy", "great", "love", "wonderful", "smile"],
    "anger": ["angry", "hate", "awful", "furious", "rage"],
    "calm": ["quiet", "still", "slow", "gentle", "soft"],
}
FILLER = ["the", "a", "day", "is", "was", "my", "this", "so", "very", "today"]


# Tests that start Ray (a private instance or a `ray start` cluster) share one xdist worker:
# the cluster tests end with `ray stop --force`, which stops every Ray process on the machine,
# and Ray keeps state under ~/.ray that instances started side by side would share.
RAY_TEST_FILES = {"test_ray.py", "test_ray_paths.py", "test_trust_ray.py", "test_readme.py"}


def pytest_collection_modifyitems(items):
    for item in items:
        if item.path.name in RAY_TEST_FILES:
            item.add_marker(pytest.mark.xdist_group("ray"))


def make_texts(n_per_class: int, seed: int = 0, classes=("joy", "anger", "calm")) -> pd.DataFrame:
    rng = random.Random(seed)
    rows = []
    for label in classes:
        for _ in range(n_per_class):
            words = rng.sample(FILLER, 3) + rng.sample(WORDS[label], 2)
            rng.shuffle(words)
            rows.append({"text": " ".join(words), "label": label})
    rng.shuffle(rows)
    return pd.DataFrame(rows)


@pytest.fixture(scope="session")
def tiny_bert(tmp_path_factory) -> Path:
    """A 2-layer BERT with random weights and a word-level vocabulary, as a model folder."""

    return make_bert(tmp_path_factory.mktemp("tiny-bert"), hidden_size=32, layers=2)


def make_bert(folder: Path, hidden_size: int, layers: int) -> Path:
    """A BERT with random weights and the word-level vocabulary of WORDS and FILLER."""
    import torch
    from transformers import BertConfig, BertForMaskedLM, BertTokenizerFast

    vocab = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", *FILLER]
    vocab += [w for words in WORDS.values() for w in words]
    tokenizer = BertTokenizerFast(vocab={word: i for i, word in enumerate(vocab)})
    tokenizer.save_pretrained(folder)
    config = BertConfig(
        vocab_size=len(vocab),
        hidden_size=hidden_size,
        num_hidden_layers=layers,
        num_attention_heads=2,
        intermediate_size=2 * hidden_size,
        max_position_embeddings=64,
        hidden_dropout_prob=0.1,
    )
    torch.manual_seed(0)
    BertForMaskedLM(config).save_pretrained(folder)
    return folder


@pytest.fixture
def text_csvs(tmp_path) -> dict[str, Path]:
    paths = {}
    for role, n, seed in (("train", 40, 0), ("validation", 10, 1), ("test", 10, 2)):
        paths[role] = tmp_path / f"{role}.csv"
        make_texts(n, seed).to_csv(paths[role], index=False)
    return paths


@pytest.fixture
def text_experiment(tiny_bert, text_csvs, tmp_path) -> dict:
    """A valid, fast experiment on the tiny BERT; tests change what they test."""
    return {
        "task": "text-classification",
        "model": str(tiny_bert),
        "train": str(text_csvs["train"]),
        "validation": str(text_csvs["validation"]),
        "test": str(text_csvs["test"]),
        "name": "tiny",
        "runs_dir": str(tmp_path / "runs"),
        "trials": 3,
        "max_length": 16,
        "quiet": True,
        "space": {
            "epochs": {"low": 1, "high": 2},
            "batch_size": [8, 16],
            "learning_rate": {"low": 1e-4, "high": 1e-3, "log": True},
        },
    }


def _fast_recipe():
    from hypertweaks.space import Recipe

    return Recipe(
        learning_rate=1e-3,
        batch_size=8,
        epochs=2,
        dropout=0.0,
        weight_decay=0.01,
        schedule="constant",
        warmup_ratio=0.0,
        freeze_layers=0,
        gradual_unfreeze=False,
    )


FAST_RECIPE = _fast_recipe()  # learns the tiny task in a few epochs


@pytest.fixture
def task(text_experiment, tmp_path):
    """The text task of `text_experiment`, prepared (data checked, tokenizer loaded)."""
    from hypertweaks.config import make_experiment
    from hypertweaks.tasks.text import TextClassification

    task = TextClassification(make_experiment(text_experiment), tmp_path / "cache")
    task.prepare()
    return task


@pytest.fixture
def wide_console(monkeypatch):
    monkeypatch.setenv("COLUMNS", "1000")  # rich must not wrap the messages tests match


def cli(capsys, *args) -> tuple[int, str]:
    """Run the CLI in-process: (exit code, everything it printed on one line)."""
    from hypertweaks.cli import main

    try:
        code = main([str(a) for a in args])
    except SystemExit as exit_:  # argparse
        code = exit_.code
    out = capsys.readouterr()
    return code, " ".join((out.out + out.err).split())


@pytest.fixture
def text_model(task, tmp_path) -> Path:
    """A mean-pooled text classifier (untrained head) saved as a study saves its best model."""
    from hypertweaks.tasks.text import MeanPooledClassifier, load_encoder

    model = MeanPooledClassifier(load_encoder(task.model_source), len(task.splits.classes), 0.0)
    folder = tmp_path / "model"
    folder.mkdir()
    task.save(model, folder)
    return folder


def patch_fit(monkeypatch, replacement) -> None:
    """Replace `train.fit` where every trial calls it, the smoke run's included (trial.fit_trial),
    so that a test can count or break the calls in order."""
    import hypertweaks.trial

    monkeypatch.setattr(hypertweaks.trial, "fit", replacement)


def readme_snippet(first_line: str, replacements: dict[str, str]) -> dict:
    """Run the python block of the README or docs/without-hypertweaks.md (where the loading
    examples live) that starts with `first_line`, paths replaced."""
    root = Path(__file__).resolve().parents[1]
    guides = "".join((root / f).read_text() for f in ("README.md", "docs/without-hypertweaks.md"))
    blocks = [b.split("```", 1)[0] for b in guides.split("```python\n")[1:]]
    (code,) = [b for b in blocks if b.startswith(first_line)]
    for old, new in replacements.items():
        assert old in code, old
        code = code.replace(old, new)
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    return namespace
