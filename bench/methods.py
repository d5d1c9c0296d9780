"""The methods compared: one function per method, `method(ctx, budget_seconds) -> dict` with

    chosen_recipe  the recipe the method picked (its own knob names for hf_search)
    val_score      the validation accuracy it picked that recipe on
    test_metrics   the chosen model on the held-out test split (accuracy, macro_f1, loss)
    examples       training examples processed, the whole search
    seconds        wall time of the whole method (setup included)
    curve          [(cumulative training examples, best selectable validation score so far)]
    trials         per trial: state, value, examples, seconds (wall), train_seconds (the fit)

The plain-Optuna methods train with hypertweaks.train.fit on hypertweaks' own data and model
loading, over hypertweaks' knobs, so only the search strategy differs from hypertweaks. Budgets
are Optuna-style timeouts: no trial starts once the budget is spent; the one running finishes.
"""

from __future__ import annotations

import gc
import math
import os
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from bench import WORK_DIR
from bench.tasks import Cut, load_task, model_path

METRIC = "accuracy"  # what every method selects on (validation), and the headline test metric


@dataclass
class Context:
    """One task and seed: the cut, hypertweaks' task object on it, the knobs and the device."""

    task: str
    cut: Cut
    seed: int
    device: torch.device
    text: Any  # hypertweaks.tasks.text.TextClassification, prepared
    space: dict[str, Any]
    defaults: dict[str, Any]
    unit_seconds: float | None = None  # wall time of the defaults run: the budget unit

    @property
    def train(self):
        return self.text.dataset(self.text.splits.train, True)

    @property
    def validation(self):
        return self.text.dataset(self.text.splits.validation, False)

    @property
    def test(self):
        return self.text.dataset(self.text.splits.test, False)


def search_space(num_layers: int) -> dict[str, Any]:
    """The knobs hypertweaks searches by default, resolved for this model."""
    from hypertweaks import recipes
    from hypertweaks.space import resolve_space

    try:
        user = recipes.default_space("text-classification", {})
    except (AttributeError, NameError):  # a hypertweaks without per-task spaces: the knob defaults
        user = {}
    return resolve_space(user, num_layers)


def make_context(task: str, cut: Cut, seed: int, device: str = "auto") -> Context:
    from hypertweaks.recipes import default_recipe
    from hypertweaks.train import resolve_device

    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)  # as hypertweaks does; the HF Trainer too
    text = load_task(task, cut, device)
    return Context(
        task=task,
        cut=cut,
        seed=seed,
        device=dev,
        text=text,
        space=search_space(text.num_layers),
        defaults=default_recipe("text-classification", text.pretrained_dropout),
    )


# ---------------------------------------------------------------- shared pieces

PINNED_THREADS: int | None = None


def pin_threads(threads: int) -> None:
    """One CPU thread count for every method: later torch.set_num_threads calls (hypertweaks
    sets os.cpu_count() threads) are ignored. On a shared machine fewer threads than cores can
    be several times faster (OpenMP threads wait on each other when one is descheduled)."""
    global PINNED_THREADS
    torch.set_num_threads(threads)
    PINNED_THREADS = threads
    torch.set_num_threads = lambda n: None


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def _test(ctx: Context, model) -> dict[str, float]:
    from hypertweaks.train import evaluate

    metrics = evaluate(ctx.text, model.to(ctx.device), ctx.test, ctx.device)
    return {k: metrics[k] for k in ("accuracy", "macro_f1", "loss")}


def anytime_curve(trials: list[dict[str, Any]]) -> list[list[float]]:
    """Best selectable validation score (completed trials) against cumulative training examples;
    pruned and failed trials add cost without a point of their own."""
    curve, examples, best = [], 0, None
    for trial in trials:
        examples += trial.get("examples") or 0
        if trial["state"] == "complete" and trial.get("value") is not None:
            best = trial["value"] if best is None else max(best, trial["value"])
        if best is not None:
            curve.append([examples, best])
    return curve


def _fit(ctx: Context, recipe, seed: int, on_epoch: Callable | None = None):
    """Build the pretrained model and fine-tune one recipe with hypertweaks' training loop."""
    from hypertweaks.train import fit

    torch.manual_seed(seed)  # the new classifier head's initialisation too, not only training
    model, layers = ctx.text.build(recipe)
    result = fit(
        ctx.text,
        model,
        layers,
        recipe,
        ctx.train,
        ctx.validation,
        metric=METRIC,
        device=ctx.device,
        seed=seed,
        on_epoch=on_epoch,
    )
    return model, result


