"""The methods compared: one function per method, `method(ctx, budget_seconds) -> dict` with

    chosen_recipe  the recipe the method picked (its own knob names for hf_search)
    chosen_trial   hypertweaks only: the number of the trial it kept
    final_model    hypertweaks only: its soup's members and whether it was kept (None: no soup)
    val_score      the validation accuracy it picked that recipe on
    test_metrics   the chosen model on the held-out test split (accuracy, macro_f1, loss)
    examples       training examples processed, the whole search
    seconds        wall time of the whole method (setup included)
    search_seconds the budget used, counted as the budget is (wall time since the first trial)
    curve          [(cumulative training examples, best selectable validation score so far)]
    trials         per trial: state, value, examples, at (its start on the clock), seconds
                   (wall), train_seconds (the fit)

The plain-Optuna methods train with hypertweaks' own trial (`hypertweaks.trial.fit_trial`) on
hypertweaks' data and model loading, over hypertweaks' knobs, and keep their best model as
hypertweaks does, so only the search strategy differs from hypertweaks.

One clock for all (`Clock`), the one hypertweaks.tune's timeout runs on (Optuna's timeout): the
wall time from the start of the method's first trial, so whatever a method does between its
trials counts too, and its setup before them does not; no trial starts once the budget is
spent, the one running finishes.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch

from bench import WORK_DIR
from bench.reference import reference_recipe
from bench.tasks import Cut, load_task, make_cut, model_path, table_key

METRIC = "accuracy"  # what every method selects on (validation), and the headline test metric


@dataclass
class Context:
    """One task and seed: the cut, hypertweaks' task object on it, the knobs and the device."""

    task: str
    cut: Cut
    seed: int
    device: torch.device
    text: Any  # bench.text_heads.BenchTextClassification (a TextClassification), prepared
    space: dict[str, Any]
    reference: dict[str, Any]  # bench.reference's recipe with this model's dropout
    exp: Any = None  # the hypertweaks Experiment the task was loaded with (metric, patience)
    folder: Path | None = None  # the cut's train/validation/test CSVs
    model: str | None = None  # a model folder; None: the packaged MiniLM
    unit_seconds: float | None = None  # wall time of the reference run: the budget unit

    @property
    def key(self) -> str:
        return table_key(self.cut, self.model)

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
    from hypertweaks.space import resolve_space

    try:
        from hypertweaks.kinds import default_space
    except ImportError:  # a hypertweaks before the task-kind registry
        from hypertweaks.recipes import default_space
    try:
        user = default_space("text-classification", {})
    except (AttributeError, NameError):  # a hypertweaks without per-task spaces: the knob defaults
        user = {}
    return resolve_space(user, num_layers)


