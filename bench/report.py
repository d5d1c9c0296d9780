"""bench/RESULTS.md and the anytime plots, from the cells under bench/results/."""

from __future__ import annotations

import json
import os
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from bench import RESULTS_DIR, RESULTS_MD

METHOD_ORDER = ["hypertweaks", "defaults", "random", "tpe_median", "hf_search", "onepoch_topk"]
COLORS = {
    "hypertweaks": "tab:red",
    "defaults": "black",
    "random": "tab:gray",
    "tpe_median": "tab:blue",
    "hf_search": "tab:orange",
    "onepoch_topk": "tab:green",
}


def load_cells(cells_dir: Path) -> list[dict[str, Any]]:
    cells = []
    for path in sorted(cells_dir.glob("*/*.json")):
        cell = json.loads(path.read_text())
        cell["_path"] = str(path)
        cells.append(cell)
    return cells


def _mean_sd(values: list[float], scale: float = 1.0, digits: int = 1) -> str:
    values = [v * scale for v in values if v is not None]
    if not values:
        return "–"
    if len(values) == 1:
        return f"{values[0]:.{digits}f}"
    return f"{statistics.mean(values):.{digits}f} ± {statistics.stdev(values):.{digits}f}"


def _mean(values: list[float]) -> float | None:
    values = [v for v in values if v is not None]
    return statistics.mean(values) if values else None


