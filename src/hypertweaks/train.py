"""Fine-tune one recipe: AdamW, warmup + decay, epochs, evaluation, early stopping, best weights.

Knows nothing of the search: after every epoch it calls `on_epoch(report)`, which may ask it to
stop (a pruned trial) by returning True. The task (tasks.base.TaskBase) supplies the loss
(`loss_sum`, `count_targets`) and the metrics (`evaluate`).
"""

from __future__ import annotations

import functools
import gc
import math
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from hypertweaks.models import LayerStack, freeze_norm_statistics
from hypertweaks.objective import is_better
from hypertweaks.space import Recipe

SCHEDULER_NAMES = {"constant": "constant_with_warmup", "linear": "linear", "cosine": "cosine"}


class Diverged(RuntimeError):
    """The loss became NaN or infinite: this recipe cannot train."""


@dataclass
class EpochReport:
    epoch: int  # 1-based
    train_loss: float
    metrics: dict[str, float]  # on the validation set
    seconds: float  # since the start of the fit
    examples: int  # training examples processed so far

    def as_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "train_loss": self.train_loss,
            **self.metrics,
            "seconds": round(self.seconds, 3),
            "examples": self.examples,
        }


@dataclass
class FitResult:
    best_value: float
    best_epoch: int
    best_metrics: dict[str, float]
    curve: list[dict[str, Any]] = field(default_factory=list)
    examples: int = 0
    seconds: float = 0.0
    stopped: str = "completed"  # completed | early_stopped | pruned | max_steps
    micro_batch: int | None = None  # set when out-of-memory forced gradient accumulation


def resolve_device(device: str) -> torch.device:
    if device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        return torch.device("cpu")
    return torch.device(device)


def make_optimizer(model: nn.Module, recipe: Recipe) -> torch.optim.AdamW:
    """AdamW; biases and normalisation weights (the 1-d parameters) get no weight decay. The
    fused kernel where it applies (as the HF Trainer's default): on CPU, torch's default
    per-tensor loop made MiniLM train 1.55x slower (bench/results/speed*, `bench speed`)."""
    params = list(model.parameters())
    decay = [p for p in params if p.ndim >= 2]
    no_decay = [p for p in params if p.ndim < 2]
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    return torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": recipe.weight_decay},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=recipe.learning_rate,
        fused=fused or None,
    )


def make_scheduler(optimizer: torch.optim.Optimizer, recipe: Recipe, total_steps: int):
    from transformers import get_scheduler

    return get_scheduler(
        SCHEDULER_NAMES[recipe.schedule],
        optimizer,
        num_warmup_steps=int(recipe.warmup_ratio * total_steps),
        num_training_steps=total_steps,
    )


@functools.cache
def native_cpu_bfloat16() -> bool:
    """Whether this CPU multiplies bfloat16 matrices in hardware (AMX or AVX-512 BF16): there a
    transformer trains 1.5-1.9x faster in bfloat16 (`python -m bench speed`); on other CPUs
    bfloat16 is emulated."""
    probes = ("_is_amx_tile_supported", "_is_avx512_bf16_supported")
    return any(getattr(torch.cpu, name, lambda: False)() for name in probes)


def autocast(device: torch.device, precision: str = "auto", cpu_bfloat16: bool = False):
    """Where matrix products run in bfloat16 (weights, optimiser and loss stay float32; unlike
    float16 no loss scaling is needed): on CUDA unless `precision` is float32; on a CPU when
    `precision` is bfloat16, or with auto when `cpu_bfloat16` (the task gains from it: the
    transformers do, a small CNN does not) and the CPU computes it natively."""
    if precision == "float32" or device.type not in ("cuda", "cpu"):
        return nullcontext()
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    if precision == "bfloat16" or (cpu_bfloat16 and native_cpu_bfloat16()):
        return torch.autocast("cpu", dtype=torch.bfloat16)
    return nullcontext()


def computes_bfloat16(task, device: torch.device) -> bool:
    """Whether the task computes in bfloat16 on `device` (its `autocast`)."""
    with task.autocast(device):
        return torch.is_autocast_enabled(device.type)


@torch.no_grad()
def predict_logits(
    task, model: nn.Module, data: Dataset, device: torch.device | str, batch_size: int = 64
) -> tuple[torch.Tensor, torch.Tensor]:
    """A classification task's logits (float32, on the CPU) and labels over a dataset."""
    device = torch.device(device)
    model.eval()
    logits, labels = [], []
    for inputs, target in DataLoader(data, batch_size=batch_size, collate_fn=data.collate):
        with task.autocast(device):
            out = task.forward(model, {k: v.to(device) for k, v in inputs.items()})
        logits.append(out.float().cpu())
        labels.append(target)
    return torch.cat(logits), torch.cat(labels)


