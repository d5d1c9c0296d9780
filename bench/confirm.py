"""Real runs of the current hypertweaks against the committed peers' cells, same cut and seeds.

The peers (bench/results/cells/) ran on another machine; a method's budget is a multiple of its
own machine's reference run, and CPU runs are deterministic, so the reference recipe scores the
same on both (checked here, cell by cell). Run the new cells first, e.g.

    HYPERTWEAKS_BENCH_RESULTS=bench/results/confirm python -m bench run \\
        --tasks banking77,sst2 --methods defaults,hypertweaks --budget 3x --seeds 0 --threads 1

then `python -m bench.confirm` writes bench/results/confirm/CONFIRM.md.
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


def test_accuracy(path: Path) -> float:
    return json.loads(path.read_text())["result"]["test_metrics"]["accuracy"]


def cell(root: Path, task: str, method: str, seed: str, budget: str = "3x") -> Path:
    middle = "" if method == "defaults" else f"{budget}__"
    return root / "cells" / CUT / f"{task}__{method}__{middle}{seed}.json"


def table(new_root: Path = RESULTS / "confirm", old_root: Path = RESULTS) -> str:
    lines = [
        "# hypertweaks now against the committed peers (3x, test accuracy %)",
        "",
        "| task | seed | reference | " + " | ".join(HEADERS)
        + " | hypertweaks before | hypertweaks now |",
        "|---|---|---|" + "---|" * (len(PEERS) + 2),
    ]  # fmt: skip
    gaps = []
    for path in sorted((new_root / "cells" / CUT).glob("*__hypertweaks__3x__s*.json")):
        task, _, _, seed = path.stem.split("__")
        reference = test_accuracy(cell(old_root, task, "defaults", seed))
        here = test_accuracy(cell(new_root, task, "defaults", seed))
        if abs(reference - here) > 1e-9:
            raise SystemExit(f"{task} {seed}: the reference recipe scored {here} here and "
                             f"{reference} in the committed cell: not the same runs")  # fmt: skip
        peers = [test_accuracy(cell(old_root, task, m, seed)) for m in PEERS]
        before = test_accuracy(cell(old_root, task, "hypertweaks", seed))
        now = test_accuracy(path)
        gaps.append((now - max(peers), now - float(np.mean(peers)), now - before))
        values = [reference, *peers, before]
        lines.append(f"| {task} | {seed[1:]} | " + " | ".join(f"{100 * v:.1f}" for v in values)
                     + f" | **{100 * now:.1f}** |")  # fmt: skip
    if gaps:
        g = np.array(gaps) * 100
        lines += [
            "",
            f"Over {len(g)} task/seed pairs, hypertweaks now minus: the best peer of each pair "
            f"{g[:, 0].mean():+.1f}, the peers' mean {g[:, 1].mean():+.1f}, hypertweaks before "
            f"{g[:, 2].mean():+.1f} points (wins-losses against the best peer: "
            f"{int((g[:, 0] > 0).sum())}-{int((g[:, 0] < 0).sum())}).",
        ]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    text = table()
    (RESULTS / "confirm" / "CONFIRM.md").write_text(text)
    print(text)
