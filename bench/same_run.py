"""hypertweaks against every peer run in the same run: same machine, same cut and seeds, each
pair's budget unit (the reference recipe's `defaults` cell) measured beside them. Run the cells,
one command per task and seed, two at a time on this 2-core machine:

    HYPERTWEAKS_BENCH_RESULTS=bench/results/same_run python -m bench run --tasks T --seeds S \\
        --methods hypertweaks,hf_search,random,tpe_median,onepoch_topk --budget 1x --threads 1

then `python -m bench.same_run --budget 1x` writes bench/results/same_run/SAME_RUN_1x.md: every
pair, the paired difference to each peer with its bootstrap interval, and the gap per task,
with the trial hypertweaks chose (where it trails, the first place to look for why).

Peers measured later (EXTRA_PEERS: `embed_lr`, frozen embeddings and a logistic regression) are
a column of their own once any of their cells exists at that budget; they need the budget unit
cells only, so they run alone into the same folder:

    HYPERTWEAKS_BENCH_RESULTS=bench/results/same_run OMP_NUM_THREADS=1 python -m bench run \
        --tasks T --seeds S --methods embed_lr --budget 1x,3x --threads 1 --no-report
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from bench.confirm import (
    CUT,
    HEADERS,
    PEERS,
    RESULTS,
    _mean_sd,
    _without_each_task,
    cell,
    percents,
    test_accuracy,
)

ROOT = RESULTS / "same_run"
# Peers added after the table's first runs, shown where measured: method -> column header.
EXTRA_PEERS = {"embed_lr": "embed+LR"}


def peers_at(budget: str, root: Path = ROOT) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The peers of the table at `budget` and their headers: the fine-tuning searches
    (bench.confirm.PEERS), then each of EXTRA_PEERS with a cell at that budget."""
    folder = root / "cells" / CUT
    extra = [m for m in EXTRA_PEERS if any(folder.glob(f"*__{m}__{budget}__s*.json"))]
    return PEERS + tuple(extra), HEADERS + tuple(EXTRA_PEERS[m] for m in extra)


def paired_lines(rows: list[tuple[float, list[float], float, str]], headers=HEADERS) -> list[str]:
    """bench.confirm.paired_lines for any peers: hypertweaks minus each peer (`headers`, in the
    order of each row's scores), the best peer of each pair and the reference, with the bootstrap
    interval over pairs and the pairs won-lost; then the gap to the best peer per task. With
    peers beyond the fine-tuning searches, also against the best of those alone (the best peer
    as the table had it before)."""
    from bench.meta.simulate import paired_interval

    now = np.array([r[2] for r in rows]) * 100
    against = {name: np.array([r[1][i] for r in rows]) * 100 for i, name in enumerate(headers)}
    against["the best peer of each pair"] = np.array([max(r[1]) for r in rows]) * 100
    if len(headers) > len(HEADERS):
        against["the best fine-tuning search of each pair (" + ", ".join(HEADERS) + ")"] = (
            np.array([max(r[1][: len(HEADERS)]) for r in rows]) * 100
        )
    against["reference"] = np.array([r[0] for r in rows]) * 100
    lines = ["", f"hypertweaks minus each, over {len(rows)} task/seed pairs (points, bootstrap "
             "95% interval over pairs, pairs won-lost):", ""]  # fmt: skip
    for name, other in against.items():
        mean, low, high = paired_interval(now, other)
        won, lost = int((now > other).sum()), int((now < other).sum())
        lines.append(f"- {name}: {mean:+.1f} [{low:+.1f}, {high:+.1f}], {won}-{lost}")
    lines += _without_each_task(rows, now, against["the best peer of each pair"])
    lines += ["", "Per task: mean ± standard deviation over its seeds (the spread), and "
              "hypertweaks minus the best peer of each pair with its range over seeds:", "",
              "| task | seeds | reference | " + " | ".join(headers) + " | hypertweaks | "
              "minus the best peer |", "|---|---|---|" + "---|" * (len(headers) + 2)]  # fmt: skip
    for task in sorted({r[3] for r in rows}):
        mine = [r for r in rows if r[3] == task]
        columns = [[r[0] for r in mine]] + [[r[1][i] for r in mine] for i in range(len(headers))]
        columns.append([r[2] for r in mine])
        spread = " | ".join(_mean_sd(100 * np.array(c)) for c in columns)
        gaps = [100 * (r[2] - max(r[1])) for r in mine]
        lines.append(f"| {task} | {len(mine)} | {spread} | {np.mean(gaps):+.1f} "
                     f"({min(gaps):+.1f} to {max(gaps):+.1f}) |")  # fmt: skip
    return lines


