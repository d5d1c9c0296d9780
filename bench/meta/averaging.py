"""Issue 31, lever 2 with weights: is the LP-FT default worth more averaged with something that
shares its start?

The LP-FT default starts from the pretrained encoder with a linear probe as its head: the kind
of model the head-only candidate is. The start and the trained default lie on one line of
weights, and every point of it is one model of the same size (WiSE-FT, Wortsman et al. 2022):
alpha 0 is the start (the probe on frozen features), alpha 1 the fine-tuned model. Runs of the
default at other seeds start from the same pretrained encoder, so their average (a uniform soup)
is one model too.

One cell per (task, seed): the default trained as the product trains it (early stopping on
validation, its best epoch kept), its start and end weights interpolated at ALPHAS, each point
scored on validation and test. Its end weights are kept under bench/work, so that once a task
has every seed the soups of its seeds are scored too. Resumable: a present cell is never rerun.

`python -m bench.meta.averaging --seeds 0,1,2` (2.5-8 minutes of one core a cell), then
`python -m bench.meta.averaging --table`. `--soups` scores the soup of every set of two or more
of a task's recorded seeds (seconds each; averaging/soups/<task>.json), which the simulator's
replay of the product's final model reads (bench/meta/simulate.py).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import numpy as np
import torch

from bench.meta import META_DIR, records
from bench.meta.cli import META_TASKS, _csv
from bench.tasks import PROFILES, WORK_DIR, load_task

ALPHAS = (0.0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0)
CUT = PROFILES["standard"]
TABLE_SEEDS = (0, 1, 2)  # the seeds the table compares: those of the soup in the cells
OUT = META_DIR / CUT.key / "averaging"
WEIGHTS = WORK_DIR / "averaging" / CUT.key


def _lerp(start: dict, end: dict, alpha: float) -> dict:
    return {
        k: (start[k] + alpha * (end[k] - start[k])) if end[k].is_floating_point() else end[k]
        for k in end
    }


def _scores(text, model, state: dict, device) -> dict[str, dict[str, float]]:
    from hypertweaks.train import predict_logits

    model.load_state_dict(state)
    out = {}
    for name, split in (("validation", text.splits.validation), ("test", text.splits.test)):
        logits, labels = predict_logits(text, model, text.dataset(split, False), device)
        metrics = text.metrics(logits, labels)
        out[name] = {k: float(metrics[k]) for k in ("accuracy", "macro_f1", "loss")}
    return out


def run_cell(task: str, seed: int, device, loaded: dict) -> dict:
    """The LP-FT default at this seed, and its line of weights from the start it shares with the
    head-only candidate."""
    from bench.meta.collect import candidate_recipe
    from hypertweaks.space import Recipe
    from hypertweaks.train import fit

    if task not in loaded:  # its data read and tokenised once for all its seeds
        loaded[task] = load_task(task, CUT, "cpu")
    text, exp = loaded[task]
    text.fine_tune_head = "probe"  # the product's classifier
    recipe = Recipe(**candidate_recipe(-3, text))
    started = time.perf_counter()
    torch.manual_seed(seed)
    model, layers = text.build(recipe)
    start = {k: v.detach().clone() for k, v in model.state_dict().items()}
    result = fit(
        text,
        model,
        layers,
        recipe,
        text.dataset(text.splits.train, True, recipe),
        text.dataset(text.splits.validation, False, recipe),
        metric="accuracy",
        direction="maximize",
        patience=exp.patience,
        device=device,
        seed=seed,
    )
    end = {k: v.detach().clone() for k, v in model.state_dict().items()}
    WEIGHTS.mkdir(parents=True, exist_ok=True)
    torch.save(end, WEIGHTS / f"{task}__s{seed}.pt")
    line = {str(a): _scores(text, model, _lerp(start, end, a), device) for a in ALPHAS}
    cell = {
        "task": task,
        "seed": seed,
        "recipe": recipe.as_dict(),
        "best_epoch": result.best_epoch,
        "train_seconds": result.seconds,
        "wall_seconds": time.perf_counter() - started,
        "line": line,
    }
    seeds = _kept_seeds(task)
    if len(seeds) >= 3 and seed in seeds[:3]:  # the table's seeds: their soup, and its line
        soup = _soup([torch.load(WEIGHTS / f"{task}__s{s}.pt") for s in seeds[:3]])
        cell["soup_seeds"] = seeds[:3]
        cell["soup_line"] = {
            str(a): _scores(text, model, _lerp(start, soup, a), device) for a in ALPHAS
        }
    return cell


def _soup(states: list[dict]) -> dict:
    return {
        k: sum(s[k] for s in states) / len(states) if states[0][k].is_floating_point() else v
        for k, v in states[0].items()
    }


def collect(tasks: list[str], seeds: list[int]) -> None:
    torch.set_num_threads(1)
    device = torch.device("cpu")
    loaded: dict = {}
    for seed in seeds:
        for task in tasks:
            stem = f"{task}__s{seed}"
            if records.has(OUT, stem):
                continue
            cell = run_cell(task, seed, device, loaded)
            records.write(OUT, stem, cell)
            one = cell["line"]["1.0"]["test"]["accuracy"]
            print(
                f"[averaging] {task} s{seed} test {one:.3f} {cell['wall_seconds']:.0f}s", flush=True
            )


def score_soups(tasks: list[str], sizes: list[int]) -> None:
    """Every soup of `sizes` of a task's seeds whose weights are kept, scored at alpha 1 on
    validation and test into averaging/soups/<task>.json. Resumable: a scored soup is kept."""
    for task in tasks:
        seeds = _kept_seeds(task)
        combos = [c for k in sizes for c in itertools.combinations(seeds, k)]
        combos.sort(key=lambda c: (max(c), len(c)))  # the first seeds' soups first
        weights = {_key(c): [WEIGHTS / f"{task}__s{s}.pt" for s in c] for c in combos}
        score_weight_sets(task, weights, OUT / "soups" / f"{task}.json")


def score_weight_sets(task: str, weights: dict[str, list[Path]], path: Path) -> None:
    """The uniform soup of each set of a task's kept weights (name -> its weight files) scored on
    the cut's validation and test rows into `path` (a task's soups file), the sets in order.
    Resumable: a set already in the file is kept."""
    from bench.meta.collect import candidate_recipe
    from hypertweaks.space import Recipe

    record = json.loads(path.read_text()) if path.exists() else {"task": task, "soups": {}}
    todo = [name for name in weights if name not in record["soups"]]
    if not todo:
        return
    torch.set_num_threads(1)
    device = torch.device("cpu")
    text, _ = load_task(task, CUT, "cpu")
    text.fine_tune_head = "probe"
    model, _ = text.build(Recipe(**candidate_recipe(-3, text)))
    states = {f: torch.load(f) for name in todo for f in weights[name]}
    path.parent.mkdir(parents=True, exist_ok=True)
    for name in todo:
        record["soups"][name] = _scores(
            text, model, _soup([states[f] for f in weights[name]]), device
        )
        partial = path.with_suffix(".part")
        partial.write_text(json.dumps(record, separators=(",", ":")))
        partial.replace(path)
        print(
            f"[soups] {task} {name} test {record['soups'][name]['test']['accuracy']:.3f}",
            flush=True,
        )


def _kept_seeds(task: str) -> list[int]:
    """The seeds of a task whose trained weights are kept under bench/work."""
    return sorted(int(p.stem.split("__s")[1]) for p in WEIGHTS.glob(f"{task}__s*.pt"))


def _key(seeds) -> str:
    return "-".join(map(str, seeds))


def _pick(line: dict, rule: str) -> str:
    """The alpha a rule picks on validation: the best accuracy (ties: the larger alpha, the
    fine-tuned side) or the lowest loss."""
    alphas = sorted(line, key=float)
    if rule == "accuracy":
        return max(reversed(alphas), key=lambda a: line[a]["validation"]["accuracy"])
    return min(reversed(alphas), key=lambda a: line[a]["validation"]["loss"])


def _loto_alpha(cells: list[dict], held_out: str, key: str = "line") -> str:
    """One alpha for every task, the best mean validation accuracy over the other tasks."""
    others = [c for c in cells if c["task"] != held_out and key in c]
    return max(
        reversed(sorted(others[0][key], key=float)),
        key=lambda a: np.mean([c[key][a]["validation"]["accuracy"] for c in others]),
    )


def table(folder: Path = OUT) -> str:
    """Per rule, test accuracy over (task, seed) cells and its paired difference to the default
    (alpha 1) per task, means over seeds first; the soups against the mean single model."""
    from bench.meta.simulate import paired_interval

    # the soup's seeds: one design
    cells = [c for c in records.read(folder).values() if c["seed"] in TABLE_SEEDS]
    tasks = sorted({c["task"] for c in cells})

    def test(line: dict, alpha: str) -> float:
        return line[alpha]["test"]["accuracy"] * 100

    rules = {
        "default (alpha 1)": lambda c: test(c["line"], "1.0"),
        "start (alpha 0, the probe)": lambda c: test(c["line"], "0.0"),
        "alpha by validation accuracy": lambda c: test(c["line"], _pick(c["line"], "accuracy")),
        "alpha by validation loss": lambda c: test(c["line"], _pick(c["line"], "loss")),
        "one alpha, leave-one-task-out": lambda c: test(c["line"], _loto_alpha(cells, c["task"])),
    }
    soups = [c for c in cells if "soup_line" in c]

    def best_seed(cell: dict) -> float:
        """Of the soup's seeds, the run with the best validation accuracy (ties: the first)."""
        runs = [c for c in cells if c["task"] == cell["task"] and c["seed"] in cell["soup_seeds"]]
        chosen = max(runs, key=lambda c: c["line"]["1.0"]["validation"]["accuracy"])
        return test(chosen["line"], "1.0")

    def product(cell: dict) -> float:
        """The product's final model (strategies/finals.py): the soup, unless the run its
        selector keeps (seed 0 as the default; the others must lead it by one standard error)
        leads the soup on validation by more than one standard error."""
        from hypertweaks.strategies.finals import Final
        from hypertweaks.strategies.selectors import Candidate, KeepDefaults, choose

        runs = [c for c in cells if c["task"] == cell["task"] and c["seed"] in cell["soup_seeds"]]
        runs.sort(key=lambda c: c["seed"])
        keep = KeepDefaults("maximize", "accuracy", CUT.validation)
        tags = ["defaults", "defaults-2", "defaults-3"]
        values = [c["line"]["1.0"]["validation"]["accuracy"] for c in runs]
        kept = choose(keep, [Candidate(v, t) for v, t in zip(values, tags, strict=True)])
        soup = cell["soup_line"]["1.0"]["validation"]["accuracy"]
        if Final(3).keeps_soup(keep, "maximize", soup, values[kept]):
            return test(cell["soup_line"], "1.0")
        return test(runs[kept]["line"], "1.0")

    if soups:
        rules["best of 3 seeds by validation (3x)"] = best_seed
        rules["soup of 3 seeds (3x)"] = lambda c: test(c["soup_line"], "1.0")
        rules["the product: the soup unless a run leads it beyond the noise (3x)"] = product
        rules["soup of 3 seeds, alpha by validation loss (3x)"] = lambda c: test(
            c["soup_line"], _pick(c["soup_line"], "loss")
        )

    def per_task(rule, pool: list[dict]) -> np.ndarray:
        """The rule's mean test accuracy over a task's cells in `pool` (NaN: none there)."""
        rows = [[rule(c) for c in pool if c["task"] == t] for t in tasks]
        return np.array([np.mean(r) if r else np.nan for r in rows])

    # a soup (and the best of its seeds) is scored once per task, in the cell of its last seed
    by_task = {
        name: per_task(rule, soups if "3x" in name else cells) for name, rule in rules.items()
    }
    base = by_task["default (alpha 1)"]
    lines = [
        f"{len(cells)} cells ({len(tasks)} tasks; seeds "
        f"{sorted({c['seed'] for c in cells})}), {len(soups)} with the soup of 3 seeds",
        "",
        "| final model | test accuracy | minus the default, per task | won-lost |",
        "|---|---|---|---|",
    ]
    for name, values in by_task.items():
        keep = ~np.isnan(values)
        diff = paired_interval(values[keep], base[keep])
        wins = int((values[keep] > base[keep]).sum())
        losses = int((values[keep] < base[keep]).sum())
        lines.append(
            f"| {name} | {values[keep].mean():.1f} | {diff[0]:+.1f} [{diff[1]:+.1f}, "
            f"{diff[2]:+.1f}] | {wins}-{losses} |"
        )
    return "\n".join(lines) + "\n"


