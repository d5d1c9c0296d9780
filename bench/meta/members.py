"""Issue 31, levers 2 and 3: which runs make the better soup? The product's soup averages the
LP-FT default's runs at different seeds (bench/meta/averaging.py scored every soup of seeds 0-4).
Here its members differ in more than the seed, paired with the seed soup of the same seeds, so
that the difference is the change alone:

- rows (bagging over folds of train + validation, lever 3): fold 0 is the cut's own split (600
  training rows, 200 validation); fold f of 1..3 holds out the f-th stratified third of the
  training rows and trains on the other two thirds plus the validation rows: again 600 rows and
  200 held out, and the runs at folds 1-3 together have seen all 800 labelled rows. The run at
  fold f trains at seed f (fold 0 is the averaging cell of seed 0, rerun bit for bit).
- learning rates (a soup over recipes, Wortsman et al. 2022): the default at lr 1e-4 at seed 1
  and at lr 2.5e-5 at seed 2 (the default's 5e-5 doubled and halved), on the cut's split, so
  their soup with fold 0 pairs with the seed soup 0-1-2, and a greedy soup (members added in
  order of validation accuracy while the soup's validation accuracy does not drop) is one the
  product could choose on clean validation rows.

Every run is the LP-FT default as the product trains it (its linear probe and its early stopping
on its own held-out rows); its weights are kept under bench/work. `python -m bench.meta.members
--members fold1,fold2,fold3,fold0` (1-3 minutes of one idle core a cell; resumable), then
`--soups`, then `--table` (MEMBERS.md).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import torch
from sklearn.model_selection import StratifiedKFold

from bench.meta import records
from bench.meta.averaging import CUT, _scores, score_weight_sets
from bench.meta.averaging import OUT as AVERAGING
from bench.meta.cli import META_TASKS, _csv
from bench.tasks import WORK_DIR, load_task
from hypertweaks.data import Split

OUT = AVERAGING.parent / "members"
WEIGHTS = WORK_DIR / "members" / CUT.key
THIRDS = 3


@dataclass(frozen=True)
class Member:
    seed: int
    fold: int = 0  # 0: the cut's own split
    changes: dict[str, Any] = field(default_factory=dict)  # to the LP-FT default's recipe


MEMBERS = {
    **{f"fold{f}": Member(seed=f, fold=f) for f in range(THIRDS + 1)},
    "lr1e-4": Member(seed=1, changes={"learning_rate": 1e-4}),
    "lr2.5e-5": Member(seed=2, changes={"learning_rate": 2.5e-5}),
}

# soup -> its members, and the seed soup of averaging/soups it pairs with
SOUPS = {
    "folds 0, 1": (("fold0", "fold1"), "0-1"),
    "folds 0, 1, 2": (("fold0", "fold1", "fold2"), "0-1-2"),
    "folds 0, 1, 2, 3": (("fold0", "fold1", "fold2", "fold3"), "0-1-2-3"),
    "folds 1, 2, 3": (("fold1", "fold2", "fold3"), "1-2-3"),
    "lr 5e-5, 1e-4": (("fold0", "lr1e-4"), "0-1"),
    "lr 5e-5, 2.5e-5": (("fold0", "lr2.5e-5"), "0-2"),
    "lr 5e-5, 1e-4, 2.5e-5": (("fold0", "lr1e-4", "lr2.5e-5"), "0-1-2"),
}
LR_GROUP = ("fold0", "lr1e-4", "lr2.5e-5")  # the greedy soup's candidates: clean validation


def fold_splits(splits, fold: int):
    """The cut's splits with fold `fold`'s rows held out (fold 0: the cut's own split)."""
    if fold == 0:
        return splits
    train, validation = splits.train, splits.validation
    thirds = StratifiedKFold(THIRDS, shuffle=True, random_state=0)
    rest, held = list(thirds.split(np.zeros(len(train)), train.labels))[fold - 1]
    others = train.subset(rest)
    trained = Split(
        validation.inputs + others.inputs,
        np.concatenate([validation.labels, others.labels]),
        f"fold{fold}-train",  # its own cache key: train + validation less a third
    )
    return replace(splits, train=trained, validation=train.subset(held))


def run_cell(task: str, name: str, device, loaded: dict) -> dict:
    from bench.meta.collect import candidate_recipe
    from hypertweaks.space import Recipe
    from hypertweaks.trial import fit_trial

    member = MEMBERS[name]
    if task not in loaded:
        loaded[task] = load_task(task, CUT, "cpu")
    text, exp = loaded[task]
    text.fine_tune_head = "probe"  # the product's classifier
    cut_splits = text.splits
    # the task's own splits, not fit_trial's `splits`: the linear probe trains on them too
    text.splits = splits = fold_splits(cut_splits, member.fold)
    try:
        recipe = Recipe(**{**candidate_recipe(-3, text), **member.changes})
        started = time.perf_counter()
        model, result = fit_trial(exp, text, recipe, device, member.seed)  # the product's trial
        end = {k: v.detach().clone() for k, v in model.state_dict().items()}
        scores = _scores(text, model, end, device)  # validation: the run's own held-out rows
    finally:
        text.splits = cut_splits
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    torch.save(end, WEIGHTS / f"{task}__{name}.pt")
    return {
        "task": task,
        "member": name,
        "seed": member.seed,
        "fold": member.fold,
        "train_rows": len(splits.train),
        "recipe": recipe.as_dict(),
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
        "wall_seconds": time.perf_counter() - started,
        "held_out": scores["validation"],
        "test": scores["test"],
    }


def collect(tasks: list[str], names: list[str]) -> None:
    """Task by task, every member of a task before the next task: any prefix is whole tasks."""
    torch.set_num_threads(1)
    device = torch.device("cpu")
    loaded: dict = {}
    for task in tasks:
        for name in names:
            stem = f"{task}__{name}"
            if records.has(OUT, stem):
                continue
            cell = run_cell(task, name, device, loaded)
            records.write(OUT, stem, cell)
            print(
                f"[members] {task} {name} held-out {cell['held_out']['accuracy']:.3f} test "
                f"{cell['test']['accuracy']:.3f} {cell['wall_seconds']:.0f}s",
                flush=True,
            )
        loaded.pop(task, None)


def _soup_key(names) -> str:
    return "+".join(names)


def score_soups(tasks: list[str]) -> None:
    """The soups of SOUPS and every soup of two or more of LR_GROUP (the greedy soup's steps)
    whose members are kept, scored on the cut's validation and test rows into
    members/soups/<task>.json. A soup with a fold run has trained on some validation rows."""
    wanted = [m for m, _ in SOUPS.values()]
    wanted += [c for k in (2, 3) for c in itertools.combinations(LR_GROUP, k)]
    for task in tasks:
        kept = {p.stem.split("__")[1] for p in WEIGHTS.glob(f"{task}__*.pt")}
        weights = {
            _soup_key(c): [WEIGHTS / f"{task}__{m}.pt" for m in c]
            for c in dict.fromkeys(wanted)
            if set(c) <= kept
        }
        score_weight_sets(task, weights, OUT / "soups" / f"{task}.json")


def greedy_soup(cells: dict[str, dict], soups: dict[str, dict]) -> list[str]:
    """Wortsman et al.'s greedy soup over LR_GROUP: runs in order of validation accuracy, each
    added while the soup's validation accuracy does not drop."""
    order = sorted(LR_GROUP, key=lambda m: -cells[m]["held_out"]["accuracy"])
    chosen = [order[0]]
    best = cells[order[0]]["held_out"]["accuracy"]
    for name in order[1:]:
        trial = [m for m in LR_GROUP if m in (*chosen, name)]  # SOUP keys keep LR_GROUP order
        value = soups[_soup_key(trial)]["validation"]["accuracy"]
        if value >= best:
            chosen, best = trial, value
    return chosen


def table() -> str:
    """Each soup against the seed soup it pairs with, per task; then the single runs."""
    from bench.meta.simulate import paired_interval

    cells: dict[str, dict[str, dict]] = {}
    for cell in records.read(OUT).values():
        cells.setdefault(cell["task"], {})[cell["member"]] = cell
    soups = {p.stem: json.loads(p.read_text())["soups"] for p in (OUT / "soups").glob("*.json")}
    seed_soups = {
        p.stem: json.loads(p.read_text())["soups"] for p in (AVERAGING / "soups").glob("*.json")
    }
    seed_runs: dict[str, dict[int, float]] = {}
    for cell in records.read(AVERAGING).values():
        seed_runs.setdefault(cell["task"], {})[cell["seed"]] = cell["line"]["1.0"]["test"]
    rows: dict[str, list[tuple[float, float]]] = {}
    for name, member in MEMBERS.items():
        if name == "fold0":
            continue  # seed 0's own run: no difference
        rows[f"one run: {name} (seed {member.seed})"] = [
            (c[name]["test"]["accuracy"], seed_runs[t][member.seed]["accuracy"])
            for t, c in cells.items()
            if name in c
        ]
    for name, (members, seeds) in SOUPS.items():
        rows[f"soup of {name} (seeds {seeds})"] = [
            (
                soups[t][_soup_key(members)]["test"]["accuracy"],
                seed_soups[t][seeds]["test"]["accuracy"],
            )
            for t in sorted(soups)
            if _soup_key(members) in soups[t]
        ]
    greedy = []
    for t in sorted(soups):
        if all(_soup_key(c) in soups[t] for c in itertools.combinations(LR_GROUP, 2)):
            chosen = greedy_soup(cells[t], soups[t])
            test = (
                cells[t][chosen[0]]["test"]["accuracy"]
                if len(chosen) == 1
                else soups[t][_soup_key(chosen)]["test"]["accuracy"]
            )
            greedy.append((test, seed_soups[t]["0-1-2"]["test"]["accuracy"]))
    rows["greedy soup over lr 5e-5, 1e-4, 2.5e-5 (seeds 0-1-2)"] = greedy
    lines = [
        "| model (its seeds) | tasks | it | the default at those seeds (its soup) "
        "| difference, per task [95%] | won-lost |",
        "|---|---|---|---|---|---|",
    ]
    for name, pairs in rows.items():
        if not pairs:
            continue
        a, b = np.array(pairs).T * 100
        low = paired_interval(a, b)
        lines.append(
            f"| {name} | {len(a)} | {a.mean():.1f} | {b.mean():.1f} | {low[0]:+.2f} "
            f"[{low[1]:+.2f}, {low[2]:+.2f}] | {int((a > b).sum())}-{int((a < b).sum())} |"
        )
    return "\n".join(lines) + "\n"


TABLE_NOTE = """\
Test accuracy, mean over tasks; in brackets the bootstrap 95% interval of the paired difference
over tasks, then the tasks won and lost. A fold run trains on 600 of the 800 labelled rows (the
validation rows among them) and stops early on the 200 it holds out; a seed run trains on the
cut's 600 training rows and stops early on its 200 validation rows. The lr runs are the default
at a doubled and halved learning rate on the cut's split. Every soup is paired with the seed soup
of the same seeds (averaging/soups), so the difference is the rows or the learning rates alone.
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=META_TASKS)
    parser.add_argument("--members", default=",".join(MEMBERS))
    parser.add_argument("--soups", action="store_true", help="score the soups of kept members")
    parser.add_argument("--table", action="store_true", help="print and write MEMBERS.md")
    args = parser.parse_args()
    if args.soups:
        score_soups(_csv(args.tasks))
    elif args.table:
        text = (
            "# Soups whose runs differ in more than the seed (issue 31, levers 2 and 3)\n\n"
            f"`python -m bench.meta.members --table` (cells: bench/results/meta/{CUT.key}/"
            "members)\n\n" + table() + "\n" + TABLE_NOTE
        )
        (OUT.parent / "MEMBERS.md").write_text(text)
        print(text)
    else:
        collect(_csv(args.tasks), _csv(args.members))


if __name__ == "__main__":
    main()