def _chosen_tag(path: Path) -> str:
    """Which of hypertweaks' trials made the final model: head-only, defaults or a searched one."""
    result = json.loads(path.read_text())["result"]
    number = result.get("chosen_trial")
    for trial in result["trials"]:
        if number is not None:
            same = trial["number"] == number
        else:  # cells written before `chosen_trial` was recorded: the first trial with the recipe
            same = trial.get("recipe") == result["chosen_recipe"] and trial["state"] == "complete"
        if same:
            return trial.get("tag") or "searched"
    return "?"


def _against_other_budget(
    budget: str, rows: list, seeds: list[str], root: Path, peers: tuple[str, ...] = PEERS
) -> list[str]:
    """What the extra budget bought: hypertweaks' and the best peer's mean on the pairs run at
    both 1x and `budget` (every one of `peers` at both)."""
    if budget == "1x":
        return []
    now, best, then, best_then = [], [], [], []
    for (_, scores, score, task), seed in zip(rows, seeds, strict=True):
        cells = [cell(root, task, m, seed, "1x") for m in ("hypertweaks", *peers)]
        if all(c.exists() for c in cells):
            now.append(score)
            best.append(max(scores))
            then.append(test_accuracy(cells[0]))
            best_then.append(max(test_accuracy(c) for c in cells[1:]))
    if not now:
        return []
    return ["", f"What {budget} bought, on the {len(now)} pairs also run at 1x (mean test "
            f"accuracy %, 1x -> {budget}): hypertweaks {100 * np.mean(then):.1f} -> "
            f"{100 * np.mean(now):.1f}; the best peer of each pair {100 * np.mean(best_then):.1f}"
            f" -> {100 * np.mean(best):.1f}."]  # fmt: skip


def table(budget: str, root: Path = ROOT) -> str:
    """Every task/seed pair of `root` where hypertweaks and every peer ran at `budget`."""
    names, headers = peers_at(budget, root)
    lines = [
        f"# hypertweaks against every peer in the same run ({budget}, test accuracy %)",
        "",
        "| task | seed | reference | " + " | ".join(headers) + " | hypertweaks | its choice |",
        "|---|---|---|" + "---|" * (len(names) + 2),
    ]
    rows, seeds, missing = [], [], []
    for path in sorted((root / "cells" / CUT).glob(f"*__hypertweaks__{budget}__s*.json")):
        task, _, _, seed = path.stem.split("__")
        peers = [cell(root, task, m, seed, budget) for m in names]
        if not all(p.exists() for p in peers):
            missing.append(f"{task} {seed}")
            continue
        reference = test_accuracy(cell(root, task, "defaults", seed))
        scores = [test_accuracy(p) for p in peers]
        now = test_accuracy(path)
        rows.append((reference, scores, now, task))
        seeds.append(seed)
        shown = " | ".join(percents([reference, *scores, now]))
        lines.append(f"| {task} | {seed[1:]} | {shown} | {_chosen_tag(path)} |")
    if rows:
        lines += paired_lines(rows, headers)
        lines += _against_other_budget(budget, rows, seeds, root, names)
    if missing:
        lines += ["", f"Pairs left out, a peer's cell missing: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="1x")
    parser.add_argument("--root", type=Path, default=ROOT)
    args = parser.parse_args()
    text = table(args.budget, args.root)
    (args.root / f"SAME_RUN_{args.budget}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
