"""hypertweaks against every peer run in the same run: same machine, same cut and seeds, each
pair's budget unit (the reference recipe's `defaults` cell) measured beside them. Run the cells,
one command per task and seed, two at a time on this 2-core machine:

    HYPERTWEAKS_BENCH_RESULTS=bench/results/same_run python -m bench run --tasks T --seeds S \\
        --methods hypertweaks,hf_search,random,tpe_median,onepoch_topk --budget 1x --threads 1

then `python -m bench.same_run --budget 1x` writes bench/results/same_run/SAME_RUN_1x.md: every
pair, the paired difference to each peer with its bootstrap interval, and the gap per task,
with the trial hypertweaks chose (where it trails, the first place to look for why).

Peers measured later (EXTRA_PEERS: `embed_lr`, frozen embeddings and a logistic regression;
`setfit`, the SetFit library's recipe with its steps bounded by the budget) are
a column of their own once any of their cells exists at that budget; they need the budget unit
cells only, so they run alone into the same folder:

    HYPERTWEAKS_BENCH_RESULTS=bench/results/same_run OMP_NUM_THREADS=1 python -m bench run \
        --tasks T --seeds S --methods embed_lr --budget 1x,3x --threads 1 --no-report

(`--methods setfit` the same way, two processes at a time, as the budget units were timed.)
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
    cell,
    paired_lines,
    percents,
    test_accuracy,
)

ROOT = RESULTS / "same_run"
# Peers added after the table's first runs, shown where measured: method -> column header.
EXTRA_PEERS = {"embed_lr": "embed+LR", "setfit": "SetFit"}


def peers_at(
    budget: str, root: Path = ROOT, cut: str = CUT
) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """The peers of the table at `budget` and their headers: the fine-tuning searches
    (bench.confirm.PEERS), then each of EXTRA_PEERS, each where it has a cell at that budget
    (the same-run table has every search; a table on another model or cut may have fewer)."""
    folder = root / "cells" / cut
    known = dict(zip(PEERS, HEADERS, strict=True)) | EXTRA_PEERS
    names = [m for m in known if any(folder.glob(f"*__{m}__{budget}__s*.json"))]
    return tuple(names), tuple(known[m] for m in names)


def _chosen_tag(path: Path) -> str:
    """What made hypertweaks' final model: a soup of its runs, head-only, defaults or a searched
    trial (cells written before `final_model` was recorded name the soup's first run)."""
    result = json.loads(path.read_text())["result"]
    if (soup := result.get("final_model")) and soup["kept"]:
        return f"soup of {len(soup['members'])}"
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
    budget: str, rows: list, seeds: list[str], root: Path, peers: tuple[str, ...], cut: str
) -> list[str]:
    """What the extra budget bought: hypertweaks' and the best peer's mean on the pairs run at
    both 1x and `budget` (every one of `peers` at both)."""
    if budget == "1x":
        return []
    now, best, then, best_then = [], [], [], []
    for (_, scores, score, task), seed in zip(rows, seeds, strict=True):
        cells = [cell(root, task, m, seed, "1x", cut) for m in ("hypertweaks", *peers)]
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


def _one_unit_against_peers(
    budget: str, rows: list, seeds: list[str], root: Path, cut: str
) -> list[str]:
    """hypertweaks at 1x minus the best peer of each pair at `budget`, on the pairs with a 1x
    hypertweaks cell: is its lead bought by the extra budget?"""
    from bench.meta.simulate import paired_interval

    if budget == "1x":
        return []
    one, best = [], []
    for (_, scores, _, task), seed in zip(rows, seeds, strict=True):
        path = cell(root, task, "hypertweaks", seed, "1x", cut)
        if path.exists():
            one.append(test_accuracy(path))
            best.append(max(scores))
    if not one:
        return []
    ours, theirs = np.array(one) * 100, np.array(best) * 100
    mean, low, high = paired_interval(ours, theirs)
    won, lost = int((ours > theirs).sum()), int((ours < theirs).sum())
    return ["", f"hypertweaks at 1x minus the best peer of each pair at {budget}, over the "
            f"{len(one)} pairs with a 1x cell: {mean:+.1f} [{low:+.1f}, {high:+.1f}], "
            f"{won}-{lost}."]  # fmt: skip


def table(budget: str, root: Path = ROOT, cut: str = CUT) -> str:
    """Every task/seed pair of `root` where hypertweaks and every peer ran at `budget`."""
    names, headers = peers_at(budget, root, cut)
    lines = [
        f"# hypertweaks against every peer in the same run ({budget}, test accuracy %)",
        "",
        *([f"Cut and model: {cut}.", ""] if cut != CUT else []),
        "| "
        + " | ".join(["task", "seed", "reference", *headers, "hypertweaks", "its choice"])
        + " |",
        "|---|---|---|" + "---|" * (len(names) + 2),
    ]
    rows, seeds, missing = [], [], []
    for path in sorted((root / "cells" / cut).glob(f"*__hypertweaks__{budget}__s*.json")):
        task, _, _, seed = path.stem.split("__")
        peers = [cell(root, task, m, seed, budget, cut) for m in names]
        if not all(p.exists() for p in peers):
            missing.append(f"{task} {seed}")
            continue
        reference = test_accuracy(cell(root, task, "defaults", seed, cut=cut))
        scores = [test_accuracy(p) for p in peers]
        now = test_accuracy(path)
        rows.append((reference, scores, now, task))
        seeds.append(seed)
        shown = " | ".join(percents([reference, *scores, now]))
        lines.append(f"| {task} | {seed[1:]} | {shown} | {_chosen_tag(path)} |")
    if rows and names:
        lines += paired_lines(rows, headers)
        lines += _against_other_budget(budget, rows, seeds, root, names, cut)
        lines += _one_unit_against_peers(budget, rows, seeds, root, cut)
    elif rows:
        lines += ["", f"No peer ran at {budget}: the table holds the reference and hypertweaks."]
    if missing:
        lines += ["", f"Pairs left out, a peer's cell missing: {', '.join(missing)}."]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--budget", default="1x")
    parser.add_argument("--root", type=Path, default=ROOT)
    parser.add_argument(
        "--cut", default=CUT, help="the cells' table: a cut's key, and another model's name"
    )
    args = parser.parse_args()
    text = table(args.budget, args.root, args.cut)
    (args.root / f"SAME_RUN_{args.budget}.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
