"""How noisy is a validation macro-F1? The selector keeps the default recipe unless another trial
leads it by one validation standard error (hypertweaks.noise); macro-F1 had none, so a study that
selected on it took the best validation value however small its lead. This compares the binomial
standard error of the value on n rows, sqrt(v (1 - v) / n), the one accuracy uses, with the
bootstrap standard error of the recorded runs' validation macro-F1 (and accuracy, as a check).

    python -m bench.meta.noise   # bench/results/meta/NOISE.md, a few minutes of one core

Every design cell of seed 0 (the recipes recorded on every task), its last epoch's validation
predictions, 300 bootstrap resamples of the validation rows.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np

from bench.meta.store import decode
from hypertweaks.noise import standard_error
from hypertweaks.tasks.metrics import macro_f1

META = Path(__file__).resolve().parents[1] / "results" / "meta"
CUTS = ("n600-v200-t500-L48", "img128-n400-v100-t400")
RESAMPLES = 300


def ratios(
    truth: np.ndarray, predicted: np.ndarray, rng: np.random.Generator
) -> tuple[float, float]:
    """(binomial / bootstrap standard error) of macro-F1 and of accuracy for one run."""
    n = len(truth)
    rows = rng.integers(0, n, (RESAMPLES, n))
    f1 = np.std([macro_f1(truth[r], predicted[r]) for r in rows])
    acc = np.std([(truth[r] == predicted[r]).mean() for r in rows])
    f1_error = standard_error("macro_f1", macro_f1(truth, predicted), n)
    return f1_error / f1, standard_error("accuracy", (truth == predicted).mean(), n) / acc


def task_rows(cut: str, rng: np.random.Generator) -> list[str]:
    lines = []
    for path in sorted((META / cut / "tasks").glob("*.json")):
        task = json.loads(path.read_text())
        name, truth = task["task"], np.asarray(task["validation_labels"])
        with np.load(META / cut / "probs" / f"{name}.npz") as data:
            members = [m for m in data.files if "__r" in m and m.endswith("__s0/validation")]
            found = [ratios(truth, decode(data[m])[-1].argmax(1), rng) for m in members]
        f1, acc = np.median(found, axis=0)
        lines.append(
            f"| {name} | {len(task['classes'])} | {len(truth)} | {len(found)} | {f1:.2f} | "
            f"{acc:.2f} |"
        )
    return lines


def main() -> int:
    warnings.filterwarnings("ignore")
    rng = np.random.default_rng(0)
    lines = [
        "# The binomial standard error against the bootstrap's, on validation",
        "",
        "`python -m bench.meta.noise` (bench/meta/noise.py): median over each task's design",
        "cells at seed 0 (last epoch) of sqrt(v (1 - v) / n) over the bootstrap standard error.",
        "",
        "| task | classes | validation rows | runs | macro-F1 | accuracy |",
        "|---|---|---|---|---|---|",
    ]
    for cut in CUTS:
        lines += task_rows(cut, rng)
    (META / "NOISE.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
