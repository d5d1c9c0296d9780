"""The command line: a thin layer over `hypertweaks.tune`."""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from hypertweaks.config import ConfigError, load_experiment
from hypertweaks.data import DataError
from hypertweaks.display import format_value
from hypertweaks.models import ModelError
from hypertweaks.report import render
from hypertweaks.search import Result, tune
from hypertweaks.study import StudyError, sqlite_url

# What the user's input or environment got wrong: one message, exit code 2, no traceback.
# Anything else is a bug: its traceback shows, and the study stays resumable.
USER_ERRORS = (ConfigError, DataError, ModelError, StudyError)

# flag -> (experiment field, type, help); every flag overrides the YAML file.
FLAGS: dict[str, tuple[str, Any, str]] = {
    "--task": ("task", str, "text-classification, image-classification or causal-lm"),
    "--model": ("model", str, "hub id, local model folder, or timm backbone name"),
    "--gguf-file": ("gguf_file", str, "GGUF file inside the model folder/repo (causal-lm)"),
    "--weights": ("weights", str, "local weights file for the backbone (image models)"),
    "--train": ("train", str, "training data: CSV, JSONL, Parquet, datasets folder, image folder"),
    "--validation": ("validation", str, "validation data (default: a stratified split of train)"),
    "--test": ("test", str, "test data, scored once with the best model"),
    "--text-column": ("text_column", str, "column holding the texts"),
    "--label-column": ("label_column", str, "column holding the labels"),
    "--image-column": ("image_column", str, "column holding image paths"),
    "--name": ("name", str, "study name: results go to RUNS_DIR/NAME"),
    "--runs-dir": ("runs_dir", str, "where studies live (default runs)"),
    "--storage": ("storage", str, "Optuna storage URL (default: SQLite in RUNS_DIR/NAME)"),
    "--trials": ("trials", int, "number of trials for the whole study"),
    "--timeout": ("timeout", str, "wall-clock budget for the whole study, e.g. 30m, 2h"),
    "--metric": (
        "metric",
        str,
        "accuracy, macro_f1, loss, roc_auc, defect_recall; causal-lm: loss, perplexity, "
        "exact_match",
    ),
    "--device": ("device", str, "auto, cpu, cuda, cuda:N"),
    "--seed": ("seed", int, "seed of the splits, the sampler and the trials"),
    "--max-length": ("max_length", int, "longest text in tokens"),
    "--image-size": ("image_size", int, "image side in pixels"),
    "--patience": ("patience", int, "epochs without improvement before stopping a trial"),
    "--backend": ("backend", str, "optuna (embedded, default) or ray (a Ray Tune cluster)"),
    "--ray-address": ("ray_address", str, "Ray cluster to join, e.g. auto (default: local)"),
    "--cpus-per-trial": ("cpus_per_trial", float, "Ray backend: CPUs per trial (default 1)"),
    "--gpus-per-trial": ("gpus_per_trial", float, "Ray backend: GPUs per trial, may be 0.5"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="hypertweaks", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    tune_cmd = commands.add_parser("tune", help="fine-tune a model and search its hyperparameters")
    tune_cmd.add_argument("experiment", nargs="?", help="experiment YAML file")
    for flag, (dest, kind, help_text) in FLAGS.items():
        tune_cmd.add_argument(flag, dest=dest, type=kind, help=help_text)
    tune_cmd.add_argument("--quiet", action="store_true", default=None, help="log lines only")
    tune_cmd.add_argument(
        "--no-smoke",
        dest="smoke",
        action="store_false",
        default=None,
        help="skip the smoke run on a tiny subset",
    )
    tune_cmd.add_argument(
        "--fresh",
        action="store_true",
        default=None,
        help="discard the study of this name (trials, best model) and start it afresh",
    )
    report_cmd = commands.add_parser("report", help="write RUN_DIR/report.html for a study")
    report_cmd.add_argument("run_dir", help="the study folder, e.g. runs/NAME")
    report_cmd.add_argument("--storage", help="the study's storage URL, if not RUN_DIR/study.db")
    dashboard_cmd = commands.add_parser("dashboard", help="live optuna-dashboard on a study")
    dashboard_cmd.add_argument("run_dir", help="the study folder, e.g. runs/NAME")
    dashboard_cmd.add_argument("--storage", help="the study's storage URL, if not RUN_DIR/study.db")
    dashboard_cmd.add_argument("--host", default="127.0.0.1", help="bind address (default local)")
    dashboard_cmd.add_argument("--port", type=int, default=8080)
    merge_cmd = commands.add_parser(
        "merge", help="merge a LoRA adapter (e.g. runs/NAME/best) into its base model"
    )
    merge_cmd.add_argument("adapter_dir", help="the saved adapter, e.g. runs/NAME/best")
    merge_cmd.add_argument("--output", required=True, help="folder for the merged full model")
    return parser


def run_merge(args: argparse.Namespace, console: Console) -> int:
    from hypertweaks.tasks.causal_lm import merge_adapter

    try:
        output = merge_adapter(args.adapter_dir, args.output)
    except ModelError as error:
        console.print(f"[bold red]error:[/bold red] {error}", highlight=False)
        return 2
    console.print(f"merged model: {output}")
    return 0


def run_dashboard(args: argparse.Namespace, console: Console) -> int:
    try:
        from optuna_dashboard import run_server
    except ImportError:
        console.print("the dashboard needs optuna-dashboard: pip install 'hypertweaks[dashboard]'")
        return 2
    if args.storage is None and not (Path(args.run_dir) / "study.db").is_file():
        console.print(f"[bold red]error:[/bold red] {args.run_dir} holds no study.db; pass a study "
                      "folder (e.g. runs/NAME) or --storage URL", highlight=False)  # fmt: skip
        return 2
    storage = args.storage or sqlite_url(Path(args.run_dir) / "study.db")
    console.print(f"dashboard on http://{args.host}:{args.port} (Ctrl-C to stop)")
    run_server(storage, host=args.host, port=args.port)
    return 0


def print_result(result: Result, console: Console) -> None:
    table = Table(
        title=f"best recipe (val {result.metric} {result.best_value:.4f})", title_justify="left"
    )
    table.add_column("knob")
    table.add_column("value")
    for knob, value in result.best_params.items():
        table.add_row(knob, format_value(value))
    console.print(table)
    if result.test_metrics:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
        console.print(f"test, best recipe:    {shown}")
    if result.default_test_metrics:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.default_test_metrics.items())
        console.print(f"test, default recipe: {shown}")
    console.print(f"{result.trials} trials in {result.seconds:.0f}s")
    console.print(
        f"best model: {result.best_model_dir} (recipe: {result.best_model_dir / 'best.yaml'})"
    )
    console.print(f"all trials: {result.results_path}")
    if result.report_path:
        console.print(f"report: {result.report_path}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = Console()
    if args.command == "report":
        try:
            console.print(f"report: {render(args.run_dir, args.storage)}")
        except (FileNotFoundError, ConfigError) as error:
            console.print(f"[bold red]error:[/bold red] {error}", highlight=False)
            return 2
        return 0
    if args.command == "dashboard":
        return run_dashboard(args, console)
    if args.command == "merge":
        return run_merge(args, console)
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "experiment")}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        experiment = load_experiment(args.experiment, overrides)
        result = tune(experiment)
    except USER_ERRORS as error:
        console.print(f"[bold red]error:[/bold red] {error}", highlight=False)
        return 2
    except KeyboardInterrupt:
        console.print("interrupted: finished trials are saved; run the same command to resume")
        return 130
    print_result(result, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
