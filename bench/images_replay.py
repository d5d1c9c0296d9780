"""Replay the product's selector over the trials an image pair recorded (`bench.images` keeps
every complete trial's validation value since session 50): which model each rule keeps, scored
on test, against the default alone.

    python -m bench.images_replay bench/results/images_macro_f1_trials.json [MORE.json ...]

A rule that keeps the default or the best trial by validation is replayed exactly: the pair
recorded the test scores of both (the default's study and the tuned study's default trial are
the same deterministic CPU run). Rules compared: the one-error margin of sessions 49 and before
(every trial offered as if it were the first), and the margin widened for the trials a lead was
the best of (noise.chosen_among, the product since session 50).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from hypertweaks.strategies.selectors import Candidate, KeepDefaults, choose

RULES = {
    "one error": lambda t: Candidate(t["value"], t["tag"] or "", 0),
    "widened for the trials compared": lambda t: Candidate(t["value"], t["tag"] or "", t["number"]),
}


def kept_test(row: dict, metric: str, rule: str) -> float | None:
    """The test score of the model `rule` keeps of the pair's trials; None when it keeps a
    trial whose test score the pair did not record (a study that refit its kept trial recorded
    only that refit's)."""
    trials = row["tuned_validation"]["trials"]
    selector = KeepDefaults("maximize", metric, row["tuned_validation"]["validation_examples"])
    chosen = trials[choose(selector, [RULES[rule](t) for t in trials])]
    if (refit := row.get("tuned_refit")) and refit.get("kept"):
        # the study handed over its kept trial refit on train + validation: the one recorded
        return row["tuned"][metric] if chosen["number"] == refit["trial"] else None
    if chosen["tag"] == "defaults":
        return row["default"][metric]
    best = max((t for t in trials if t["tag"] != "defaults"), key=lambda t: t["value"])
    return row["tuned"][metric] if chosen is best and not row["kept_default"] else None


def table(rows: list[dict], metric: str) -> str:
    from bench.meta.simulate import paired_interval

    lines = [
        f"| dataset | seed | trials | default | {' | '.join(RULES)} |",
        "|---|---|---|---|" + "---|" * len(RULES),
    ]
    scores = {rule: [kept_test(r, metric, rule) for r in rows] for rule in RULES}
    for i, r in enumerate(rows):
        cells = [f"{s[i]:.3f}" if s[i] is not None else "?" for s in scores.values()]
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {len(r['tuned_validation']['trials'])} | "
            f"{r['default'][metric]:.3f} | " + " | ".join(cells) + " |"
        )
    lines.append("")
    default = np.array([r["default"][metric] for r in rows]) * 100
    for rule, values in scores.items():
        if None in values:
            lines.append(f"- {rule}: a kept trial's test score was not recorded")
            continue
        now = np.array(values) * 100
        mean, low, high = paired_interval(now, default)
        better, worse = int((now > default + 1e-9).sum()), int((now < default - 1e-9).sum())
        lines.append(
            f"- {rule} minus the default, {metric} points: {mean:+.1f} [{low:+.1f}, {high:+.1f}], "
            f"{better}-{worse}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "results", type=Path, nargs="+", help="bench.images pair files with trials (one metric)"
    )
    args = parser.parse_args(argv)
    runs = [json.loads(path.read_text()) for path in args.results]
    metrics = {run.get("metric", "accuracy") for run in runs}
    if len(metrics) > 1:
        parser.error(f"the files were chosen by different metrics: {sorted(metrics)}")
    rows = [r for run in runs for r in run["rows"] if "tuned_validation" in r]
    print(table(rows, metrics.pop()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
