"""Run the design's cells: one (task, recipe, seed) per cell, resumable, in an order where every
prefix is a balanced design (every task has recipe i at every seed before any task gets recipe
i + 1).

A cell trains the recipe to its last epoch (no early stopping: the simulator applies patience
itself by cutting the recorded curve) and records after every epoch the validation and test
accuracy, macro-F1 and loss, the class probabilities of both splits (bench/meta/store.py), the
epoch's wall time (training and the trainer's own validation pass, not the extra recording
passes) and the examples trained.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.meta import META_DIR, records, store
from bench.meta.design import design
from bench.tasks import Cut, load_task

DIVERGED = "diverged"


def cell_stem(task: str, index: int, seed: int) -> str:
    return f"{task}__r{index:03d}__s{seed}"


def machine() -> dict[str, Any]:
    cpu = platform.processor()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    gpu = torch.cuda.get_device_name() if torch.cuda.is_available() else None
    return {"cpu": cpu, "gpu": gpu, "threads": torch.get_num_threads(), "torch": torch.__version__}


def task_record(task: str, data, cut_key: str, **features: float) -> dict[str, Any]:
    """Meta-features a strategy may use (`features` adds the modality's own), and the labels
    the probabilities are scored against. `data` is a prepared hypertweaks task."""
    splits = data.splits
    counts = np.bincount(np.asarray(splits.train.labels), minlength=len(splits.classes))
    share = counts / counts.sum()
    entropy = float(-(share[share > 0] * np.log(share[share > 0])).sum())
    return {
        "task": task,
        "cut": cut_key,
        "classes": [str(c) for c in splits.classes],
        "meta_features": {
            "train_rows": len(splits.train),
            "validation_rows": len(splits.validation),
            "test_rows": len(splits.test),
            "classes": len(splits.classes),
            "rows_per_class": len(splits.train) / len(splits.classes),
            "class_balance": entropy / np.log(len(splits.classes)),  # 1 = balanced
            "smallest_class_share": float(share.min()),
            "num_layers": data.num_layers,
            **features,
        },
        "validation_labels": [int(x) for x in splits.validation.labels],
        "test_labels": [int(x) for x in splits.test.labels],
    }


def text_features(text, cut: Cut) -> dict[str, float]:
    """Text's own meta-features: token and character lengths of the training rows."""
    train = text.dataset(text.splits.train, False)
    return {
        "mean_tokens": float(train.lengths.float().mean()),
        "truncated_share": float((train.lengths >= cut.max_length).float().mean()),
        "mean_chars": float(np.mean([len(t) for t in text.splits.train.inputs])),
    }


def run_cell(text, recipe_dict: dict[str, Any], seed: int, device: torch.device) -> dict:
    """Train one recipe to its last epoch, recording every epoch on validation and test."""
    from hypertweaks.space import Recipe
    from hypertweaks.train import Diverged, fit, predict_logits, release_memory

    recipe = Recipe(**recipe_dict)
    splits = text.splits
    # as the trainer feeds them (a head-only recipe scores on the cached features)
    val = text.dataset(splits.validation, False, recipe)
    test = text.dataset(splits.test, False, recipe)
    torch.manual_seed(seed)
    model, layers = text.build(recipe)
    epochs: list[dict[str, Any]] = []
    probs: dict[str, list[np.ndarray]] = {"validation": [], "test": []}
    recording = 0.0  # seconds spent in the extra recording passes, not part of the recipe's cost

    def on_epoch(report) -> bool:
        nonlocal recording
        start = time.perf_counter()
        row = {
            "epoch": report.epoch,
            "train_loss": report.train_loss,
            "seconds": report.seconds - recording,  # cumulative: training + trainer's validation
            "examples": report.examples,
        }
        for name, data in (("validation", val), ("test", test)):
            logits, labels = predict_logits(text, model, data, device)
            metrics = text.metrics(logits, labels)
            row[name] = {k: metrics[k] for k in ("accuracy", "macro_f1", "loss")}
            probs[name].append(torch.softmax(logits, dim=1).numpy().astype(np.float16))
        epochs.append(row)
        recording += time.perf_counter() - start
        return False

    status = "completed"
    try:
        fit(
            text,
            model,
            layers,
            recipe,
            text.dataset(splits.train, True, recipe),
            val,
            patience=recipe.epochs + 1,  # full curves: the simulator applies early stopping
            device=device,
            seed=seed,
            on_epoch=on_epoch,
        )
    except Diverged as error:
        status = f"{DIVERGED}: {error}"
    finally:
        model = None  # noqa: F841  (the last reference: memory back before the next cell)
        release_memory(device)
    return {"status": status, "epochs": epochs, "probs": probs}


def write_cell(folder: Path, stem: str, record: dict, probs: dict) -> None:
    """The probabilities into the task's file (bench/meta/store.py), then the metrics into the
    task's records (bench/meta/records.py): the record is written last, so a cell is present
    only when both are."""
    folder.mkdir(parents=True, exist_ok=True)
    store.write(folder / f"{stem}.json", {k: v for k, v in probs.items() if v})
    records.write(folder, stem, record)


# Cells of the product's own candidates, beside the design: negative recipe indices, which the
# simulator never counts in the design's balanced prefix but a strategy may run by index.
# -2 and -3 are the default recipe with another classifier (the fine_tune_head of
# bench/text_heads.BenchTextClassification): mean-pooled with a fresh head, and mean-pooled with
# its head from a linear probe (LP-FT).
# -4 and -5 refit a candidate (-3, -1) on train + validation, every epoch of its schedule
# recorded on test, so that the simulator can score a refit stopped at the epoch the candidate's
# own run chose on validation (lever 5 of issue 16). Their validation columns are of examples
# they trained on: they mean nothing.
# -6 and -7 are the LP-FT default at a higher learning rate, the second with the lower two layers
# frozen: where the product trailed a peer in the real 3x bench (tweeteval-offensive), the peer's
# winning trial trained at about 1.8e-4 with one or two frozen layers. They are candidates for
# the trials the product runs after its default.
CANDIDATES = {
    -1: "hypertweaks-head-only",
    -2: "defaults-mean-pooled",
    -3: "defaults-lp-ft",
    -4: "defaults-lp-ft-refit",
    -5: "hypertweaks-head-only-refit",
    -6: "lp-ft-lr1e-4",
    -7: "lp-ft-lr1.5e-4-freeze2",
}
FINE_TUNE_HEAD = {-2: "mean", -3: "probe", -4: "probe", -6: "probe", -7: "probe"}
LP_FT_VARIANT_CHANGES = {
    -6: {"learning_rate": 1e-4},
    -7: {"learning_rate": 1.5e-4, "freeze_layers": 2},
}
REFIT_OF = {-4: -3, -5: -1}
HEAD_ONLY = -1


def train_and_validation(splits):
    """The splits with validation's examples added to train (named apart, for the caches)."""
    from dataclasses import replace

    from hypertweaks.data.splits import Split

    inputs = list(splits.train.inputs) + list(splits.validation.inputs)
    labels = np.concatenate([splits.train.labels, splits.validation.labels])
    return replace(splits, train=Split(inputs, labels, "train+validation"))


def candidate_recipe(index: int, text) -> dict[str, Any]:
    """The recipe hypertweaks itself would run for this candidate on this task."""
    from hypertweaks.kinds import default_recipe
    from hypertweaks.strategies import head_only_candidate

    defaults = default_recipe(
        "text-classification", text.pretrained_dropout, len(text.splits.train)
    )
    index = REFIT_OF.get(index, index)
    if index in FINE_TUNE_HEAD:
        return {**defaults, **LP_FT_VARIANT_CHANGES.get(index, {})}
    experiment = text.experiment.model_copy(update={"space": {}})
    return head_only_candidate(experiment, defaults, text.num_layers).recipe


def _task(texts: dict, task: str, cut: Cut, device: str, data_root, folder: Path):
    if task not in texts:
        texts[task], _ = load_task(task, cut, device, data_root)
        _write_task_record(
            folder, task_record(task, texts[task], cut.key, **text_features(texts[task], cut))
        )
    return texts[task]


def _write_task_record(folder: Path, record: dict[str, Any]) -> None:
    info = folder / "tasks" / f"{record['task']}.json"
    if not info.exists():
        info.parent.mkdir(parents=True, exist_ok=True)
        info.write_text(json.dumps(record))


def _record_cell(folder: Path, stem: str, task: str, index: int, name: str, recipe: dict,
                 seed: int, cut_key: str, text, dev) -> None:  # fmt: skip
    start = time.perf_counter()
    result = run_cell(text, recipe, seed, dev)
    record = {
        "task": task,
        "recipe_index": index,
        "recipe_name": name,
        "recipe": recipe,
        "seed": seed,
        "cut": cut_key,
        "status": result["status"],
        "epochs": result["epochs"],
        "wall_seconds": time.perf_counter() - start,
        "machine": machine(),
        "pid": os.getpid(),
    }
    write_cell(folder / "cells", stem, record, result["probs"])
    last = result["epochs"][-1]["test"]["accuracy"] if result["epochs"] else float("nan")
    print(
        f"[meta] {stem} {name} {result['status']} test {last:.3f} {record['wall_seconds']:.0f}s",
        flush=True,
    )


def collect_candidates(
    tasks: list[str],
    cut: Cut,
    seeds: list[int],
    device: str = "auto",
    data_root: Path | None = None,
    out: Path = META_DIR,
    which: Sequence[int] = (HEAD_ONLY,),
) -> int:
    """Run the candidate recipes `which` (CANDIDATES) on every task and seed; resumable."""
    from hypertweaks.train import resolve_device

    dev, folder, texts, ran = resolve_device(device), out / cut.key, {}, 0
    for index in which:
        name = CANDIDATES[index]
        for seed in seeds:
            for task in tasks:
                stem = f"{task}__{name}__s{seed}"
                if records.has(folder / "cells", stem):
                    continue
                text = _task(texts, task, cut, device, data_root, folder)
                recipe = candidate_recipe(index, text)
                text.fine_tune_head = FINE_TUNE_HEAD.get(index, "hf")
                splits = text.splits
                if index in REFIT_OF:
                    text.splits = train_and_validation(splits)
                try:
                    _record_cell(folder, stem, task, index, name, recipe, seed, cut.key, text, dev)
                finally:
                    text.fine_tune_head = "hf"  # the design's classifier (bench/tasks.load_task)
                    text.splits = splits
                ran += 1
    return ran


def collect(
    tasks: list[str],
    cut: Cut,
    recipes: int,
    seeds: list[int],
    device: str = "auto",
    data_root: Path | None = None,
    out: Path = META_DIR,
) -> int:
    """Run the missing cells, prefix-balanced; returns how many ran."""
    from hypertweaks.train import resolve_device

    folder, texts, plan = out / cut.key, {}, design(recipes)

    def load(task: str):
        return _task(texts, task, cut, device, data_root, folder), plan

    return _collect_design(folder, cut.key, tasks, recipes, seeds, load, resolve_device(device))


def collect_images(
    tasks: list[str], recipes: int, seeds: list[int], device: str = "auto", out: Path = META_DIR
) -> int:
    """The image design's missing cells (bench/meta/images.py), prefix-balanced as `collect`."""
    from bench.meta.images import IMAGE_CUT, IMAGE_SIZE, image_design, load_image_task
    from bench.tasks import WORK_DIR
    from hypertweaks.train import resolve_device

    folder = out / IMAGE_CUT

    def load(task: str):
        image = load_image_task(task, device, WORK_DIR)
        _write_task_record(folder, task_record(task, image, IMAGE_CUT, image_size=IMAGE_SIZE))
        return image, image_design(recipes, image.num_layers, image.pretrained_dropout)

    return _collect_design(folder, IMAGE_CUT, tasks, recipes, seeds, load, resolve_device(device))


def _collect_design(folder: Path, cut_key: str, tasks: list[str], recipes: int,
                    seeds: list[int], load, dev) -> int:  # fmt: skip
    """Every missing (recipe, seed, task) cell, recipe by recipe so that any prefix is balanced;
    `load(task)` gives the prepared task and its design, once per task and only when needed."""
    loaded: dict[str, tuple[Any, list[dict[str, Any]]]] = {}
    ran = 0
    for index in range(recipes):
        for seed in seeds:
            for task in tasks:
                stem = cell_stem(task, index, seed)
                if records.has(folder / "cells", stem):
                    continue
                if task not in loaded:
                    loaded[task] = load(task)
                data, plan = loaded[task]
                entry = plan[index]
                recipe = dict(entry["recipe"])
                _record_cell(
                    folder, stem, task, index, entry["name"], recipe, seed, cut_key, data, dev
                )
                ran += 1
    return ran