class _Best:
    """The best completed model so far, kept on the CPU; test-scored once, after the search,
    so that test scoring never spends a method's budget."""

    def __init__(self):
        self.value, self.state, self.trial, self.recipe = None, None, None, None

    def offer(self, value: float, model, trial: int, recipe: dict[str, Any]) -> None:
        if self.value is None or value > self.value:
            self.value, self.trial, self.recipe = value, trial, recipe
            self.state = {k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()}

    def test(self, ctx: Context) -> dict[str, float] | None:
        if self.state is None:
            return None
        from hypertweaks.space import Recipe

        model, _ = ctx.text.build(Recipe(**self.recipe))
        model.load_state_dict(self.state)
        return _test(ctx, model)


def _log(ctx: Context, method: str, message: str) -> None:
    print(f"  [{ctx.task} s{ctx.seed} {method}] {message}", flush=True)


# ---------------------------------------------------------------- defaults


def defaults(ctx: Context, budget_seconds: float | None = None) -> dict[str, Any]:
    """The model family's recommended recipe, trained once; its wall time defines the budget
    unit."""
    from hypertweaks.space import Recipe

    start = time.perf_counter()
    recipe = Recipe(**ctx.defaults)
    model, result = _fit(ctx, recipe, ctx.seed)
    seconds = time.perf_counter() - start
    test = _test(ctx, model)
    del model
    _free()
    trial = {
        "number": 0,
        "state": "complete",
        "value": result.best_value,
        "examples": result.examples,
        "seconds": seconds,
        "train_seconds": result.seconds,
        "epochs": len(result.curve),
        "recipe": recipe.as_dict(),
    }
    _log(ctx, "defaults", f"val {result.best_value:.4f} test {test['accuracy']:.4f} {seconds:.0f}s")
    return {
        "chosen_recipe": recipe.as_dict(),
        "val_score": result.best_value,
        "test_metrics": test,
        "examples": result.examples,
        "seconds": seconds,
        "search_seconds": seconds,
        "curve": anytime_curve([trial]),
        "trials": [trial],
        "epoch_curve": result.curve,
    }


# ---------------------------------------------------------------- hypertweaks


def hypertweaks_tune(ctx: Context, budget_seconds: float) -> dict[str, Any]:
    """hypertweaks.tune with its defaults and a timeout budget."""
    import json
    import shutil

    import hypertweaks
    from hypertweaks.display import LogDisplay

    folder = WORK_DIR / "data" / ctx.cut.key / ctx.task
    runs_dir = WORK_DIR / "runs" / ctx.cut.key
    name = f"{ctx.task}-{budget_seconds:.0f}s-seed{ctx.seed}"
    shutil.rmtree(runs_dir / name, ignore_errors=True)  # an unfinished cell starts afresh
    start = time.perf_counter()
    config = {
        "model": model_path(),
        "train": str(folder / "train.csv"),
        "validation": str(folder / "validation.csv"),
        "test": str(folder / "test.csv"),
        "max_length": ctx.cut.max_length,
        "trials": None,
        "timeout": budget_seconds,
        "seed": ctx.seed,
        "device": str(ctx.device),
        "name": name,
        "runs_dir": str(runs_dir),
        "quiet": True,
    }
    result = hypertweaks.tune(config, display=LogDisplay(METRIC))
    seconds = time.perf_counter() - start
    data = json.loads(Path(result.results_path).read_text())
    trials = []
    for row in data["trials"]:
        curve = row.get("curve") or []
        trials.append(
            {
                "number": row["number"],
                "state": row["state"],
                "tag": row.get("tag", ""),
                "value": row.get("value"),
                "examples": row.get("examples") or 0,
                "seconds": row.get("seconds") or 0.0,
                "train_seconds": curve[-1]["seconds"] if curve else None,
                "epochs": len(curve),
                "recipe": row.get("recipe"),
                "error": row.get("error"),
            }
        )
    used = data.get("budget", {})
    return {
        "chosen_recipe": result.best_params,
        "val_score": result.best_value,
        "test_metrics": {k: result.test_metrics[k] for k in ("accuracy", "macro_f1", "loss")},
        "examples": sum(t["examples"] for t in trials),
        "seconds": seconds,
        "search_seconds": used.get("used_seconds"),
        "curve": anytime_curve(trials),
        "trials": trials,
        "study_dir": str(Path(result.results_path).parent),
    }