def make_context(
    task: str,
    cut: Cut,
    seed: int,
    device: str = "auto",
    data_root: Path | None = None,
    model: str | None = None,
) -> Context:
    from hypertweaks.train import resolve_device

    dev = resolve_device(device)
    if dev.type == "cpu":
        torch.set_num_threads(os.cpu_count() or 1)  # as hypertweaks does; the HF Trainer too
    text, exp = load_task(task, cut, device, data_root, model)
    return Context(
        task=task,
        cut=cut,
        seed=seed,
        device=dev,
        text=text,
        space=search_space(text.num_layers),
        reference=reference_recipe(text.pretrained_dropout),
        exp=exp,
        folder=make_cut(task, cut, data_root),
        model=model,
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


class Clock:
    """The budget, counted alike for every method and as hypertweaks.tune counts its timeout
    (a fresh study: Optuna's timeout, from the start of the search): the wall time since the
    method's first trial started. Setup before it is not counted; no trial starts once the
    budget is spent; the trial running then finishes."""

    def __init__(self, budget_seconds: float | None):
        self.budget = budget_seconds
        self.started: float | None = None
        self.ended: float | None = None

    def start(self) -> float:
        """Called as each trial starts (the first one starts the clock); returns the trial's
        start on it, in seconds."""
        if self.started is None:
            self.started = time.perf_counter()
        return self.used

    def start_trial(self, study: optuna.Study) -> float:
        """start() for a trial of an Optuna study the bench does not loop over itself: once the
        budget is spent the study stops and this trial ends before any work (Optuna records it
        as pruned; the cell has no row for it)."""
        if self.spent:
            study.stop()
            raise optuna.TrialPruned("the budget is spent")
        return self.start()

    def stop(self) -> None:
        """The search is over: the clock reads what it used."""
        self.ended = time.perf_counter()

    @property
    def used(self) -> float:
        if self.started is None:
            return 0.0
        return (self.ended or time.perf_counter()) - self.started

    @property
    def spent(self) -> bool:
        return self.budget is not None and self.used >= self.budget

    def stop_when_spent(self, study: optuna.Study, trial=None) -> None:
        """An Optuna callback: the study starts no trial once the budget is spent."""
        if self.spent:
            study.stop()


def _release(ctx: Context) -> None:
    from hypertweaks.train import release_memory

    release_memory(ctx.device)


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
    """One trial as hypertweaks runs it: the pretrained model built and fine-tuned on train,
    scored on validation each epoch."""
    from hypertweaks.trial import fit_trial

    return fit_trial(ctx.exp, ctx.text, recipe, ctx.device, seed, on_epoch)


def _search_result(best: Best, trials: list[dict], start: float, clock: Clock, **extra) -> dict:
    """A searching method's cell result: its best model tested once, and every trial."""
    return {
        "chosen_recipe": best.recipe,
        "val_score": best.value,
        "test_metrics": best.test(),
        "examples": sum(t.get("examples", 0) for t in trials),
        "seconds": time.perf_counter() - start,
        "search_seconds": clock.used,
        "curve": anytime_curve(trials),
        "trials": trials,
        **extra,
    }


class Best:
    """The best completed model of a search, kept as hypertweaks keeps its own (on disk, one at
    a time, through hypertweaks.checkpoints.BestCheckpoint) so that keeping it costs every
    method the same; test-scored once after the search, so that scoring never spends budget."""

    def __init__(self, ctx: Context, method: str, save=None, load=None):
        from hypertweaks.checkpoints import BestCheckpoint

        self.ctx = ctx
        self.dir = WORK_DIR / "runs" / ctx.key / f"{ctx.task}-{method}-seed{ctx.seed}"
        shutil.rmtree(self.dir, ignore_errors=True)  # an unfinished cell starts afresh
        self.checkpoint = BestCheckpoint(self.dir, "maximize")
        self.save = save or ctx.text.save
        self.load = load or ctx.text.load
        self.recipes: dict[int, Any] = {}

    def offer(self, trial: int, value: float, model, recipe: Any) -> None:
        if self.checkpoint.offer(trial, value, lambda folder: self.save(model, folder)):
            self.recipes[trial] = recipe

    @property
    def value(self) -> float | None:
        meta = self.checkpoint.meta()
        return meta["value"] if meta else None

    @property
    def recipe(self) -> Any:
        meta = self.checkpoint.meta()
        return self.recipes[meta["trial"]] if meta else None

    def test(self) -> dict[str, float] | None:
        """The kept model on the test split; the folder is deleted afterwards."""
        if self.checkpoint.meta() is None:
            return None
        model = self.load(self.checkpoint.link)
        metrics = _test(self.ctx, model)
        del model
        _release(self.ctx)
        shutil.rmtree(self.dir, ignore_errors=True)
        return metrics


def _log(ctx: Context, method: str, message: str) -> None:
    print(f"  [{ctx.task} s{ctx.seed} {method}] {message}", flush=True)


# ---------------------------------------------------------------- defaults


def defaults(ctx: Context, budget_seconds: float | None = None) -> dict[str, Any]:
    """The reference recipe (bench.reference), trained once: its wall time is the budget unit."""
    from hypertweaks.space import Recipe

    start = time.perf_counter()
    recipe = Recipe(**ctx.reference)
    model, result = _fit(ctx, recipe, ctx.seed, None)
    seconds = time.perf_counter() - start
    test = _test(ctx, model)
    del model
    _release(ctx)
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


def hypertweaks_larger(ctx: Context, budget_seconds: float) -> dict[str, Any]:
    """hypertweaks.tune as `hypertweaks`, offered all-mpnet-base-v2 (`python -m bench.mpnet`
    assembles it) as a larger model: the timeout decides which backbone it tunes. Its estimate of
    mpnet's run (about a minute of one core) comes before the clock starts, as the smoke run
    does; the cell's wall_seconds hold it."""
    from bench.mpnet import MODEL_DIR

    if not (MODEL_DIR / "config.json").is_file():
        raise SystemExit(f"{MODEL_DIR} is missing: run python -m bench.mpnet first")
    return hypertweaks_tune(ctx, budget_seconds, larger_models=[str(MODEL_DIR)])


def hypertweaks_tune(
    ctx: Context, budget_seconds: float, larger_models: list[str] | None = None
) -> dict[str, Any]:
    """hypertweaks.tune with its defaults; its timeout is the budget (a fresh study counts it as
    `Clock` does, from the start of its search: data checks and smoke run come before)."""
    import json
    from datetime import datetime

    import hypertweaks
    from hypertweaks.display import LogDisplay

    runs_dir = WORK_DIR / "runs" / ctx.key
    name = f"{ctx.task}-{budget_seconds:.0f}s-seed{ctx.seed}"
    shutil.rmtree(runs_dir / name, ignore_errors=True)  # an unfinished cell starts afresh
    start = time.perf_counter()
    config = {
        "model": ctx.model or model_path(),
        "train": str(ctx.folder / "train.csv"),
        "validation": str(ctx.folder / "validation.csv"),
        "test": str(ctx.folder / "test.csv"),
        "max_length": ctx.cut.max_length,
        "trials": None,
        "timeout": budget_seconds,
        "seed": ctx.seed,
        "device": str(ctx.device),
        "name": name,
        "runs_dir": str(runs_dir),
        "quiet": True,
        "larger_models": larger_models or [],
    }
    result = hypertweaks.tune(config, display=LogDisplay(METRIC))
    seconds = time.perf_counter() - start
    data = json.loads(Path(result.results_path).read_text())

    def when(stamp: str | None) -> float | None:
        return datetime.fromisoformat(stamp).timestamp() if stamp else None

    starts = [when(r.get("started")) for r in data["trials"] if r.get("started")]
    ends = [when(r.get("finished")) for r in data["trials"] if r.get("finished")]
    first = min(starts, default=None)
    trials = []
    for row in data["trials"]:
        curve = row.get("curve") or []
        started = when(row.get("started"))
        trials.append(
            {
                "number": row["number"],
                "at": None if started is None else started - first,
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
    return {
        "chosen_recipe": result.best_params,
        "chosen_trial": data.get("best_trial"),
        "final_model": _soup_record(data.get("final_model")),
        "backbone": data.get("backbone"),
        "val_score": result.best_value,
        "test_metrics": {k: result.test_metrics[k] for k in ("accuracy", "macro_f1", "loss")},
        "examples": sum(t["examples"] for t in trials),
        "seconds": seconds,
        "search_seconds": max(ends) - first if ends else None,
        "curve": anytime_curve(trials),
        "trials": trials,
        "study_dir": str(Path(result.results_path).parent),
    }


def _soup_record(soup: dict[str, Any] | None) -> dict[str, Any] | None:
    """What the same-run table needs of the soup: which runs, and whether it is the final model."""
    return None if soup is None else {k: soup[k] for k in ("members", "value", "kept")}


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
    clock, best, trials = Clock(budget_seconds), Best(ctx, method), []

    def objective(trial: optuna.Trial) -> float:
        at, trial_start = clock.start_trial(trial.study), time.perf_counter()
        recipe = suggest(trial, ctx.space)
        row = {"number": trial.number, "at": at, "state": "fail", "value": None, "examples": 0}
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
            best.offer(trial.number, result.best_value, model, recipe.as_dict())
            return result.best_value
        except Diverged as error:
            row["error"] = str(error)
            raise
        finally:
            model = None
            _release(ctx)
            row["seconds"] = time.perf_counter() - trial_start
            _log(ctx, method, f"trial {trial.number} {row['state']} {row['value']}")

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler, pruner=pruner)
    study.optimize(objective, catch=(Diverged,), callbacks=[clock.stop_when_spent])
    clock.stop()
    return _search_result(best, trials, start, clock)


def random_search(ctx: Context, budget_seconds: float) -> dict[str, Any]:
    """Optuna RandomSampler, no pruning, over hypertweaks' knobs."""
    return _optuna_search(
        ctx,
        budget_seconds,
        optuna.samplers.RandomSampler(seed=ctx.seed),
        optuna.pruners.NopPruner(),
        "random",
    )


def startup_trials(budget_multiple: float) -> int:
    """Random trials before TPE models the space (and before the median pruner compares), for
    a budget of this many reference runs.

    Optuna's defaults (10 random trials for TPE, 5 completed before MedianPruner prunes) are
    for studies of a hundred trials: within a few units' budget TPE never left its startup
    and chose exactly what `random` chose (all 12 task/seed pairs at 3x). One trial of the
    space costs about one reference run (0.6-0.8 of one, median and mean, in the committed 3x
    cells), so the budget in units is the expected trial count; half of it is spent exploring
    at random, half guided; 2 at least (TPE splits the trials into good and bad ones), Optuna's
    10 at most (long studies get its defaults)."""
    return max(2, min(10, int(budget_multiple) // 2))


def tpe_median(ctx: Context, budget_seconds: float) -> dict[str, Any]:
    """Optuna's TPE and median pruning, their startup scaled to the budget (startup_trials);
    a trial can be pruned from its first epoch on (the steps are epochs, 1 to 5 of them,
    whatever the budget), as hypertweaks' own median pruner does."""
    unit = ctx.unit_seconds or budget_seconds
    startup = startup_trials(budget_seconds / unit)
    result = _optuna_search(
        ctx,
        budget_seconds,
        optuna.samplers.TPESampler(seed=ctx.seed, n_startup_trials=startup),
        optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=1),
        "tpe_median",
    )
    return {**result, "n_startup_trials": startup}


# ---------------------------------------------------------------- one-epoch top-K


def onepoch_topk(ctx: Context, budget_seconds: float, k: int | None = None) -> dict[str, Any]:
    """Egele et al. 2023: random configurations trained one epoch each; the best K (by their
    one-epoch validation score) trained again from scratch to their full epochs; the best of
    those is chosen. K = 1 below 4x, 2 from 4x. Scouting stops once the budget less K units is
    spent (one scout at least); the full runs stop at the budget, as every method's trials do."""
    from hypertweaks.space import Recipe, suggest
    from hypertweaks.train import Diverged

    unit = ctx.unit_seconds or budget_seconds / 4
    k = k or (1 if budget_seconds < 4 * unit - 1e-6 else 2)
    start = time.perf_counter()
    clock, scouting = Clock(budget_seconds), budget_seconds - k * unit
    sampler = optuna.samplers.RandomSampler(seed=ctx.seed)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=sampler)
    best, trials, scouts = Best(ctx, "onepoch_topk"), [], []

    def run(number: int, recipe, phase: int) -> dict[str, Any]:
        """One trial: a scout (one epoch) or a full run; on the clock either way."""
        t0, at = time.perf_counter(), clock.start()
        row = {"number": number, "at": at, "phase": phase, "state": "fail", "value": None}
        row["examples"] = 0
        row.update(recipe=recipe.as_dict(), train_seconds=None, epochs=0)
        model = None
        try:
            stop_after_one = (lambda report: True) if phase == 1 else None
            model, result = _fit(ctx, recipe, ctx.seed + number, stop_after_one)
            row.update(examples=result.examples, train_seconds=result.seconds)
            row.update(epochs=len(result.curve))
            if phase == 1:
                row.update(state="pruned", one_epoch_value=result.best_value)
            else:
                row.update(state="complete", value=result.best_value)
                best.offer(number, result.best_value, model, recipe.as_dict())
        except Diverged as error:
            row["error"] = str(error)
        finally:
            model = None
            _release(ctx)
            row["seconds"] = time.perf_counter() - t0
            trials.append(row)
        return row

    while clock.used < scouting or not scouts:
        trial = study.ask()
        row = run(trial.number, suggest(trial, ctx.space), phase=1)
        if row["state"] == "fail":
            study.tell(trial, state=optuna.trial.TrialState.FAIL)
            if len(trials) >= 20 and not scouts:
                break  # every recipe diverges: nothing to train further
        else:
            scouts.append((row["one_epoch_value"], trial.number, row["recipe"]))
            study.tell(trial, row["one_epoch_value"])
        _log(ctx, "onepoch_topk", f"scout {trial.number}: {row.get('one_epoch_value')}")
    scouts.sort(key=lambda s: -s[0])
    for _, number, recipe in scouts[:k]:
        if clock.spent:
            _log(ctx, "onepoch_topk", f"budget spent: {number} not trained further")
            break
        row = run(number, Recipe(**recipe), phase=2)
        _log(ctx, "onepoch_topk", f"full run of {number}: {row['value']}")
    clock.stop()
    return _search_result(best, trials, start, clock, k=k, scouts=len(scouts))


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
            ctx.model or model_path(),
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

    from hypertweaks.train import computes_bfloat16

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
            "bf16": computes_bfloat16(ctx.text, ctx.device),  # as hypertweaks computes
            "seed": ctx.seed,
            "dataloader_num_workers": 0,
            **overrides,
        }
    )


