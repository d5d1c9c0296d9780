"""Real runs of the current hypertweaks against the committed peers' cells, same cut and seeds.

The peers (bench/results/cells/) ran on another machine; a method's budget is a multiple of its
own machine's reference run, and CPU runs are deterministic, so the reference recipe scores the
same on both (checked here, cell by cell). Run the new cells first, e.g.

    HYPERTWEAKS_BENCH_RESULTS=bench/results/confirm python -m bench run \\
        --tasks banking77,sst2 --methods defaults,hypertweaks --budget 3x --seeds 0 --threads 1

then `python -m bench.confirm` writes bench/results/confirm/CONFIRM.md. `--new FOLDER --old
FOLDER --extra-peers` pairs another folder's runs with another folder's peers, SetFit and
embed+LR included (CONFIRM.md in the new folder).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from bench import BENCH_DIR

RESULTS = BENCH_DIR / "results"
CUT = "n600-v200-t500-L48"
PEERS = ("hf_search", "random", "tpe_median", "onepoch_topk")
HEADERS = ("HF search", "random", "TPE+median", "one-epoch top-K")


def percents(scores: list[float | None]) -> list[str]:
    """A table row's scores in %, the best of the row (ties included) in bold, "-" where absent."""
    top = max(round(100 * v, 1) for v in scores if v is not None)
    shown = [f"{100 * v:.1f}" if v is not None else "-" for v in scores]
    return [f"**{text}**" if text == f"{top:.1f}" else text for text in shown]


def test_accuracy(path: Path) -> float:
    return json.loads(path.read_text())["result"]["test_metrics"]["accuracy"]


def cell(root: Path, task: str, method: str, seed: str, budget: str = "3x", cut: str = CUT) -> Path:
    middle = "" if method == "defaults" else f"{budget}__"
    return root / "cells" / cut / f"{task}__{method}__{middle}{seed}.json"


def _maybe(path: Path) -> float | None:
    return test_accuracy(path) if path.exists() else None


def paired_lines(
    rows: list[tuple[float, list[float], float, str]], headers: tuple[str, ...] = HEADERS
) -> list[str]:
    """hypertweaks minus each peer, the best peer of each pair and the reference, over rows of
    (reference, peers in `headers` order, hypertweaks, task): the mean with its bootstrap interval
    over pairs and the pairs won-lost, then the gap to the best peer per task. With peers beyond
    the fine-tuning searches (HEADERS), also against the best of those alone."""
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


def _without_each_task(rows, now: np.ndarray, best_peer: np.ndarray) -> list[str]:
    """hypertweaks minus the best peer of each pair with one task's pairs left out at a time:
    whether the lead is carried by a single task."""
    from bench.meta.simulate import paired_interval

    tasks = sorted({r[3] for r in rows})
    if len(tasks) < 3:
        return []
    lines = ["", "The same against the best peer of each pair, leaving one task out at a time "
             "(is the lead carried by one task?):", ""]  # fmt: skip
    for task in tasks:
        keep = np.array([r[3] != task for r in rows])
        mean, low, high = paired_interval(now[keep], best_peer[keep])
        won, lost = (
            int((now[keep] > best_peer[keep]).sum()),
            int((now[keep] < best_peer[keep]).sum()),
        )
        lines.append(f"- without {task}: {mean:+.1f} [{low:+.1f}, {high:+.1f}], {won}-{lost}")
    return lines


def _mean_sd(values: np.ndarray) -> str:
    if len(values) == 1:
        return f"{values[0]:.1f}"
    return f"{values.mean():.1f} ± {values.std(ddof=1):.1f}"


def table(
    new_root: Path = RESULTS / "confirm",
    old_root: Path = RESULTS,
    peers: tuple[str, ...] = PEERS,
    headers: tuple[str, ...] = HEADERS,
) -> str:
    """hypertweaks' new cells against the committed peers of the same task and seed, with the
    earlier hypertweaks (the committed bench cells, and session 6's confirm cells where kept in
    `new_root/session6`), and the paired difference to each peer with its bootstrap interval
    over task/seed pairs; where every pair has a new 1x cell too, 3x minus 1x."""
    earlier = ("hypertweaks before", "hypertweaks session 6")
    lines = [
        "# hypertweaks now against the committed peers (3x, test accuracy %)",
        "",
        "| task | seed | reference | " + " | ".join(headers + earlier) + " | hypertweaks now |",
        "|---|---|---|" + "---|" * (len(peers) + 3),
    ]  # fmt: skip
    rows, at_1x = [], []
    for path in sorted((new_root / "cells" / CUT).glob("*__hypertweaks__3x__s*.json")):
        task, _, _, seed = path.stem.split("__")
        reference = test_accuracy(cell(old_root, task, "defaults", seed))
        here = test_accuracy(cell(new_root, task, "defaults", seed))
        if abs(reference - here) > 1e-9:
            raise SystemExit(f"{task} {seed}: the reference recipe scored {here} here and "
                             f"{reference} in the committed cell: not the same runs")  # fmt: skip
        scores = [test_accuracy(cell(old_root, task, m, seed)) for m in peers]
        before = [_maybe(cell(old_root, task, "hypertweaks", seed)),
                  _maybe(cell(new_root / "session6", task, "hypertweaks", seed))]  # fmt: skip
        now = test_accuracy(path)
        rows.append((reference, scores, now, task))
        at_1x.append(_maybe(cell(new_root, task, "hypertweaks", seed, "1x")))
        shown = percents([reference, *scores, *before, now])
        lines.append(f"| {task} | {seed[1:]} | " + " | ".join(shown) + " |")
    if rows:
        lines += paired_lines(rows, headers)
    if rows and None not in at_1x:
        from bench.meta.simulate import paired_interval

        now, then = np.array([r[2] for r in rows]) * 100, np.array(at_1x) * 100
        mean, low, high = paired_interval(now, then)
        lines += ["", f"hypertweaks now, 3x minus its own 1x (mean {then.mean():.1f}): "
                  f"{mean:+.1f} [{low:+.1f}, {high:+.1f}], {int((now > then).sum())}-"
                  f"{int((now < then).sum())}"]  # fmt: skip
    return "\n".join(lines) + "\n"


def main() -> None:
    import argparse

    from bench.same_run import EXTRA_PEERS

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--new", type=Path, default=RESULTS / "confirm", help="the new cells")
    parser.add_argument("--old", type=Path, default=RESULTS, help="the peers' cells")
    parser.add_argument(
        "--extra-peers", action="store_true", help=f"also {', '.join(EXTRA_PEERS.values())}"
    )
    args = parser.parse_args()
    peers, headers = PEERS, HEADERS
    if args.extra_peers:
        peers, headers = peers + tuple(EXTRA_PEERS), headers + tuple(EXTRA_PEERS.values())
    text = table(args.new, args.old, peers, headers)
    (args.new / "CONFIRM.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