def _fmt(value: float | None, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def _test(cell, key: str = "accuracy") -> float | None:
    return (cell["result"].get("test_metrics") or {}).get(key)


def _overheads(cell) -> list[float]:
    """Per trial: wall time of the trial minus the time inside the training call (which includes
    the per-epoch validation), i.e. what the search machinery adds around training."""
    return [
        t["seconds"] - t["train_seconds"]
        for t in cell["result"].get("trials", [])
        if t.get("train_seconds") is not None and t.get("seconds")
    ]


def tables(cells: list[dict[str, Any]]) -> dict[tuple[str, str], list[dict[str, Any]]]:
    """(cut, budget) -> the cells of that table (the defaults cells join every budget)."""
    by_cut: dict[str, list] = defaultdict(list)
    for cell in cells:
        by_cut[cell["cut"]["key"]].append(cell)
    out = {}
    for cut, group in by_cut.items():
        budgets = sorted(
            {c["budget"] for c in group if c["budget"]},
            key=lambda b: float(b.removesuffix("x")),
        )
        for budget in budgets or ["–"]:
            out[(cut, budget)] = [c for c in group if c["budget"] in (budget, None)]
    return out


def summary_rows(group: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_task_method: dict[tuple[str, str], list] = defaultdict(list)
    for cell in group:
        by_task_method[(cell["task"], cell["method"])].append(cell)
    best_test = {}
    for cell in group:
        score = _test(cell)
        if score is not None:
            best_test[cell["task"]] = max(best_test.get(cell["task"], score), score)
    rows = []
    order = {m: i for i, m in enumerate(METHOD_ORDER)}
    for (task, method), cells in sorted(
        by_task_method.items(), key=lambda kv: (kv[0][0], order.get(kv[0][1], 99))
    ):
        tests = [_test(c) for c in cells]
        best = best_test.get(task)
        regrets = [(best - t) / best if best and t is not None else None for t in tests]
        overheads = [o for c in cells for o in _overheads(c)]
        rows.append(
            {
                "task": task,
                "method": method,
                "seeds": len(cells),
                "test_accuracy": _mean_sd(tests, 100),
                "test_macro_f1": _mean_sd([_test(c, "macro_f1") for c in cells], 100),
                "val": _mean_sd([c["result"].get("val_score") for c in cells], 100),
                "regret": _mean([r for r in regrets if r is not None]),
                "examples": _mean([c["result"].get("examples") for c in cells]),
                "seconds": _mean([c["result"].get("seconds") for c in cells]),
                "budget_seconds": _mean([c.get("budget_seconds") for c in cells]),
                "trials": _mean([len(c["result"].get("trials", [])) for c in cells]),
                "complete": _mean(
                    [
                        sum(t["state"] == "complete" for t in c["result"].get("trials", []))
                        for c in cells
                    ]
                ),
                "overhead": statistics.mean(overheads) if overheads else None,
                "recipes": [c["result"].get("chosen_recipe") for c in cells],
            }
        )
    return rows


def anytime_plot(group: list[dict[str, Any]], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = sorted({c["task"] for c in group})
    fig, axes = plt.subplots(1, len(tasks), figsize=(5.5 * len(tasks), 4), squeeze=False)
    for ax, task in zip(axes[0], tasks, strict=True):
        seen = set()
        for cell in sorted(group, key=lambda c: METHOD_ORDER.index(c["method"])):
            if cell["task"] != task:
                continue
            curve = cell["result"].get("curve") or []
            if not curve:
                continue
            method = cell["method"]
            xs = [p[0] for p in curve]
            ys = [100 * p[1] for p in curve]
            label = None if method in seen else method
            seen.add(method)
            color = COLORS.get(method)
            if len(curve) == 1:
                ax.plot(xs, ys, "o", color=color, label=label)
            else:
                ax.step(xs, ys, where="post", color=color, label=label, alpha=0.85)
                ax.plot(xs[-1:], ys[-1:], "o", color=color, ms=3)
        ax.set_title(task)
        ax.set_xlabel("training examples processed")
        ax.set_ylabel("best validation accuracy so far (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _machines(cells: list[dict[str, Any]]) -> list[str]:
    seen = set()
    for c in cells:
        m = c.get("machine", {})
        seen.add(
            f"{m.get('device')} ({m.get('device_name')}), {m.get('cpus_usable')} of "
            f"{m.get('cpu_count')} CPUs usable, torch {m.get('torch')}, transformers "
            f"{m.get('transformers')}, optuna {m.get('optuna')}, hypertweaks "
            f"{m.get('hypertweaks_commit')}"
            + (" (src modified)" if m.get("hypertweaks_dirty") else "")
        )
    return sorted(seen)


def _speed_section(results_dir: Path) -> list[str]:
    files = sorted((results_dir / "speed").glob("*.json"))
    if not files:
        return ["No speed runs yet: `python -m bench speed`."]
    lines = [
        "| task | cut | device | hypertweaks.train.fit (ex/s) | HF Trainer (ex/s) | ratio |",
        "|---|---|---|---:|---:|---:|",
    ]
    for path in files:
        s = json.loads(path.read_text())
        m = s["machine"]
        lines.append(
            f"| {s['task']} | {s['cut']['key']} | {m['device']} ({m['cpus_usable']} CPUs) | "
            f"{s['examples_per_second']['hypertweaks']:.1f} | "
            f"{s['examples_per_second']['hf_trainer']:.1f} | {s['ratio']:.2f} |"
        )
    lines.append("")
    lines.append(
        "Same recipe (the default recipe), same tokens, one epoch, run back to back and "
        "alternated; the median of the repeats. Ratio > 1: hypertweaks trains faster."
    )
    return lines


def _mixed_machines(cells: list[dict[str, Any]]) -> list[str]:
    """A warning naming the tasks and seeds whose cells ran on different machines: the budget is
    in seconds of the defaults run, so a method run on a faster machine got a bigger budget."""
    by_seed: dict[tuple[str, int], dict[str, list[str]]] = {}
    for c in cells:
        name = c.get("machine", {}).get("device_name", "?")
        by_seed.setdefault((c["task"], c["seed"]), {}).setdefault(name, []).append(c["method"])
    mixed = {key: names for key, names in sorted(by_seed.items()) if len(names) > 1}
    if not mixed:
        return []
    lines = [
        "",
        "**Not comparable within these tasks and seeds**: their cells ran on different machines, "
        "and a method timed on a faster one than its `defaults` cell got a larger budget:",
        "",
    ]
    for (task, seed), names in mixed.items():
        where = "; ".join(f"{', '.join(sorted(m))} on {n}" for n, m in names.items())
        lines.append(f"- {task} seed {seed}: {where}")
    return lines


def _older_clock(group: list[dict[str, Any]]) -> list[str]:
    """A note on the cells run before every method was held to the bench's one clock."""
    searches = [c for c in group if c["budget"]]
    older = [c for c in searches if "budget_counts" not in c]
    if not older:
        return []
    share = "All" if len(older) == len(searches) else f"{len(older)} of {len(searches)}"
    return [
        "",
        f"{share} budgeted cells here predate the bench's common clock: `random`, `tpe_median` "
        "and `hf_search` were stopped by Optuna's own timeout (the same wall clock, started "
        "with the study a moment before the first trial), as `hypertweaks` still is, but "
        "`onepoch_topk`'s full runs were not stopped at the budget, and `tpe_median` used "
        "Optuna's default startup (10 random trials, 5 before the median pruner acts), so it "
        "chose what `random` chose. The budget unit's recipe is the same.",
    ]


def report(results_dir: Path | None = None, out: Path | None = None) -> Path:
    """Writes RESULTS.md (next to the default results folder, else inside results_dir) and one
    anytime plot per cut and budget."""
    if out is None:
        out = RESULTS_MD if results_dir is None else results_dir / "RESULTS.md"
    results_dir = results_dir or RESULTS_DIR
    cells = load_cells(results_dir / "cells")
    lines = [
        "# hypertweaks benchmark results",
        "",
        "Generated by `python -m bench report` from `bench/results/cells/` (one JSON file per "
        "task, method, budget and seed). Budget: a multiple of the wall time of one run of the "
        "reference recipe (bench/reference.py: lr 5e-5, batch 16, 3 epochs, linear decay after "
        "10% warmup, weight decay 0.01, nothing frozen) on the same task and seed (the "
        "`defaults` row), counted for every method as the wall time since its first trial "
        "started (its setup before that is not counted, the work between its trials is); no "
        "trial starts after the budget is spent, the trial running then finishes. Every method "
        "selects on validation accuracy; test data is scored once, on the chosen model.",
        "",
        "Columns: test accuracy / macro-F1 of the chosen model (%, mean ± sd over seeds); `val`: "
        "the validation accuracy it was chosen on; `regret`: (best test accuracy any method "
        "reached on the task in this table − this method's) / that best, mean over seeds; "
        "`examples`: training examples processed by the whole search (thousands); `seconds`: "
        "wall time of the whole method, its own setup (hypertweaks: data checks and smoke run) "
        "and the final test scoring included (budget in brackets); `trials`: run (completed); "
        "`overhead`: mean per trial of trial wall time minus the time inside the training "
        "call (which includes per-epoch validation).",
        "",
    ]
    if not cells:
        lines.append("No cells yet: `python -m bench quick` or `python -m bench run ...`.")
    for (cut, budget), group in tables(cells).items():
        lines += [f"## cut {cut}, budget {budget}", ""]
        lines += [
            "| task | method | seeds | test acc | test macro-F1 | val | regret | examples (k) "
            "| seconds (budget) | trials (completed) | overhead s/trial |",
            "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
        ]
        for r in summary_rows(group):
            examples = None if r["examples"] is None else r["examples"] / 1000
            budget_s = "" if r["budget_seconds"] is None else f" ({r['budget_seconds']:.0f})"
            lines.append(
                f"| {r['task']} | {r['method']} | {r['seeds']} | {r['test_accuracy']} | "
                f"{r['test_macro_f1']} | {r['val']} | {_fmt(r['regret'], '.3f')} | "
                f"{_fmt(examples, '.1f')} | {_fmt(r['seconds'], '.0f')}{budget_s} | "
                f"{_fmt(r['trials'], '.1f')} ({_fmt(r['complete'], '.1f')}) | "
                f"{_fmt(r['overhead'], '.2f')} |"
            )
        lines += _mixed_machines([c for c in cells if c["cut"]["key"] == cut])
        lines += _older_clock(group)
        png = results_dir / f"anytime_{cut}_{budget}.png"
        anytime_plot(group, png, f"cut {cut}, budget {budget}")
        lines += ["", f"![anytime curves]({os.path.relpath(png, out.parent)})", ""]
        lines += ["Chosen recipes (seed order):", ""]
        for r in summary_rows(group):
            for recipe in r["recipes"]:
                shown = _short(recipe)
                lines.append(f"- {r['task']} / {r['method']}: {shown}")
        lines.append("")
    lines += ["## Training speed", ""] + _speed_section(results_dir) + [""]
    if cells:
        lines += ["## Machines", ""] + [f"- {m}" for m in _machines(cells)] + [""]
    out.write_text("\n".join(lines))
    print(f"wrote {out}")
    return out


def _short(recipe: dict[str, Any] | None) -> str:
    if not recipe:
        return "–"
    parts = []
    for key, value in recipe.items():
        if isinstance(value, float):
            value = f"{value:.3g}"
        parts.append(f"{key}={value}")
    return ", ".join(parts)