def hf_search(ctx: Context, budget_seconds: float) -> dict[str, Any]:
    """transformers' Trainer.hyperparameter_search, optuna backend, its default space (lr 1e-6 -
    1e-4, epochs 1-5, seed, batch 4-64) and Optuna's defaults (TPE, median pruning), on the
    real Trainer: model_init, evaluation and a checkpoint every epoch, best model loaded at the
    end. Each trial's final (best-epoch) model is offered to `Best`, test-scored after the
    search. The budget is `Clock`'s: the study is stopped from the trial that spends it."""
    from transformers import (
        AutoModelForSequenceClassification,
        DataCollatorWithPadding,
        PrinterCallback,
        Trainer,
        TrainerCallback,
    )

    start = time.perf_counter()
    train, val = HFData(ctx.train), HFData(ctx.validation)
    trials: list[dict[str, Any]] = []
    clock = Clock(budget_seconds)
    best = Best(
        ctx,
        "hf_search",
        save=lambda model, folder: model.save_pretrained(folder),
        load=AutoModelForSequenceClassification.from_pretrained,
    )

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
                    "at": at_init[-1] if at_init else clock.start(),
                    "t_begin": time.perf_counter(),
                    "evals": [],
                }
            )

        def on_evaluate(self, args, state, control, metrics=None, **kwargs):
            if trials and metrics and f"eval_{METRIC}" in metrics:
                trials[-1]["evals"].append(metrics[f"eval_{METRIC}"])

        def on_train_end(self, args, state, control, model=None, **kwargs):
            # also called, by HF, just before a pruned trial raises TrialPruned
            row = trials[-1]
            row["examples"] = train.reads - row.pop("examples_start")
            row["train_seconds"] = time.perf_counter() - row.pop("t_begin")
            row["epochs"] = len(row["evals"])
            finished = state.max_steps and state.global_step >= state.max_steps
            row["state"] = "complete" if finished else "pruned"
            if finished:
                row["value"] = row["evals"][-1] if row["evals"] else None  # HF's objective
                if row["value"] is not None:
                    best.offer(row["number"], row["value"], model, row["params"])
            row["seconds"] = time.perf_counter() - row.pop("t_init")
            if clock.spent and trainer._trial is not None:
                trainer._trial.study.stop()  # no trial starts once the budget is spent
            print(
                f"  [{ctx.task} s{ctx.seed} hf_search] trial {row['number']} {row['state']} "
                f"{row['value']}",
                flush=True,
            )

    init_times: list[float] = []
    at_init: list[float] = []  # the trial's start on the clock
    base_init = hf_model_init(ctx)

    def model_init(trial=None):
        init_times.append(time.perf_counter())
        if trial is not None:  # the Trainer's own call, before the search, is no trial
            at_init.append(clock.start_trial(trial.study))
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
            n_trials=10_000,  # the budget stops it (Track.on_train_end)
            compute_objective=lambda metrics: metrics[f"eval_{METRIC}"],
            sampler=optuna.samplers.TPESampler(seed=ctx.seed),  # seeded; otherwise the default
        )
        clock.stop()
    for row in trials:
        row.pop("evals", None)
    best_run = {"run_id": best_run.run_id, "objective": best_run.objective}
    return _search_result(best, trials, start, clock, hf_best_run=best_run)


