"""Training speed: examples/second of hypertweaks' training loop (hypertweaks.train.fit) against
the Hugging Face Trainer, same recipe (the default recipe, one epoch), same tokens, same device,
same precision (bfloat16 where hypertweaks' `precision: auto` chooses it), run back to back and
alternated; where auto chooses bfloat16, hypertweaks in float32 too (`hypertweaks_float32`).
Writes bench/results/speed/<cut>__<task>__b<batch>.json."""

from __future__ import annotations

import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import torch

from bench import RESULTS_DIR
from bench.run import machine, write_cell
from bench.tasks import Cut
from hypertweaks.train import computes_bfloat16


def _hypertweaks_once(ctx, recipe, precision: str = "auto") -> dict[str, float]:
    from hypertweaks.train import fit

    ctx.text.experiment.precision = precision
    tiny_val = ctx.text.dataset(ctx.text.splits.validation, False)
    tiny_val = type(tiny_val)(tiny_val.ids[:8], tiny_val.lengths[:8], tiny_val.labels[:8])
    model, layers = ctx.text.build(recipe)
    t0 = time.perf_counter()
    result = fit(
        ctx.text, model, layers, recipe, ctx.train, tiny_val, device=ctx.device, seed=ctx.seed
    )
    wall = time.perf_counter() - t0
    # fit's epoch time includes a validation pass over 8 examples: negligible
    return {"examples": result.examples, "seconds": result.seconds, "wall": wall}


def _hf_once(ctx, recipe) -> dict[str, float]:
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer

    from bench.methods import HFData, hf_arguments, hf_model_init
    from hypertweaks.train import SCHEDULER_NAMES

    train = HFData(ctx.train)
    model = hf_model_init(ctx)()
    with tempfile.TemporaryDirectory(prefix="hf-speed-") as out:
        args = hf_arguments(
            ctx,
            out,
            eval_strategy="no",
            save_strategy="no",
            load_best_model_at_end=False,
            logging_strategy="no",
            learning_rate=recipe.learning_rate,
            per_device_train_batch_size=recipe.batch_size,
            num_train_epochs=recipe.epochs,
            weight_decay=recipe.weight_decay,
            lr_scheduler_type=SCHEDULER_NAMES[recipe.schedule],
            warmup_steps=recipe.warmup_ratio,  # transformers 5: a float below 1 is a ratio
            max_grad_norm=1.0,
            dataloader_drop_last=True,  # as hypertweaks drops the ragged tail
        )
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train,
            data_collator=DataCollatorWithPadding(ctx.text.tokenizer),
        )
        trainer.remove_callback(PrinterCallback)
        t0 = time.perf_counter()
        output = trainer.train()
        wall = time.perf_counter() - t0
    return {"examples": train.reads, "seconds": output.metrics["train_runtime"], "wall": wall}


def speed(
    task: str,
    cut: Cut,
    repeats: int = 2,
    epochs: int = 1,
    device: str = "auto",
    batch_size: int | None = None,
    model: str | None = None,
):
    from bench.methods import make_context
    from hypertweaks.space import Recipe

    ctx = make_context(task, cut, seed=0, device=device, model=model)
    recipe = Recipe(  # the budget unit's recipe, as long as asked
        **{
            **ctx.reference,
            "epochs": epochs,
            "batch_size": batch_size or ctx.reference["batch_size"],
        }
    )
    names = ["hypertweaks", "hf_trainer"]
    if computes_bfloat16(ctx.text, ctx.device) and ctx.device.type == "cpu":
        names.append("hypertweaks_float32")
    runs: dict[str, list[dict[str, float]]] = {name: [] for name in names}
    _hypertweaks_once(ctx, Recipe(**{**recipe.as_dict(), "epochs": 1}))  # warm-up, not counted
    once = {
        "hypertweaks": _hypertweaks_once,
        "hf_trainer": _hf_once,
        "hypertweaks_float32": lambda ctx, recipe: _hypertweaks_once(ctx, recipe, "float32"),
    }
    for i in range(repeats):
        for name in names if i % 2 == 0 else names[::-1]:
            run = once[name](ctx, recipe)
            ctx.text.experiment.precision = "auto"
            run["examples_per_second"] = run["examples"] / run["seconds"]
            runs[name].append(run)
            print(f"  {name}: {run['examples_per_second']:.1f} examples/s", flush=True)
            torch.manual_seed(0)
    rate = {k: statistics.median(r["examples_per_second"] for r in v) for k, v in runs.items()}
    data: dict[str, Any] = {
        "task": task,
        "model": model or "packaged MiniLM",
        "cut": {"key": cut.key, "train": len(ctx.text.splits.train), "max_length": cut.max_length},
        "recipe": recipe.as_dict(),
        "repeats": repeats,
        "runs": runs,
        "examples_per_second": rate,
        "ratio": rate["hypertweaks"] / rate["hf_trainer"],
        "bfloat16": "hypertweaks_float32" in rate,
        "bfloat16_over_float32": (
            rate["hypertweaks"] / rate["hypertweaks_float32"]
            if "hypertweaks_float32" in rate
            else None
        ),
        "machine": machine(ctx.device),
    }
    name = f"{cut.key}__{task}__b{recipe.batch_size}" + (f"__{Path(model).name}" if model else "")
    path = RESULTS_DIR / "speed" / f"{name}.json"
    write_cell(path, data)
    print(
        f"hypertweaks {rate['hypertweaks']:.1f} ex/s, HF Trainer {rate['hf_trainer']:.1f} ex/s: "
        f"ratio {data['ratio']:.2f}"
        + (
            f"; bfloat16 over float32 {data['bfloat16_over_float32']:.2f}"
            if data["bfloat16"]
            else ""
        )
        + f" -> {path}",
        flush=True,
    )
    return data
