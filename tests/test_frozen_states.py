"""A text recipe that freezes the encoder's lowest layers runs them once per study: their output is
cached and fine-tuning runs only the layers above, training exactly as if it ran them all."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch
from conftest import make_bert

from hypertweaks.config import make_experiment
from hypertweaks.space import Recipe
from hypertweaks.tasks import text
from hypertweaks.tasks.text import FrozenStates, TextClassification
from hypertweaks.train import fit


def recipe(freeze_layers: int, **changes) -> Recipe:
    base = dict(
        learning_rate=1e-3,
        batch_size=8,
        epochs=2,
        dropout=0.1,  # dropout on: the frozen layers must still compute what the pretrained did
        weight_decay=0.0,
        schedule="linear",
        warmup_ratio=0.0,
        freeze_layers=freeze_layers,
        gradual_unfreeze=False,
    )
    return Recipe(**{**base, **changes})


def make_mpnet(folder: Path, bert: Path) -> Path:
    """A 3-layer MPNet with random weights (its layers return tuples and share one relative
    position bias), with the tiny BERT's word-level tokenizer."""
    from transformers import AutoTokenizer, MPNetConfig, MPNetModel

    AutoTokenizer.from_pretrained(bert).save_pretrained(folder)
    config = MPNetConfig(
        vocab_size=64,
        hidden_size=32,
        num_hidden_layers=3,
        num_attention_heads=2,
        intermediate_size=64,
        max_position_embeddings=80,
        pad_token_id=0,
    )
    torch.manual_seed(0)
    MPNetModel(config).save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def encoders(tmp_path_factory, tiny_bert) -> dict[str, Path]:
    bert3 = make_bert(tmp_path_factory.mktemp("bert3"), hidden_size=32, layers=3)
    return {"bert": bert3, "mpnet": make_mpnet(tmp_path_factory.mktemp("mpnet"), tiny_bert)}


def trained(task: TextClassification, chosen: Recipe):
    torch.manual_seed(0)
    model, layers = task.build(chosen, probe=False)
    train = task.dataset(task.splits.train, True, chosen)
    validation = task.dataset(task.splits.validation, False, chosen)
    before = copy.deepcopy(model)
    fit(task, model, layers, chosen, train, validation, patience=5)
    return before, model, train


@pytest.mark.parametrize("family", ["bert", "mpnet"])
def test_frozen_lowest_layers_run_once_and_train_as_if_run_every_step(
    family, encoders, text_experiment, tmp_path, monkeypatch
):
    exp = make_experiment({**text_experiment, "model": str(encoders[family])})
    task = TextClassification(exp, tmp_path / "cache")
    task.prepare()
    chosen = recipe(freeze_layers=2)
    before, cached_model, train = trained(task, chosen)
    assert isinstance(train, FrozenStates) and train.depth == 2
    # the frozen layers, the embeddings and whatever every layer reads (MPNet's position bias)
    # are the pretrained ones; the layer above and the head trained
    blocks = text.largest_block_list(cached_model.encoder)
    old_blocks = text.largest_block_list(before.encoder)
    frozen = [
        *cached_model.encoder.embeddings.parameters(),
        *blocks[0].parameters(),
        *blocks[1].parameters(),
    ]
    old = [*before.encoder.embeddings.parameters(), *old_blocks[0].parameters()]
    old += [*old_blocks[1].parameters()]
    assert all(torch.equal(a, b) for a, b in zip(frozen, old, strict=True))
    if family == "mpnet":
        bias = cached_model.encoder.encoder.relative_attention_bias.weight
        assert torch.equal(bias, before.encoder.encoder.relative_attention_bias.weight)
    assert not torch.equal(blocks[2].output.dense.weight, old_blocks[2].output.dense.weight)
    assert not torch.equal(cached_model.head.weight, before.head.weight)

    # the same recipe with the frozen layers run at every step (their output too large to keep)
    monkeypatch.setattr(text, "FROZEN_STATES_BYTES", 0)
    uncached_task = TextClassification(exp, tmp_path / "cache-2")
    uncached_task.prepare()
    _, uncached_model, uncached_train = trained(uncached_task, chosen)
    assert not isinstance(uncached_train, FrozenStates)
    for a, b in zip(cached_model.parameters(), uncached_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-5)

    # and the trained model, on tokens as predict runs it, scores as it did on the cached states
    tokens, _ = task.dataset(task.splits.validation, False).collate([0, 1, 2])
    states, _ = task.dataset(task.splits.validation, False, chosen).collate([0, 1, 2])
    cached_model.eval()
    with torch.no_grad():
        assert torch.allclose(
            task.forward(cached_model, tokens), task.forward(cached_model, states), atol=1e-5
        )


def test_an_encoder_whose_layers_cannot_be_passed_over_runs_them_every_step(
    text_experiment, tmp_path, monkeypatch
):
    # the check on a few rows refuses the cache when passing over the layers changes the output
    task = TextClassification(make_experiment(text_experiment), tmp_path / "cache")
    task.prepare()
    real = text.lowest_layers_cached
    monkeypatch.setattr(
        text,
        "lowest_layers_cached",
        lambda blocks, states, tuples: real(blocks, states + 1, tuples),
    )
    chosen = recipe(freeze_layers=1)
    assert not isinstance(task.dataset(task.splits.train, True, chosen), FrozenStates)


def test_the_probe_and_the_cache_of_the_frozen_layers_come_from_one_pass(
    encoders, text_experiment, tmp_path, monkeypatch
):
    exp = make_experiment({**text_experiment, "model": str(encoders["mpnet"])})
    task = TextClassification(exp, tmp_path / "cache")
    task.prepare()
    chosen = recipe(freeze_layers=2)
    passes = []
    real_pass = task._pass
    monkeypatch.setattr(
        task, "_pass", lambda *args, **kw: passes.append(1) or real_pass(*args, **kw)
    )
    model, _ = task.build(chosen)  # the LP-FT head's features and the frozen layers' output
    assert len(passes) == 2  # train and validation, each once
    monkeypatch.setattr(text, "load_encoder", lambda *args, **kw: 1 / 0)  # nothing loads again
    for split in (task.splits.train, task.splits.validation):
        assert isinstance(task.dataset(split, split is task.splits.train, chosen), FrozenStates)
    assert len(passes) == 2 and len(list((tmp_path / "cache").glob("features-*.pt"))) == 2