# ---------------------------------------------------------------- plain Optuna


def _optuna_search(
    ctx: Context,
    budget_seconds: float,
    sampler: optuna.samplers.BaseSampler,
    pruner: optuna.pruners.BasePruner,
    method: str,
) -> dict[str, Any]:
    """What a user writes with plain Optuna: suggest the knobs, fit, report each epoch's
    validation score, prune when told, return the best epoch's score."""
    from hypertweaks.space import suggest
    from hypertweaks.train import Diverged

    start = time.perf_counter()
    best, trials = _Best(), []

    def objective(trial: optuna.Trial) -> float:
        trial_start = time.perf_counter()
        recipe = suggest(trial, ctx.space)
        row = {"number": trial.number, "state": "fail", "value": None, "examples": 0}
        row.update(seconds=0.0, train_seconds=None, epochs=0, recipe=recipe.as_dict())
        trials.append(row)

        def on_epoch(report) -> bool:
            trial.report(report.metrics[METRIC], report.epoch)
            return report.epoch < recipe.epochs and trial.should_prune()

        model = None
        try:
            model, result = _fit(ctx, recipe, ctx.seed + trial.number, on_epoch)
            row.update(examples=result.examples, train_seconds=result.seconds)
            row.update(epochs=len(result.curve))
            if result.stopped == "pruned":
                row["state"] = "pruned"
                raise optuna.TrialPruned()
            row.update(state="complete", value=result.best_value)
            best.offer(result.best_value, model, trial.number, recipe.as_dict())
            return result.best_value
        except Diverged as error:
            row["error"] = str(error)
            raise
        finally:
            row["seconds"] = time.perf_counter() - trial_start
            del model
            _free()
            _log(ctx, method, f"trial {trial.number} {row['state']} {row['value']}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    study.optimize(objective, timeout=budget_seconds, catch=(Diverged,))
    search_seconds = time.perf_counter() - start
    test = best.test(ctx)
    return {
        "chosen_recipe": best.recipe,
        "val_score": best.value,
        "test_metrics": test,
        "examples": sum(t["examples"] for t in trials),
        "seconds": time.perf_counter() - start,
        "search_seconds": search_seconds,
        "curve": anytime_curve(trials),
        "trials": trials,
    }


def random_search(ctx: Context, budget_seconds: float) -> dict[str, Any]:
    """Optuna RandomSampler, no pruning, over hypertweaks' knobs."""
    return _optuna_search(
        ctx,
        budget_seconds,
        optuna.samplers.RandomSampler(seed=ctx.seed),
        optuna.pruners.NopPruner(),
        "random",
    )


def tpe_median(ctx: Context, budget_seconds: float) -> dict[str, Any]:
    """Optuna's TPE and median pruning with their default settings, over hypertweaks' knobs."""
    return _optuna_search(
        ctx,
        budget_seconds,
        optuna.samplers.TPESampler(seed=ctx.seed),
        optuna.pruners.MedianPruner(),
        "tpe_median",
    )


# ---------------------------------------------------------------- one-epoch top-K


def onepoch_topk(ctx: Context, budget_seconds: float, k: int | None = None) -> dict[str, Any]:
    """Egele et al. 2023: random configurations trained one epoch each; the best K (by their
    one-epoch validation score) trained again from scratch to their full epochs; the best of
    those is chosen. Phase one gets the budget less K default-run times; K = 1 below 4x, 2
    from 4x."""
    from hypertweaks.space import Recipe, suggest
    from hypertweaks.train import Diverged

    unit = ctx.unit_seconds or budget_seconds / 4
    k = k or (1 if budget_seconds < 4 * unit - 1e-6 else 2)
    start = time.perf_counter()
    phase_one_end = start + max(budget_seconds - k * unit, unit)
    sampler = optuna.samplers.RandomSampler(seed=ctx.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    best, trials, scouts = _Best(), [], []
    while time.perf_counter() < phase_one_end:
        trial = study.ask()
        recipe = suggest(trial, ctx.space)
        t0 = time.perf_counter()
        row = {"number": trial.number, "phase": 1, "state": "pruned", "value": None}
        row.update(recipe=recipe.as_dict(), examples=0, train_seconds=None, epochs=0)
        model = None
        try:
            model, result = _fit(ctx, recipe, ctx.seed + trial.number, lambda r: True)
            row.update(examples=result.examples, train_seconds=result.seconds, epochs=1)
            row["one_epoch_value"] = result.best_value
            scouts.append((result.best_value, trial.number, recipe))
            study.tell(trial, result.best_value)
        except Diverged as error:
            row.update(state="fail", error=str(error))
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
        finally:
            row["seconds"] = time.perf_counter() - t0
            trials.append(row)
            del model
            _free()
        _log(ctx, "onepoch_topk", f"scout {trial.number}: {row.get('one_epoch_value')}")
    scouts.sort(key=lambda s: -s[0])
    for _, number, recipe in scouts[:k]:
        t0 = time.perf_counter()
        row = {"number": number, "phase": 2, "state": "fail", "value": None, "examples": 0}
        row.update(recipe=recipe.as_dict(), train_seconds=None, epochs=0)
        model = None
        try:
            model, result = _fit(ctx, Recipe(**recipe.as_dict()), ctx.seed + number)
            row.update(state="complete", value=result.best_value, examples=result.examples)
            row.update(train_seconds=result.seconds, epochs=len(result.curve))
            best.offer(result.best_value, model, number, recipe.as_dict())
        except Diverged as error:
            row["error"] = str(error)
        finally:
            row["seconds"] = time.perf_counter() - t0
            trials.append(row)
            del model
            _free()
        _log(ctx, "onepoch_topk", f"full run of {number}: {row['value']}")
    search_seconds = time.perf_counter() - start
    return {
        "chosen_recipe": best.recipe,
        "val_score": best.value,
        "test_metrics": best.test(ctx),
        "examples": sum(t["examples"] for t in trials),
        "seconds": time.perf_counter() - start,
        "search_seconds": search_seconds,
        "curve": anytime_curve(trials),
        "trials": trials,
        "k": k,
        "scouts": len(scouts),
    }


# ---------------------------------------------------------------- Hugging Face Trainer


class HFData(torch.utils.data.Dataset):
    """hypertweaks' token ids as the dicts the HF Trainer takes; counts what training reads."""

    def __init__(self, encoded):
        self.encoded, self.reads = encoded, 0

    def __len__(self) -> int:
        return len(self.encoded)

    def __getitem__(self, i: int) -> dict[str, Any]:
        self.reads += 1
        n = int(self.encoded.lengths[i])
        return {
            "input_ids": self.encoded.ids[i, :n].tolist(),
            "attention_mask": [1] * n,
            "labels": int(self.encoded.labels[i]),
        }


def hf_model_init(ctx: Context):
    from transformers import AutoModelForSequenceClassification

    classes = [str(c) for c in ctx.text.splits.classes]

    def model_init(trial=None):
        return AutoModelForSequenceClassification.from_pretrained(
            model_path(),
            num_labels=len(classes),
            id2label=dict(enumerate(classes)),
            label2id={c: i for i, c in enumerate(classes)},
        )

    return model_init


def hf_compute_metrics(eval_pred) -> dict[str, float]:
    from hypertweaks.tasks.metrics import classification_metrics

    logits, labels = eval_pred
    metrics = classification_metrics(torch.as_tensor(logits), torch.as_tensor(labels))
    return {"accuracy": metrics["accuracy"], "macro_f1": metrics["macro_f1"]}


def hf_arguments(ctx: Context, output_dir: str, **overrides):
    from transformers import TrainingArguments

    cuda = ctx.device.type == "cuda"
    return TrainingArguments(
        **{
            "output_dir": output_dir,
            "eval_strategy": "epoch",
            "save_strategy": "epoch",
            "save_total_limit": 1,
            "save_only_model": True,
            "load_best_model_at_end": True,
            "metric_for_best_model": METRIC,
            "greater_is_better": True,
            "logging_strategy": "epoch",
            "per_device_eval_batch_size": 64,
            "report_to": "none",
            "disable_tqdm": True,
            "use_cpu": not cuda,
            "bf16": cuda and torch.cuda.is_bf16_supported(),
            "seed": ctx.seed,
            "dataloader_num_workers": 0,
            **overrides,
        }
    )


def hf_search(ctx: Context, budget_seconds: float) -> dict[str, Any]:
    """transformers' Trainer.hyperparameter_search, optuna backend, its default space (lr 1e-6 -
    1e-4, epochs 1-5, seed, batch 4-64) and Optuna's defaults (TPE, median pruning), on the
    real Trainer: model_init, evaluation and a checkpoint every epoch, best model loaded at the
    end. The chosen trial's final (best-epoch) model is kept in memory and test-scored after the
    search."""
    from transformers import DataCollatorWithPadding, PrinterCallback, Trainer, TrainerCallback

    start = time.perf_counter()
    train, val = HFData(ctx.train), HFData(ctx.validation)
    trials: list[dict[str, Any]] = []
    best = {"value": None, "state": None, "trial": None, "params": None}

    class Track(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            trial = trainer._trial
            trials.append(
                {
                    "number": trial.number if trial is not None else len(trials),
                    "state": "running",
                    "value": None,
                    "params": dict(trial.params) if trial is not None else {},
                    "examples_start": train.reads,
                    "t_init": init_times[-1] if init_times else time.perf_counter(),
                    "t_begin": time.perf_counter(),
                    "evals": [],
                }
            )

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if trials and metrics and f"eval_{METRIC}" in metrics:
                trials[-1]["evals"].append(metrics[f"eval_{METRIC}"])

        def on_train_end(self, args, state, control, model=None, **kwargs):
            row = trials[-1]
            now = time.perf_counter()
            row["examples"] = train.reads - row.pop("examples_start")
            row["train_seconds"] = now - row.pop("t_begin")
            row["seconds"] = now - row.pop("t_init")
            row["epochs"] = len(row["evals"])
            finished = state.max_steps and state.global_step >= state.max_steps
            row["state"] = "complete" if finished else "pruned"
            if finished:
                row["value"] = row["evals"][-1] if row["evals"] else None  # HF's objective
                if row["value"] is not None and (
                    best["value"] is None or row["value"] > best["value"]
                ):
                    best.update(value=row["value"], trial=row["number"], params=row["params"])
                    best["state"] = {
                        k: v.detach().to("cpu", copy=True) for k, v in model.state_dict().items()
                    }
            print(
                f"  [{ctx.task} s{ctx.seed} hf_search] trial {row['number']} {row['state']} "
                f"{row['value']}",
                flush=True,
            )

    init_times: list[float] = []
    base_init = hf_model_init(ctx)

    def model_init(trial=None):
        init_times.append(time.perf_counter())
        return base_init(trial)

    with tempfile.TemporaryDirectory(prefix="hf-search-", dir=_tmp_root()) as out:
        trainer = Trainer(
            model_init=model_init,
            args=hf_arguments(ctx, out),
            train_dataset=train,
            eval_dataset=val,
            data_collator=DataCollatorWithPadding(ctx.text.tokenizer),
            compute_metrics=hf_compute_metrics,
            callbacks=[Track()],
        )
        trainer.remove_callback(PrinterCallback)  # added when tqdm is off: prints every log
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        best_run = trainer.hyperparameter_search(
            direction="maximize",
            backend="optuna",
            n_trials=10_000,
            timeout=budget_seconds,
            compute_objective=lambda metrics: metrics[f"eval_{METRIC}"],
            sampler=optuna.samplers.TPESampler(seed=ctx.seed),  # seeded; otherwise the default
        )
    search_seconds = time.perf_counter() - start
    for row in trials:
        row.pop("evals", None)
    test = None
    if best["state"] is not None:
        model = base_init()
        model.load_state_dict(best["state"])
        test = _test(ctx, model)
    return {
        "chosen_recipe": best["params"],
        "val_score": best["value"],
        "test_metrics": test,
        "examples": sum(t.get("examples", 0) for t in trials),
        "seconds": time.perf_counter() - start,
        "search_seconds": search_seconds,
        "curve": anytime_curve(trials),
        "trials": trials,
        "hf_best_run": {"run_id": best_run.run_id, "objective": best_run.objective},
    }


def _tmp_root() -> str:
    root = WORK_DIR / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return str(root)


METHODS: dict[str, Callable[[Context, float], dict[str, Any]]] = {
    "hypertweaks": hypertweaks_tune,
    "defaults": defaults,
    "random": random_search,
    "tpe_median": tpe_median,
    "hf_search": hf_search,
    "onepoch_topk": onepoch_topk,
}


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