# ---------------------------------------------------------------- frozen embeddings + logistic


EMBED_LR_CS = 10  # C values, log-spaced 1e-4 to 1e4 (LogisticRegressionCV's grid)
EMBED_LR_MAX_ITER = 5000  # lbfgs on standardized features converges well within it


@torch.no_grad()
def embed_lr(ctx: Context, budget_seconds: float | None = None) -> dict[str, Any]:
    """What a sentence-encoder user does first: the frozen model's mean-pooled embeddings and a
    logistic regression on them (scikit-learn's LogisticRegressionCV, L2, EMBED_LR_CS values of
    C), nothing fine-tuned. As every method: fitted on train, C chosen on validation accuracy,
    the chosen model scored once on test. C is chosen on the validation split (a PredefinedSplit
    over train + validation, refit=False: the model kept is the one fitted on train alone), not
    by 5-fold CV on train, so that its val_score means what every other method's does and no
    method fits on validation rows. Features standardized with the train split's statistics.

    One trial on the clock: the feature pass over the three splits and the fit; it costs a
    small part of a budget unit, so the budget never stops it (no trial starts once it is
    spent, and this one starts at 0). Deterministic: the seed does not change it (the cut is
    the same for every seed)."""
    import warnings

    import numpy as np
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegressionCV
    from sklearn.model_selection import PredefinedSplit

    from hypertweaks.tasks.metrics import classification_metrics

    start = time.perf_counter()
    clock = Clock(budget_seconds)
    at = clock.start()
    splits = ctx.text.splits
    # the product's own frozen mean-pooled features (what its head-only candidate trains on)
    roles = (splits.train, splits.validation, splits.test)
    train, val, test = (ctx.text.pooled_features(split).numpy() for split in roles)
    _release(ctx)
    features_seconds = time.perf_counter() - start
    y_train, y_val = np.asarray(splits.train.labels), np.asarray(splits.validation.labels)
    mean, scale = train.mean(0), train.std(0) + 1e-6
    train, val, test = ((x - mean) / scale for x in (train, val, test))
    folds = np.r_[np.full(len(train), -1), np.zeros(len(val), dtype=int)]
    model = LogisticRegressionCV(
        Cs=EMBED_LR_CS,
        cv=PredefinedSplit(folds),
        l1_ratios=(0.0,),  # L2 (the deprecated `penalty` not passed)
        scoring=METRIC,
        refit=False,
        max_iter=EMBED_LR_MAX_ITER,
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        model.fit(np.concatenate([train, val]), np.concatenate([y_train, y_val]))
    converged = not any(issubclass(w.category, ConvergenceWarning) for w in caught)
    # scores per C on validation, whatever scikit-learn's attribute layout (legacy dict or array)
    scores = model.scores_
    scores = next(iter(scores.values())) if isinstance(scores, dict) else scores
    per_c = np.asarray(scores, dtype=float).reshape(-1)[: len(model.Cs_)]
    c = float(np.ravel(model.C_)[0])
    val_score = float(model.score(val, y_val))
    clock.stop()
    search_seconds = clock.used

    def logits(x: np.ndarray) -> torch.Tensor:
        """Log-probabilities (softmax gives them back) in the task's class order."""
        out = np.full((len(x), len(splits.classes)), -1e4)
        out[:, model.classes_] = model.predict_log_proba(x)
        return torch.as_tensor(out)

    test_metrics = classification_metrics(logits(test), torch.as_tensor(splits.test.labels))
    recipe = {"C": c, "features": "mean-pooled last layer, standardized", "penalty": "l2"}
    message = f"C {c:.3g} val {val_score:.4f} test {test_metrics[METRIC]:.4f}"
    _log(ctx, "embed_lr", f"{message} {search_seconds:.1f}s")
    # examples: one forward pass over train (no training of the encoder)
    result = _one_trial_result(recipe, val_score, test_metrics, len(train), at, search_seconds)
    result["trials"][0]["train_seconds"] = search_seconds - features_seconds
    return {
        **result,
        "seconds": time.perf_counter() - start,
        "features_seconds": features_seconds,
        "val_by_C": {f"{x:.4g}": round(float(v), 4) for x, v in zip(model.Cs_, per_c, strict=True)},
        "converged": converged,
    }


def _one_trial_result(
    recipe: dict, val_score: float, test_metrics: dict, examples: int, at: float, seconds: float
) -> dict[str, Any]:
    """The cell result of a method that is one trial on the clock (its `seconds` added by the
    caller, who knows where it started)."""
    trial = {
        "number": 0,
        "at": at,
        "state": "complete",
        "value": val_score,
        "examples": examples,
        "seconds": seconds,
        "epochs": 1,
        "recipe": recipe,
    }
    return {
        "chosen_recipe": recipe,
        "val_score": val_score,
        "test_metrics": {k: test_metrics[k] for k in ("accuracy", "macro_f1", "loss")},
        "examples": examples,
        "search_seconds": seconds,
        "curve": anytime_curve([trial]),
        "trials": [trial],
    }


SETFIT_BATCH = 16  # SetFit's default batch of pairs


def _pair_step_seconds(body, texts: list[str], batch: int, repeats: int = 3) -> float:
    """Seconds of one contrastive training step (a batch of pairs: 2 x batch sentences through
    the encoder, forward and backward), timed on the machine as it is now."""
    sentences = (texts * (2 * batch // max(len(texts), 1) + 1))[: 2 * batch]
    body.train()
    times = []
    for _ in range(repeats + 1):  # the first warms up
        started = time.perf_counter()
        features = body.tokenize(sentences)
        features = {
            k: v.to(body.device) if isinstance(v, torch.Tensor) else v for k, v in features.items()
        }
        body(features)["sentence_embedding"].pow(2).mean().backward()
        body.zero_grad(set_to_none=True)
        times.append(time.perf_counter() - started)
    return float(sorted(times[1:])[len(times[1:]) // 2]) * 1.1  # optimizer step, pairing on top


def setfit(ctx: Context, budget_seconds: float | None = None) -> dict[str, Any]:
    """SetFit (Tunstall et al. 2022) as its library trains it by default: the sentence encoder
    fine-tuned contrastively on pairs of training rows (CosineSimilarityLoss, oversampled pairs,
    batch 16, lr 2e-5, one epoch over the pairs), then a logistic-regression head on its
    embeddings. Its one change: a full epoch of oversampled pairs of 600 rows is far more than
    any budget here, so the budget sets SetFit's own `max_steps` (the steps it holds, from a
    timed step; its warmup and linear decay then fit the budget), and a callback stops the pair
    steps should the clock run out first; then the head is fitted. No selection on validation
    (the recipe has none): the validation score is recorded, test scored once. The same cut,
    tokens (max_length) and seed as every method."""
    import numpy as np
    from datasets import Dataset
    from setfit import SetFitModel, Trainer, TrainingArguments
    from transformers import TrainerCallback

    from hypertweaks.tasks.metrics import classification_metrics

    start = time.perf_counter()
    clock = Clock(budget_seconds)
    at = clock.start()
    splits = ctx.text.splits
    _release(ctx)
    steps = {"done": 0}

    class StopWhenSpent(TrainerCallback):
        def on_step_end(self, args, state, control, **kwargs):
            steps["done"] = state.global_step
            if clock.spent:
                control.should_training_stop = True

    def rows(split) -> Dataset:
        labels = [int(x) for x in split.labels]
        return Dataset.from_dict({"text": list(split.inputs), "label": labels})

    torch.manual_seed(ctx.seed)
    model = SetFitModel.from_pretrained(ctx.model or model_path(), device=str(ctx.device))
    model.model_body.max_seq_length = ctx.cut.max_length
    step = _pair_step_seconds(model.model_body, list(splits.train.inputs), SETFIT_BATCH)
    # the steps the budget holds, less the head's pass over train (a third of a training step)
    head_pass = len(splits.train) / (2 * SETFIT_BATCH) * step / 3
    left = (budget_seconds or 0) - clock.used - head_pass
    max_steps = max(1, int(left / step)) if budget_seconds else -1
    args = TrainingArguments(
        output_dir=_tmp_root(),
        batch_size=(SETFIT_BATCH, 2),
        max_steps=max_steps,
        max_length=ctx.cut.max_length,
        seed=ctx.seed,
        report_to="none",
        save_strategy="no",
        show_progress_bar=False,
    )
    trainer = Trainer(
        model=model, args=args, train_dataset=rows(splits.train), callbacks=[StopWhenSpent()]
    )
    trainer.train()
    clock.stop()
    search_seconds = clock.used

    def logits(texts: list[str]) -> torch.Tensor:
        """Log-probabilities in the task's class order."""
        probs = np.asarray(model.predict_proba(list(texts), as_numpy=True), dtype=float)
        out = np.full((len(texts), len(splits.classes)), -1e4)
        out[:, np.asarray(model.model_head.classes_, dtype=int)] = np.log(np.maximum(probs, 1e-12))
        return torch.as_tensor(out)

    val_labels = torch.as_tensor(splits.validation.labels)
    val_score = float(classification_metrics(logits(splits.validation.inputs), val_labels)[METRIC])
    test_labels = torch.as_tensor(splits.test.labels)
    test_metrics = classification_metrics(logits(splits.test.inputs), test_labels)
    recipe = {
        "pair_steps": steps["done"],
        "pairs_batch": args.embedding_batch_size,
        "body_learning_rate": args.body_embedding_learning_rate,
        "head": "LogisticRegression",
        "sampling": args.sampling_strategy,
    }
    message = f"{steps['done']} pair steps val {val_score:.4f} test {test_metrics[METRIC]:.4f}"
    _log(ctx, "setfit", f"{message} {search_seconds:.1f}s")
    examples = 2 * steps["done"] * args.embedding_batch_size  # two sentences a pair, each trained
    result = _one_trial_result(recipe, val_score, test_metrics, examples, at, search_seconds)
    return {**result, "seconds": time.perf_counter() - start}


def _tmp_root() -> str:
    root = WORK_DIR / "tmp"
    root.mkdir(parents=True, exist_ok=True)
    return str(root)


METHODS: dict[str, Callable[[Context, float], dict[str, Any]]] = {
    "hypertweaks": hypertweaks_tune,
    "hypertweaks_larger": hypertweaks_larger,
    "defaults": defaults,
    "random": random_search,
    "tpe_median": tpe_median,
    "hf_search": hf_search,
    "onepoch_topk": onepoch_topk,
    "embed_lr": embed_lr,
    "setfit": setfit,
}


def finite(value: Any) -> bool:
    return isinstance(value, int | float) and math.isfinite(value)
