"""What `larger_models` buys at a budget (issue 31): the product on MiniLM at 1x and at the budget,
and the product offered all-mpnet-base-v2 at the same budget (`hypertweaks_larger`), all in the
same run on MiniLM's cut, each pair with its own reference run.

    python -m bench.larger [--root bench/results/larger] [--budget 10x] [--minilm-budget 3x]

writes LARGER_<budget>.md beside the cells and prints it (`--minilm-budget`: the product on
MiniLM at another budget than `larger`'s, where its cells at that budget were not run; `--out`:
another file to write). Cells:
`HYPERTWEAKS_BENCH_RESULTS=bench/results/larger python -m bench run --tasks T --seeds S
--methods hypertweaks --budget 1x,10x --threads 1 --no-report`, then the same with
`--methods hypertweaks_larger --budget 10x`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.confirm import CUT, RESULTS, cell, percents

ROOT = RESULTS / "larger"


def _used(body: dict) -> float | None:
    """The cell's wall seconds (the larger encoder's estimate included) over its budget."""
    if not body.get("wall_seconds") or not body.get("budget_seconds"):
        return None
    return body["wall_seconds"] / body["budget_seconds"]


def _backbone(result: dict) -> str:
    """Which backbone the cell's study tuned, its estimated default run, its final model."""
    choice, soup = result.get("backbone") or {}, result.get("final_model") or {}
    name = Path(choice.get("model", "MiniLM")).name
    name = "MiniLM" if "minilm" in name.lower() or name == "model" else name
    estimate = next(iter((choice.get("estimated_seconds") or {}).values()), None)
    runs = f"soup of {len(soup['members'])}" if soup.get("kept") else "one run kept"
    if frozen := choice.get("freeze_layers"):
        runs = f"lowest {frozen} layers frozen, {runs}"
    return f"{name} ({runs}; estimate {estimate:.0f}s)" if estimate else f"{name} ({runs})"


def table(budget: str, root: Path = ROOT, minilm_budget: str | None = None) -> str:
    from bench.meta.simulate import paired_interval

    mine = minilm_budget or budget
    folder = root / "cells" / CUT
    lines = [
        f"# The product offered a larger encoder, at {budget} (test accuracy %)",
        "",
        f"Cut {CUT}; the budget unit is MiniLM's reference run. `larger` is hypertweaks with "
        "`larger_models: [all-mpnet-base-v2]`.",
        "",
        f"| task | seed | unit (s) | reference | hypertweaks 1x | hypertweaks {mine} | "
        f"larger {budget} | what larger tuned |",
        "|---|---|---|---|---|---|---|---|",
    ]
    shown = [0, 1, 2, 3]
    if mine == "1x":  # its own column once
        lines[-2] = lines[-2].replace(" hypertweaks 1x | hypertweaks 1x |", " hypertweaks 1x |")
        lines[-1], shown = lines[-1][:-4], [0, 1, 3]
    rows, used = [], {mine: [], "larger": []}
    for path in sorted(folder.glob(f"*__hypertweaks_larger__{budget}__s*.json")):
        task, _, _, seed = path.stem.split("__")
        paths = [
            cell(root, task, "defaults", seed),
            cell(root, task, "hypertweaks", seed, "1x"),
            cell(root, task, "hypertweaks", seed, mine),
            path,
        ]
        if not all(p.exists() for p in paths):
            continue
        bodies = [json.loads(p.read_text()) for p in paths]  # each cell read once
        scores = [body["result"]["test_metrics"]["accuracy"] for body in bodies]
        unit = bodies[1]["unit_seconds"]
        rows.append((task, scores))
        for key, spent in ((mine, _used(bodies[2])), ("larger", _used(bodies[3]))):
            if spent is not None:
                used[key].append(spent)
        lines.append(
            f"| {task} | {seed[1:]} | {unit:.0f} | "
            + " | ".join(percents([scores[i] for i in shown]))
            + f" | {_backbone(bodies[3]['result'])} |"
        )
    if not rows:
        return "\n".join(lines + ["", "(no complete pair yet)"]) + "\n"
    score = {i: np.array([r[1][i] for r in rows]) * 100 for i in range(4)}
    lines += ["", f"Paired over {len(rows)} task/seed pairs (points, bootstrap 95% interval, "
              "won-lost):", ""]  # fmt: skip
    pairs = [(f"larger {budget} minus hypertweaks 1x", 3, 1)]
    if mine != "1x":
        pairs[:0] = [(f"larger {budget} minus hypertweaks {mine}", 3, 2)]
        pairs.append((f"hypertweaks {mine} minus hypertweaks 1x", 2, 1))
    for name, a, b in pairs:
        mean, low, high = paired_interval(score[a], score[b])
        won, lost = int((score[a] > score[b]).sum()), int((score[a] < score[b]).sum())
        lines.append(f"- {name}: {mean:+.1f} [{low:+.1f}, {high:+.1f}], {won}-{lost}")
    if used[mine] and used["larger"] and mine != "1x":
        spans = [
            f"{name} {np.mean(v):.2f} ({min(v):.2f}-{max(v):.2f})"
            for name, v in (
                (f"hypertweaks {mine}", used[mine]),
                (f"larger {budget}", used["larger"]),
            )
        ]
        lines.append(f"- wall time over budget, mean (range): {'; '.join(spans)}")
    elif used["larger"]:
        v = used["larger"]
        lines.append(
            f"- larger {budget}'s wall time over budget: {np.mean(v):.2f} "
            f"({min(v):.2f}-{max(v):.2f})"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.larger", description=__doc__)
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument("--budget", default="10x")
    parser.add_argument("--minilm-budget", default=None)
    parser.add_argument("--out", type=Path, help="default: LARGER_<budget>.md in --root")
    args = parser.parse_args()
    text = table(args.budget, args.root, args.minilm_budget)
    (args.out or args.root / f"LARGER_{args.budget}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