def evaluate(
    task, model: nn.Module, data: Dataset, device: torch.device | str, batch_size: int = 64
) -> dict[str, float]:
    """The task's metrics of the model over a dataset (tasks.base.TaskBase.evaluate)."""
    model.eval()
    with torch.no_grad():
        return task.evaluate(model, data, torch.device(device), batch_size)


def _accumulate_gradients(task, model, optimizer, inputs, labels, micro: int) -> float:
    """Gradients of the mean loss over the batch (per example, or per target token for a
    language model), computed `micro` examples at a time."""
    optimizer.zero_grad(set_to_none=True)
    total, size = 0.0, len(labels)
    targets = task.count_targets(labels)
    for start in range(0, size, micro):
        part = slice(start, start + micro)
        with task.autocast(labels.device):
            loss_sum = task.loss_sum(model, {k: v[part] for k, v in inputs.items()}, labels[part])
        loss = loss_sum.float() / max(targets, 1)
        if not torch.isfinite(loss):
            return loss.item()
        loss.backward()
        total += loss.item()
    return total


def _gradients_in_memory(
    task, model, optimizer, inputs, labels, micro: int, device: torch.device
) -> tuple[float, int]:
    """`_accumulate_gradients`, its micro-batch halved on out-of-memory until it fits (the
    effective batch stays the same); the loss and the micro-batch that fitted."""
    while True:
        try:
            return _accumulate_gradients(task, model, optimizer, inputs, labels, micro), micro
        except torch.OutOfMemoryError:
            if micro == 1:
                raise
            micro = max(1, min(micro, len(labels)) // 2)
            release_memory(device)


def release_memory(device: torch.device) -> None:
    """Give memory back after a model is dropped: the peers' most reported failure is running
    out of GPU memory a few trials in."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def _step(task, model, optimizer, inputs, labels, micro: int, device) -> tuple[float, int]:
    """One optimiser step as `fit` takes it: the gradients (micro-batched where the batch does
    not fit), clipped to norm 1, applied; the loss and the micro-batch that fitted."""
    loss, micro = _gradients_in_memory(task, model, optimizer, inputs, labels, micro, device)
    torch.nn.utils.clip_grad_norm_(model.parameters(), max_norm=1.0)
    optimizer.step()
    return loss, micro


def seconds_per_example(
    task,
    model: nn.Module,
    layers: LayerStack,
    recipe: Recipe,
    data: Dataset,
    device: torch.device | str = "cpu",
    warmup: int = 2,
) -> float:
    """Seconds a training step of `recipe` takes per example, timed over the batches of `data`
    after the first `warmup` (memory, kernels): forward, backward and optimiser step, as `fit`
    runs them (micro-batches where the batch does not fit in memory). The model's weights
    change: time a throwaway copy."""
    device = torch.device(device)
    model.to(device).train()
    layers.set_trainable(recipe.freeze_layers, recipe.gradual_unfreeze, 0)
    freeze_norm_statistics(model)
    optimizer = make_optimizer(model, recipe)
    loader = DataLoader(data, batch_size=recipe.batch_size, collate_fn=data.collate)
    start, examples, micro = time.perf_counter(), 0, recipe.batch_size
    for step, (inputs, labels) in enumerate(loader):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start, examples = time.perf_counter(), 0
        inputs = {k: v.to(device) for k, v in inputs.items()}
        labels = labels.to(device)
        _, micro = _step(task, model, optimizer, inputs, labels, micro, device)
        examples += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return (time.perf_counter() - start) / max(examples, 1)


@torch.no_grad()
def seconds_per_forward_example(
    task, model: nn.Module, data: Dataset, device: torch.device | str = "cpu", batch_size: int = 16,
    warmup: int = 2,
) -> float:  # fmt: skip
    """Seconds a forward pass as evaluation runs it (no gradients, the task's precision) takes
    per example, timed over the batches of `data` after the first `warmup`."""
    device = torch.device(device)
    training = model.training
    model.to(device).eval()
    loader = DataLoader(data, batch_size=batch_size, collate_fn=data.collate)
    start, examples = time.perf_counter(), 0
    for step, (inputs, labels) in enumerate(loader):
        if step == warmup:
            if device.type == "cuda":
                torch.cuda.synchronize(device)
            start, examples = time.perf_counter(), 0
        with task.autocast(device):
            task.forward(model, {k: v.to(device) for k, v in inputs.items()})
        examples += len(labels)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    model.train(training)
    return (time.perf_counter() - start) / max(examples, 1)


def fit(
    task,
    model: nn.Module,
    layers: LayerStack,
    recipe: Recipe,
    train_data: Dataset,
    val_data: Dataset | None,
    *,
    metric: str = "accuracy",
    direction: str = "maximize",
    patience: int = 2,
    device: torch.device | str = "cpu",
    seed: int = 0,
    on_epoch: Callable[[EpochReport], bool] | None = None,
    max_steps: int | None = None,
    stop_after: int | None = None,
) -> FitResult:
    """Train `model` in place; on return it holds the weights of its best validation epoch
    (`val_data` None: no validation, the weights of its last epoch). `max_steps` shortens the
    run and its schedule; `stop_after` ends the run after that many epochs, its learning-rate
    schedule still spanning the recipe's (bench.images measures refits stopped so)."""
    device = torch.device(device)
    torch.manual_seed(seed)
    model.to(device)
    # a last batch of one breaks batch norm; drop the ragged tail when there is more data
    drop_last = len(train_data) > recipe.batch_size
    generator = torch.Generator().manual_seed(seed)
    if hasattr(train_data, "batches"):  # the dataset groups its batches (e.g. by length)
        loader = DataLoader(
            train_data,
            batch_sampler=train_data.batches(recipe.batch_size, drop_last, generator),
            collate_fn=train_data.collate,
        )
    else:
        loader = DataLoader(
            train_data,
            batch_size=recipe.batch_size,
            shuffle=True,
            drop_last=drop_last,
            collate_fn=train_data.collate,
            generator=generator,
        )
    steps_per_epoch = len(loader)
    total_steps = steps_per_epoch * recipe.epochs
    if max_steps is not None:
        total_steps = min(total_steps, max_steps)
    optimizer = make_optimizer(model, recipe)
    scheduler = make_scheduler(optimizer, recipe, total_steps)

    result = FitResult(best_value=math.nan, best_epoch=0, best_metrics={})
    micro = recipe.batch_size  # shrinks on out-of-memory; the effective batch stays the same
    best_value, best_state, bad_epochs, step = None, None, 0, 0
    start = time.perf_counter()
    for epoch in range(recipe.epochs):
        model.train()
        layers.set_trainable(recipe.freeze_layers, recipe.gradual_unfreeze, epoch)
        freeze_norm_statistics(model)
        loss_sum, batches = 0.0, 0
        for inputs, labels in loader:
            inputs = {k: v.to(device, non_blocking=True) for k, v in inputs.items()}
            labels = labels.to(device, non_blocking=True)
            loss, fitted = _step(task, model, optimizer, inputs, labels, micro, device)
            if fitted != micro:
                micro = result.micro_batch = fitted
            if not math.isfinite(loss):
                raise Diverged(f"loss became {loss} at epoch {epoch + 1}, step {step + 1}")
            scheduler.step()
            loss_sum, batches, step = loss_sum + loss, batches + 1, step + 1
            result.examples += len(labels)
            if step == total_steps:
                break

        if val_data is None:  # a refit: its validation rows trained it, nothing to score
            result.curve.append({"epoch": epoch + 1, "train_loss": loss_sum / max(batches, 1)})
            result.best_epoch = epoch + 1
            if stop_after is not None and epoch + 1 >= stop_after:
                result.stopped = "stop_after"
                break
            continue
        metrics = evaluate(task, model, val_data, device, batch_size=max(64, recipe.batch_size))
        report = EpochReport(
            epoch + 1,
            loss_sum / max(batches, 1),
            metrics,
            time.perf_counter() - start,
            result.examples,
        )
        result.curve.append(report.as_dict())
        value = metrics[metric]
        if not math.isfinite(value):
            raise Diverged(f"validation {metric} became {value} at epoch {epoch + 1}")
        if is_better(value, best_value, direction):
            best_value, bad_epochs = value, 0
            result.best_epoch, result.best_metrics = epoch + 1, metrics
            best_state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}
        else:
            bad_epochs += 1
        if on_epoch is not None and on_epoch(report):
            result.stopped = "pruned"
            break
        if step == total_steps and max_steps is not None:
            result.stopped = "max_steps"
            break
        if stop_after is not None and epoch + 1 >= stop_after:
            result.stopped = "stop_after"
            break
        if bad_epochs >= patience and epoch + 1 < recipe.epochs:
            result.stopped = "early_stopped"
            break

    result.best_value = best_value
    result.seconds = time.perf_counter() - start
    if best_state is not None:
        model.load_state_dict(best_state)
    return result
