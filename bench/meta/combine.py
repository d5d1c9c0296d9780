"""What a final model made from several trials could gain over the LP-FT default alone, read from
the stored test probabilities: the average of the probabilities of the default and other runs of
the same task (an ensemble). A weight-averaged soup of the same models rarely beats their
ensemble, so the ensemble's gain bounds what a soup would buy at a 2x-3x budget.

    python -m bench meta combine   # writes bench/results/meta/<cut>/COMBINE.md
"""

from __future__ import annotations

import itertools

import numpy as np

from bench.meta.simulate import (
    DEFAULTS_LP_FT,
    HEAD_ONLY,
    META_DIR,
    Table,
    paired_interval,
)


def _gains(table: Table, partners) -> np.ndarray:
    """Per task: the ensemble of the default at a seed with `partners(seed)` (each a (recipe,
    seed) list) minus the default alone, mean over the seeds."""
    probs: dict[tuple[str, int, int], np.ndarray] = {}  # each run's file is read once

    def at_best_epoch(task: str, recipe: int, seed: int) -> np.ndarray:
        if (task, recipe, seed) not in probs:
            run = table.run(task, recipe, seed)
            probs[(task, recipe, seed)] = run.probs("test")[run.chosen_epoch].astype(np.float32)
        return probs[(task, recipe, seed)]

    out = []
    for task in table.tasks:
        labels = np.array(table.tasks[task]["test_labels"])
        diffs = []
        for seed in table.seeds:
            run = table.run(task, DEFAULTS_LP_FT, seed)
            alone = run.chosen_test
            default = at_best_epoch(task, DEFAULTS_LP_FT, seed)
            for group in partners(seed):
                total = default + sum(at_best_epoch(task, r, s) for r, s in group)
                diffs.append(float((total.argmax(axis=1) == labels).mean()) - alone)
        out.append(np.mean(diffs))
    return np.array(out) * 100


def combine(table: Table) -> str:
    """COMBINE.md: the ensemble's gain over the LP-FT default alone, per partner."""
    seeds = table.seeds
    rows = {
        "the default at another seed (2 models)": lambda s: [
            [(DEFAULTS_LP_FT, o)] for o in seeds if o != s
        ],
        f"the default at every other seed ({len(seeds)} models)": lambda s: [
            [(DEFAULTS_LP_FT, o) for o in seeds if o != s]
        ],
        "the head-only candidate, same seed": lambda s: [[(HEAD_ONLY, s)]],
        **{f"design recipe {r}, same seed": (lambda s, r=r: [[(r, s)]]) for r in table.recipes},
    }
    if len(table.recipes) > 1:
        rows["two design recipes, same seed (3 models)"] = lambda s: [
            [(a, s), (b, s)] for a, b in itertools.combinations(table.recipes, 2)
        ]
    lines = [
        f"# Several trials in one final model ({table.cut})",
        "",
        "The LP-FT default's test probabilities averaged with other recorded runs of the same "
        "task, each at its best validation epoch, against the default alone: points of test "
        f"accuracy, mean over {len(table.tasks)} tasks (each the mean over seeds {seeds}), "
        "bootstrap 95% interval over tasks, tasks won-lost. An ensemble serves several models; "
        "a weight-averaged soup of the same models is one model and rarely beats their "
        "ensemble, so these gains bound a soup's.",
        "",
        "`python -m bench meta combine`",
        "",
        "| the default averaged with | gain | tasks won-lost |",
        "|---|---|---|",
    ]
    for name, partners in rows.items():
        gains = _gains(table, partners)
        mean, low, high = paired_interval(gains, np.zeros_like(gains))
        won, lost = int((gains > 1e-9).sum()), int((gains < -1e-9).sum())
        lines.append(f"| {name} | {mean:+.2f} [{low:+.2f}, {high:+.2f}] | {won}-{lost} |")
    text = "\n".join(lines) + "\n"
    (META_DIR / table.cut / "COMBINE.md").write_text(text)
    return text
