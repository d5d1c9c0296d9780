"""python -m bench {run,quick,report,speed,meta}: see bench/README.md."""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import bench  # noqa: F401  (sets the offline environment first)
from bench.tasks import DATA_ROOT, PROFILES, TASKS, Cut, check_tasks

ALL_METHODS = "hypertweaks,defaults,random,tpe_median,hf_search,onepoch_topk,embed_lr,setfit"
QUICK = {
    "tasks": ["tweeteval-emotion"],
    "methods": ["defaults", "hypertweaks", "hf_search", "random"],
    "budgets": ["3x"],
    "seeds": [0],
}
# Its own folder: bench/results/ holds the committed cells of the same cut, which `run` skips.
QUICK_RESULTS = Path(__file__).resolve().parent / "work" / "quick"


def _cut(args: argparse.Namespace) -> Cut:
    base = PROFILES[args.profile]
    return Cut(
        train=args.train_size or base.train,
        validation=args.val_size or base.validation,
        test=args.test_size or base.test,
        max_length=args.max_length or base.max_length,
    )


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)

    def data_options(p: argparse.ArgumentParser, profile: str) -> None:
        p.add_argument(
            "--profile",
            choices=sorted(PROFILES),
            default=profile,
            help="data cut sizes: " + ", ".join(f"{k}={v.key}" for k, v in PROFILES.items()),
        )
        p.add_argument("--train-size", type=int, help="training rows (overrides the profile)")
        p.add_argument("--val-size", type=int, help="validation rows")
        p.add_argument("--test-size", type=int, help="test rows, at most")
        p.add_argument("--max-length", type=int, help="tokens")
        p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
        p.add_argument(
            "--threads",
            type=int,
            help="pin every method to this many CPU threads (default: each method's own choice; "
            "hypertweaks takes all cores)",
        )

    def where_options(p: argparse.ArgumentParser) -> None:
        p.add_argument(
            "--data-root",
            type=Path,
            default=DATA_ROOT,
            help="a folder of task folders, each with train.csv and test.csv (validation.csv "
            "optional; carved from train when missing), columns text and label (default: "
            f"{DATA_ROOT}, or HYPERTWEAKS_BENCH_DATA)",
        )
        p.add_argument(
            "--model",
            help="a local text model folder (default: the packaged MiniLM); its cells go to "
            "a table of their own",
        )

    run = sub.add_parser("run", help="run the missing (task, method, budget, seed) cells")
    run.add_argument(
        "--tasks",
        default=",".join(TASKS),
        help=f"folder names under --data-root (default {','.join(TASKS)})",
    )
    run.add_argument("--methods", default=ALL_METHODS)
    run.add_argument("--budget", default="3x", help="multiples of one default run, e.g. 3x,8x")
    run.add_argument("--seeds", default="0,1,2")
    run.add_argument("--no-report", action="store_true", help="do not rewrite RESULTS.md")
    data_options(run, "standard")
    where_options(run)

    quick = sub.add_parser(
        "quick",
        help="one task, 600 rows, length 48, budget 3x, 1 seed, "
        "hypertweaks/defaults/hf_search/random; then the report",
    )
    data_options(quick, "standard")
    where_options(quick)
    quick.add_argument(
        "--results",
        type=Path,
        default=QUICK_RESULTS,
        help=f"folder for its cells and RESULTS.md (default {QUICK_RESULTS}, not committed: the "
        "committed cells would make it skip every cell; run it again to resume)",
    )

    sub.add_parser("report", help="write bench/RESULTS.md and the anytime plots from the cells")

    speed = sub.add_parser("speed", help="examples/s of hypertweaks.train.fit vs the HF Trainer")
    speed.add_argument("--task", default="tweeteval-emotion", choices=TASKS)
    speed.add_argument("--repeats", type=int, default=2)
    speed.add_argument("--epochs", type=int, default=1)
    speed.add_argument("--batch-size", type=int, help="default: the default recipe's")
    speed.add_argument("--model", help="a local text model folder (default: the packaged MiniLM)")
    data_options(speed, "standard")

    from bench.meta import cli as meta_cli

    meta_cli.add_parser(sub)

    args = parser.parse_args(argv)
    if args.command == "meta":
        return meta_cli.run(args)
    if getattr(args, "threads", None):
        from bench.methods import pin_threads

        pin_threads(args.threads)
    if args.command == "report":
        from bench.report import report

        report()
        return 0
    if args.command == "speed":
        from bench.speed import speed as run_speed

        run_speed(
            args.task, _cut(args), args.repeats, args.epochs, args.device, args.batch_size,
            args.model,
        )  # fmt: skip
        return 0

    from bench.run import parse_budget
    from bench.run import run as run_cells

    if args.command == "quick":
        tasks, methods, budgets, seeds = (
            QUICK[k] for k in ("tasks", "methods", "budgets", "seeds")
        )
        no_report = False
        cells_dir, results_dir = args.results / "cells", args.results
    else:
        tasks, methods = _csv(args.tasks), _csv(args.methods)
        budgets, seeds = _csv(args.budget), [int(s) for s in _csv(args.seeds)]
        no_report = args.no_report
        cells_dir = results_dir = None
    check_tasks(tasks, args.data_root)
    cut = _cut(args)
    start = time.perf_counter()
    print(f"cut {cut.key}: tasks {tasks}, methods {methods}, budgets {budgets}, seeds {seeds}")
    failures = run_cells(
        tasks,
        methods,
        [parse_budget(b) for b in budgets],
        seeds,
        cut,
        args.device,
        cells_dir=cells_dir,
        data_root=args.data_root,
        model=args.model,
    )
    print(f"done in {(time.perf_counter() - start) / 60:.1f} min, {failures} failed cells")
    if not no_report:
        from bench.report import report

        print(f"report: {report(results_dir)}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