def size_table(folder: Path = OUT) -> str:
    """Per number of runs k, the soup of k of a task's kept seeds (every such set, averaged):
    test accuracy, its paired difference to the mean single run and to the soups of k - 1."""
    from bench.meta.simulate import paired_interval

    cells = list(records.read(folder).values())
    soups = (folder / "soups").glob("*.json")
    scored = {p.stem: json.loads(p.read_text())["soups"] for p in soups}
    tasks = sorted(scored)
    seeds = {t: sorted(c["seed"] for c in cells if c["task"] == t) for t in tasks}
    sizes = range(1, min(map(len, seeds.values())) + 1)

    def mean_of(task: str, k: int) -> float:
        if k == 1:
            runs = [c for c in cells if c["task"] == task]
            return float(np.mean([c["line"]["1.0"]["test"]["accuracy"] for c in runs])) * 100
        combos = [_key(c) for c in itertools.combinations(seeds[task], k)]
        missing = [c for c in combos if c not in scored[task]]
        if missing:
            raise KeyError(f"{task}: soups {missing} not scored: run --soups {k}")
        return float(np.mean([scored[task][c]["test"]["accuracy"] for c in combos])) * 100

    by_size = {k: np.array([mean_of(t, k) for t in tasks]) for k in sizes}
    lines = [
        f"{len(tasks)} tasks, seeds {sorted(set().union(*map(set, seeds.values())))}; "
        "each size averaged over every set of that many seeds",
        "",
        "| runs in the soup | test accuracy | minus the mean single run | won-lost "
        "| minus one run fewer | won-lost |",
        "|---|---|---|---|---|---|",
    ]
    for k, values in by_size.items():
        row = [f"| {k} | {values.mean():.1f}"]
        for base in (by_size[1], by_size.get(k - 1)):
            if k == 1 or base is None:
                row.append(" | | ")
                continue
            low = paired_interval(values, base)
            wins, losses = int((values > base).sum()), int((values < base).sum())
            row.append(f" | {low[0]:+.2f} [{low[1]:+.2f}, {low[2]:+.2f}] | {wins}-{losses}")
        lines.append("".join(row) + " |")
    return "\n".join(lines) + "\n"


