"""Cells recorded elsewhere (another machine, a GPU, other weights) against the committed cells of
the same (task, recipe, seed): whether they may join the table. Training on a GPU is not
bit-equal to training on the CPU, so the question is whether the difference is inside the
seed-to-seed spread that the table already holds."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bench.meta.simulate import load_table


def calibrate(folder: Path, cut: str, reference: Path | None = None) -> str:
    """A table of every cell under `folder/<cut>/cells` that the committed table (or
    `reference`) also holds: its test accuracy at the chosen epoch in both, and the largest
    per-epoch difference of validation and test accuracy; then the mean |difference| beside the
    committed table's own seed-to-seed spread of the same recipes."""
    other = load_table(cut, folder)
    committed = load_table(cut, reference)
    shared = sorted(k for k in other.runs if k in committed.runs)
    if not shared:
        return f"no cell under {folder / cut} matches a committed cell"
    lines = [
        f"# Cells of {folder} against the committed cells ({cut})",
        "",
        "| task | recipe | seed | committed test | new test | difference | max epoch |val| diff "
        "| max epoch |test| diff |",
        "|---|---|---|---|---|---|---|---|",
    ]
    diffs, spreads = [], []
    for key in shared:
        a, b = committed.runs[key], other.runs[key]
        n = min(a.epochs, b.epochs)
        diff = b.chosen_test - a.chosen_test
        diffs.append(diff)
        lines.append(
            f"| {key[0]} | {key[1]} | {key[2]} | {a.chosen_test * 100:.1f} "
            f"| {b.chosen_test * 100:.1f} "
            f"| {diff * 100:+.1f} | {np.abs(a.val_acc[:n] - b.val_acc[:n]).max() * 100:.1f} "
            f"| {np.abs(a.test_acc[:n] - b.test_acc[:n]).max() * 100:.1f} |"
        )
        twins = [run for k, run in committed.runs.items() if k[:2] == key[:2]]  # every seed
        if len(twins) > 1:
            spreads.append(np.std([run.chosen_test for run in twins]))
    spread = f"{np.mean(spreads) * 100:.1f} points" if spreads else "unknown (one seed)"
    lines += [
        "",
        f"{len(shared)} cells: mean difference {np.mean(diffs) * 100:+.2f} points, mean "
        f"|difference| {np.mean(np.abs(diffs)) * 100:.2f}; the committed cells' seed-to-seed sd "
        f"of the same recipes and tasks: {spread}.",
    ]
    return "\n".join(lines) + "\n"
