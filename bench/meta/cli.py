"""python -m bench meta {collect,candidates,probe,simulate,headroom,combine,check,calibrate,pack}:
see bench/README.md."""

from __future__ import annotations

import argparse
from pathlib import Path

META_TASKS = (
    "ag-news,banking77,mpqa,snips,sst2,sst5,trec6,tweeteval-emoji,tweeteval-emotion,"
    "tweeteval-hate,tweeteval-irony,tweeteval-offensive,tweeteval-sentiment"
)


def _csv(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def add_parser(sub) -> None:
    meta = sub.add_parser("meta", help="the meta-dataset: collect runs, replay strategies")
    msub = meta.add_subparsers(dest="meta_command", required=True)
    collect = msub.add_parser("collect", help="run the design's missing cells (resumable)")
    collect.add_argument("--tasks", help=f"default: {META_TASKS}; with --images, the image sets")
    collect.add_argument(
        "--images", action="store_true", help="the image design (bench/meta/images.py)"
    )
    collect.add_argument("--recipes", type=int, default=16, help="the design's first N recipes")
    collect.add_argument("--seeds", default="0,1")
    collect.add_argument("--profile", default="standard")
    collect.add_argument("--data-root", type=Path, help="folders of train/test CSVs")
    collect.add_argument("--device", default="auto")
    collect.add_argument("--threads", type=int, default=1)
    collect.add_argument(
        "--out", type=Path, help="write the cells under this folder instead of bench/results/meta"
    )
    candidates = msub.add_parser(
        "candidates", help="run the product's own candidate recipes (head-only) on every task"
    )
    candidates.add_argument("--tasks", default=META_TASKS)
    candidates.add_argument("--seeds", default="0,1")
    candidates.add_argument("--profile", default="standard")
    candidates.add_argument("--data-root", type=Path, help="folders of train/test CSVs")
    candidates.add_argument("--device", default="auto")
    candidates.add_argument("--threads", type=int, default=1)
    candidates.add_argument(
        "--which", default="-1", help="candidate indices, as --which=-3,-2 (collect.CANDIDATES)"
    )
    simulate = msub.add_parser("simulate", help="replay strategies over the recorded cells")
    simulate.add_argument("strategies", help="comma-separated; 'all' for every registered one")
    simulate.add_argument("--budget", default="1x,2x,3x,5x")
    simulate.add_argument("--repeats", type=int, default=20, help="replays per task and budget")
    simulate.add_argument("--profile", default="standard")
    simulate.add_argument("--baseline", default="reference", help="paired differences to this")
    simulate.add_argument("--seeds", help="only these recorded seeds (default: every seed)")
    simulate.add_argument("--images", action="store_true", help="the image table, not the text")
    headroom = msub.add_parser("headroom", help="bench/results/meta/<cut>/HEADROOM.md")
    headroom.add_argument("--profile", default="standard")
    headroom.add_argument("--seeds", help="only these recorded seeds (default: every seed)")
    headroom.add_argument("--images", action="store_true", help="the image table, not the text")
    msub.add_parser(
        "combine", help="what an ensemble of the default with other runs adds (COMBINE.md)"
    ).add_argument("--profile", default="standard")
    msub.add_parser(
        "pack",
        help="move old one-file-per-cell probabilities and records into the task files "
        "(meta/README.md)",
    )
    probe = msub.add_parser("probe", help="LogME of the frozen model on each task (meta-features)")
    probe.add_argument("--tasks", default=META_TASKS)
    probe.add_argument("--profile", default="standard")
    probe.add_argument("--data-root", type=Path)
    calibrate = msub.add_parser(
        "calibrate", help="cells recorded elsewhere (a GPU) against the committed ones"
    )
    calibrate.add_argument("folder", type=Path, help="a collect --out folder: <folder>/<cut>/cells")
    calibrate.add_argument("--profile", default="standard")
    check = msub.add_parser("check", help="simulated against the real bench cells at a budget")
    check.add_argument("--budget", default="3x")
    check.add_argument("--profile", default="standard")
    check.add_argument(
        "--results",
        type=Path,
        help="a results folder of the product as shipped (e.g. bench/results/same_run): its "
        "hypertweaks cells are checked too; default: the committed bench cells",
    )
    check.add_argument("--seeds", help="only these recorded seeds (default: every seed)")


def run(args: argparse.Namespace) -> int:
    if args.meta_command == "pack":
        from bench.meta import META_DIR, records, store

        print(f"[meta] {store.pack(META_DIR)} cells' probabilities packed")
        folders = [f for cut in META_DIR.iterdir() for f in (cut / "cells", cut / "averaging",
                   cut / "members") if f.is_dir()]  # fmt: skip
        print(f"[meta] {sum(map(records.pack, folders))} cell records packed")
        return 0
    import torch

    from bench.tasks import PROFILES

    cut = PROFILES[args.profile]
    if args.meta_command == "collect":
        from bench.meta import META_DIR
        from bench.meta.collect import collect, collect_images
        from bench.meta.images import IMAGE_TASKS

        torch.set_num_threads(args.threads)
        seeds = [int(s) for s in _csv(args.seeds)]
        out = args.out or META_DIR
        if args.images:
            tasks = _csv(args.tasks) if args.tasks else list(IMAGE_TASKS)
            ran = collect_images(tasks, args.recipes, seeds, args.device, out)
        else:
            tasks = _csv(args.tasks or META_TASKS)
            ran = collect(tasks, cut, args.recipes, seeds, args.device, args.data_root, out)
        print(f"[meta] {ran} cells run")
        return 0
    if args.meta_command == "candidates":
        from bench.meta.collect import collect_candidates

        torch.set_num_threads(args.threads)
        seeds = [int(s) for s in _csv(args.seeds)]
        which = [int(i) for i in _csv(args.which)]
        ran = collect_candidates(
            _csv(args.tasks), cut, seeds, args.device, args.data_root, which=which
        )
        print(f"[meta] {ran} candidate cells run")
        return 0
    if args.meta_command == "probe":
        from bench.meta.probe import probe

        torch.set_num_threads(1)
        probe(_csv(args.tasks), cut, args.data_root)
        return 0
    if args.meta_command == "calibrate":
        from bench.meta.calibrate import calibrate

        print(calibrate(args.folder, cut.key))
        return 0
    from bench.meta import simulate

    if getattr(args, "images", False):
        from bench.meta.images import IMAGE_CUT

        cut = IMAGE_CUT
    seeds = getattr(args, "seeds", None)
    table = simulate.load_table(cut, seeds=[int(s) for s in _csv(seeds)] if seeds else None)
    if args.meta_command == "headroom":
        print(simulate.write_headroom(table, cut, images=args.images))
        return 0
    if args.meta_command == "combine":
        from bench.meta.combine import combine

        print(combine(table))
        return 0
    if args.meta_command == "check":
        from bench import RESULTS_DIR

        results = args.results or RESULTS_DIR
        budget = float(args.budget.rstrip("x"))
        text = simulate.against_real(
            table, results / "cells" / cut.key, budget, product=args.results is not None
        )
        name = (
            "SIM_VS_REAL.md"
            if args.results is None
            else f"SIM_VS_REAL_{results.name}_{budget:g}x.md"
        )
        (simulate.META_DIR / cut.key / name).write_text(text)
        print(text)
        return 0
    names = list(simulate.STRATEGIES) if args.strategies == "all" else _csv(args.strategies)
    budgets = [float(b.rstrip("x")) for b in _csv(args.budget)]
    print(simulate.compare(table, names, budgets, args.repeats, args.baseline))
    return 0