SIZE_NOTE = """\
The soups of k runs of the LP-FT default (k of the task's five kept seeds, weights averaged
uniformly, every such set scored by `--soups` and averaged per task), against the mean of the
single runs and against the soups of one run fewer; in brackets the bootstrap 95% interval of
the paired difference over tasks, then the tasks won and lost. What a soup that grows with the
budget buys per extra run (strategies/finals.py).
"""


TABLE_NOTE = """\
In brackets: the paired difference to the default (alpha 1) over tasks, each task's cells
averaged over its seeds first, with its bootstrap 95% interval; then the tasks won and lost.
Alpha interpolates every weight between the start the LP-FT default shares with the head-only
candidate (the pretrained encoder with its linear probe, alpha 0) and the default as trained
(alpha 1), WiSE-FT; the alphas tried are 0, 0.25, 0.5, 0.6, 0.7, 0.8, 0.9 and 1, scored on
validation. The soup averages the weights of the default's runs at seeds 0, 1 and 2 (three runs,
about 3x); the best of 3 seeds keeps the one of those runs with the best validation accuracy.
Both are compared with the mean of their task's single runs. The product's row replays its
final-model rule (strategies/finals.py) over these cells: seed 0 as the default, the other two
runs kept only if they lead it by one validation standard error, and the soup handed over unless
the kept run leads it by more than one standard error (200 validation rows: about 3 points).
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tasks", default=META_TASKS)
    parser.add_argument("--seeds", default="0")
    parser.add_argument("--table", action="store_true", help="print the table of the cells")
    parser.add_argument(
        "--soups",
        nargs="?",
        const="2,3,4,5",
        help="score the soups of these numbers of seeds (default 2,3,4,5) of the kept weights",
    )
    args = parser.parse_args()
    if args.soups:
        score_soups(_csv(args.tasks), [int(k) for k in _csv(args.soups)])
        return
    if args.table:
        text = (
            "# The LP-FT default averaged with what shares its start (issue 31, lever 2)\n\n"
            + "`python -m bench.meta.averaging --table` "
            + f"(cells: bench/results/meta/{CUT.key}/averaging)"
            + "\n\n"
            + table()
            + "\n"
            + TABLE_NOTE
            + "\n## Soups of more runs (issue 31, session 38)\n\n"
            + size_table()
            + "\n"
            + SIZE_NOTE
        )
        (OUT.parent / "AVERAGING.md").write_text(text)
        print(text)
        return
    collect(_csv(args.tasks), [int(s) for s in _csv(args.seeds)])


if __name__ == "__main__":
    main()
