"""The command line: a thin layer over `hypertweaks.tune`, `load`, `predict_file` and `evaluate`."""

from __future__ import annotations

import argparse
import errno
import logging
import socket
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from hypertweaks import __version__
from hypertweaks.config import ConfigError, Experiment, load_experiment
from hypertweaks.data import DataError
from hypertweaks.display import format_value
from hypertweaks.kinds import KINDS, kind_of
from hypertweaks.larger_models import describe_backbone
from hypertweaks.ledger import describe_ledger
from hypertweaks.models import ModelError
from hypertweaks.noise import describe, describe_kept
from hypertweaks.report import render
from hypertweaks.search import Result, tune
from hypertweaks.strategies.finals import describe_refit, describe_soup
from hypertweaks.study import StudyError, sqlite_url

# What the user's input or environment got wrong: one message, exit code 2, no traceback.
# Anything else is a bug: its traceback shows, and the study stays resumable.
USER_ERRORS = (ConfigError, DataError, ModelError, StudyError)

DESCRIPTION = """\
Fine-tune a pretrained model (text or image classifier, small LLM with LoRA) on your data, let
the search find the fine-tuning hyperparameters that work, then use the tuned model.

  hypertweaks tune experiment.yaml             fine-tune and search; run it again to resume
  hypertweaks report runs/NAME                 an HTML report of what the search did
  hypertweaks predict runs/NAME new.csv        label new texts or images, or answer prompts
  hypertweaks evaluate runs/NAME labeled.csv   metrics, confusion matrix, alarm thresholds
  hypertweaks merge runs/NAME/best --output D  a LoRA adapter and its base as one model
  hypertweaks dashboard runs/NAME              a live optuna-dashboard of the study

`hypertweaks COMMAND --help` lists a command's options."""

# flag -> (experiment field, type, help); every flag overrides the YAML file.
FLAGS: dict[str, tuple[str, Any, str]] = {
    "--task": ("task", str, ", ".join(KINDS)),
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
    "--runs-dir": ("runs_dir", str, "where studies live"),
    "--storage": ("storage", str, "Optuna storage URL"),
    "--trials": ("trials", int, "number of trials for the whole study"),
    "--timeout": ("timeout", str, "wall-clock budget for the whole study, e.g. 30m, 2h"),
    "--metric": (
        "metric",
        str,
        "; ".join(f"{k.name}: {', '.join(k.metrics)}" for k in KINDS.values())
        + " (the first is the default)",
    ),
    "--device": ("device", str, "auto, cpu, cuda, cuda:N"),
    "--precision": (
        "precision",
        str,
        "auto, float32 or bfloat16 (auto: bfloat16 on CUDA, and for text and language models "
        "on a CPU with AMX or AVX-512 BF16)",
    ),
    "--seed": ("seed", int, "seed of the splits, the sampler and the trials"),
    "--max-length": ("max_length", int, "longest text in tokens"),
    "--image-size": ("image_size", int, "image side in pixels"),
    "--patience": ("patience", int, "epochs without improvement before stopping a trial"),
    "--class-weights": (
        "class_weights",
        str,
        "none or balanced: rare classes weigh as much as common ones in the loss",
    ),
    "--backend": ("backend", str, "optuna (embedded) or ray (a Ray Tune cluster)"),
    "--ray-address": ("ray_address", str, "Ray cluster to join, e.g. auto"),
    "--cpus-per-trial": ("cpus_per_trial", float, "Ray backend: CPUs per trial"),
    "--gpus-per-trial": ("gpus_per_trial", float, "Ray backend: GPUs per trial, may be 0.5"),
}


TUNE_DESCRIPTION = (
    "Fine-tune a pretrained model on your data and search its fine-tuning hyperparameters.\n"
    "Settings come from an experiment YAML file, from flags, or both (a flag overrides the\n"
    "file). Run the same command again to resume the study.\n\n"
    "examples:\n"
    "  hypertweaks tune experiment.yaml\n"
    "  hypertweaks tune --task text-classification "
    "--model sentence-transformers/all-MiniLM-L6-v2 --train data.csv"
)


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    return "none" if value is None else str(value)


def default_help(dest: str) -> str:
    """The default of an experiment field, as `Experiment` declares it, for a flag's help."""
    field = Experiment.model_fields[dest]
    if field.is_required():
        return "required, here or in the YAML file"
    if field.default_factory is not None:
        return ""
    about = field.description or ""
    if field.default is None and "default" in about:  # it says what None stands for
        return "default: " + about[about.find("default") + len("default") :].lstrip(": ")
    return f"default: {_shown(field.default)}"


def with_default(help_text: str, dest: str) -> str:
    if "default" in help_text or not (default := default_help(dest)):
        return help_text
    return f"{help_text} ({default})".replace("%", "%%")


def yaml_only_epilog(dests: set[str]) -> str:
    """The experiment fields that have no flag: set in the YAML file only."""
    fields = {k: v for k, v in Experiment.model_fields.items() if k not in dests}
    width = max(map(len, fields), default=0)
    lines = [
        "fields only in the YAML file (no flag); e.g. 'space:' maps each knob to a value (fixed),",
        "a list or {low, high, log} (searched):",
    ]
    for name, field in fields.items():
        about = field.description or ""
        if "default" not in about:
            about = "; ".join(part for part in (about, default_help(name)) if part)
        lines.append(f"  {name.ljust(width)}  {about}".rstrip())
    return "\n".join(lines)


def port_number(text: str) -> int:
    """argparse type of --port: 1-65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(
            f"the port must be a number 1-65535, got {text!r}; pass e.g. --port 8080"
        )
    return port


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="hypertweaks",
        description=DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--version", action="version", version=f"hypertweaks {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    tune_cmd = commands.add_parser(
        "tune",
        help="fine-tune a model and search its hyperparameters",
        description=TUNE_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    tune_cmd.add_argument("experiment", nargs="?", help="experiment YAML file")
    for flag, (dest, kind, help_text) in FLAGS.items():
        tune_cmd.add_argument(flag, dest=dest, type=kind, help=with_default(help_text, dest))
    tune_cmd.add_argument(
        "--larger-model",
        dest="larger_models",
        action="append",
        metavar="MODEL",
        help="a larger encoder to tune instead of --model when the --timeout holds its default "
        "run (text classification; repeat it, smallest first)",
    )
    tune_cmd.add_argument(
        "--quiet",
        action="store_true",
        default=None,
        help=with_default("log lines only, no live table", "quiet"),
    )
    tune_cmd.add_argument(
        "--no-smoke",
        dest="smoke",
        action="store_false",
        default=None,
        help="skip the smoke run on a tiny subset (default: the smoke run is "
        f"{_shown(Experiment.model_fields['smoke'].default)})",
    )
    tune_cmd.add_argument(
        "--fresh",
        action="store_true",
        default=None,
        help="DELETES the study of this name (its trials, best model and results) and starts "
        "afresh",
    )
    tune_cmd.epilog = yaml_only_epilog({action.dest for action in tune_cmd._actions})
    report_cmd = commands.add_parser("report", help="write RUN_DIR/report.html for a study")
    report_cmd.add_argument("run_dir", help="the study folder, e.g. runs/NAME")
    report_cmd.add_argument("--storage", help="the study's storage URL, if not RUN_DIR/study.db")
    dashboard_cmd = commands.add_parser("dashboard", help="live optuna-dashboard on a study")
    dashboard_cmd.add_argument("run_dir", help="the study folder, e.g. runs/NAME")
    dashboard_cmd.add_argument("--storage", help="the study's storage URL, if not RUN_DIR/study.db")
    dashboard_cmd.add_argument("--host", default="127.0.0.1", help="bind address (default local)")
    dashboard_cmd.add_argument(
        "--port",
        type=port_number,
        default=8080,
        help="port to serve on (default: %(default)s); pass another if it is in use",
    )
    merge_cmd = commands.add_parser(
        "merge", help="merge a LoRA adapter (e.g. runs/NAME/best) into its base model"
    )
    merge_cmd.add_argument("adapter_dir", help="the saved adapter, e.g. runs/NAME/best")
    merge_cmd.add_argument("--output", required=True, help="folder for the merged full model")
    add_use_commands(commands)
    return parser


def add_use_commands(commands) -> None:
    """predict and evaluate: the tuned model on new data."""
    predict_cmd = commands.add_parser(
        "predict",
        help="use a tuned model: label texts or images, or answer prompts",
        description="Label every text of INPUT (CSV, TSV, JSONL, Parquet, or a text file with "
        "one text a line) or every image (a folder, searched recursively, or a table of paths), "
        'or answer every prompt of a JSONL file ({"prompt": ...} or {"messages": [...]}) '
        "with a tuned causal LM. The rows are written with the predicted label and each class's "
        "probability (or the answer) to --output, by default INPUT.predictions.EXT beside it.",
    )
    predict_cmd.add_argument(
        "model", metavar="RUN_OR_MODEL_DIR", help="the study folder (runs/NAME) or its best/"
    )
    predict_cmd.add_argument(
        "input", metavar="INPUT", help="the texts, images or prompts to predict"
    )
    predict_cmd.add_argument(
        "--output", metavar="FILE", help="CSV, TSV, JSONL or Parquet file to write"
    )
    predict_cmd.add_argument(
        "--top-k", type=int, metavar="K", help="write the K likeliest classes only"
    )
    predict_cmd.add_argument(
        "--threshold",
        type=float,
        help="two classes: predict the positive (e.g. defect) class when its probability is at "
        "least this (default: the likelier class)",
    )
    generation = predict_cmd.add_argument_group("causal LMs (greedy unless --temperature > 0)")
    generation.add_argument("--max-new-tokens", type=int, default=128)
    generation.add_argument("--temperature", type=float, default=0.0)
    generation.add_argument("--top-p", type=float, default=1.0)
    generation.add_argument("--top-k-tokens", dest="top_k_tokens", type=int, default=0)
    generation.add_argument("--seed", type=int, default=0, help="seed of the sampling")
    evaluate_cmd = commands.add_parser(
        "evaluate",
        help="score a tuned model on labelled data: metrics, confusion, thresholds",
        description="Score the tuned model on LABELED_FILE: the task's metrics, each class's "
        "precision and recall, the confusion matrix, and for two classes the precision and "
        "recall at each threshold (causal LMs: loss, perplexity and, for short answers, exact "
        "match). Written as JSON and an HTML page (default: "
        "RUN_DIR/evaluation-FILE.json and .html) and shown as tables.",
    )
    evaluate_cmd.add_argument(
        "model", metavar="RUN_OR_MODEL_DIR", help="the study folder (runs/NAME) or its best/"
    )
    evaluate_cmd.add_argument(
        "labeled",
        metavar="LABELED_FILE",
        help="labelled texts or image paths (a table), or an image folder by class",
    )
    evaluate_cmd.add_argument(
        "--target-recall",
        type=float,
        help="two classes: find the highest threshold whose recall of the positive class "
        "reaches this, e.g. 0.95",
    )
    evaluate_cmd.add_argument("--label-column", help="default: the one the model was tuned on")
    evaluate_cmd.add_argument(
        "--output", metavar="FILE", help="the JSON file to write (HTML beside it)"
    )
    for cmd in (predict_cmd, evaluate_cmd):
        cmd.add_argument("--text-column", help="default: the one the model was tuned on")
        cmd.add_argument("--image-column", help="default: the one the model was tuned on")
        cmd.add_argument("--batch-size", type=int, help="examples per forward pass")
        cmd.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N")
        cmd.add_argument(
            "--skip-bad",
            action="store_true",
            help="skip unreadable images, or texts that are empty, missing or not a single "
            "text, and count them",
        )
        cmd.add_argument("--quiet", action="store_true", help="no progress bar")


@contextmanager
def progress_bar(console: Console, quiet: bool) -> Iterator[Callable[[int], Any]]:
    """A factory predict_file calls with the total: a bar on long inputs, nothing on short ones.
    Every bar is stopped on leaving, so an error is printed on a clean line."""
    from rich.progress import Progress

    bars: list[Progress] = []

    def start(total: int):
        if quiet or total < 256:
            return None
        bar = Progress(console=console, transient=True)
        bar.start()
        bars.append(bar)
        task = bar.add_task("predicting", total=total)
        return lambda done: bar.advance(task, done)

    try:
        yield start
    finally:
        for bar in bars:
            bar.stop()


def plain_console(**options: Any) -> Console:
    """The command line's console: text is printed as it is, so brackets in paths, labels or
    recipes (`[spam]`, `hypertweaks[postgres]`) are never read as Rich markup."""
    return Console(markup=False, highlight=False, **options)


def user_error(console: Console, error: Exception | str) -> int:
    # never folded at the console's width: a path in the message stays whole in a log file
    console.print(
        Text.assemble(("error:", "bold red"), f" {error}"), highlight=False, soft_wrap=True
    )
    return 2


def text_table(title: str, header: Any, rows: Any) -> Table:
    table = Table(title=title, title_justify="left")
    for name in header:
        table.add_column(str(name))
    for row in rows:
        table.add_row(*(str(cell) for cell in row))
    return table


def run_predict(args: argparse.Namespace, console: Console) -> int:
    from hypertweaks.predict import describe, predict_file

    generation = {
        "max_new_tokens": args.max_new_tokens,
        "temperature": args.temperature,
        "top_p": args.top_p,
        "top_k": args.top_k_tokens,
        "seed": args.seed,
    }
    try:
        with progress_bar(console, args.quiet) as start:
            info = describe(args.model)
            images = kind_of(info.task).inputs == "images"
            output, table, predictor = predict_file(
                info,
                args.input,
                args.output,
                column=args.image_column if images else args.text_column,
                top_k=args.top_k,
                threshold=args.threshold,
                batch_size=args.batch_size,
                skip_bad=args.skip_bad,
                generation=generation,
                progress=start,
                device=args.device,
            )
    except (ConfigError, DataError, ModelError) as error:
        return user_error(console, error)
    for note in predictor.notes:
        console.print(f"note: {note}")
    if "predicted_label" in table:
        counts = table["predicted_label"].value_counts()
        shown = ", ".join(f"{label} {count}" for label, count in counts.items())
        console.print(f"{len(table)} predicted: {shown}")
    else:
        console.print(f"{len(table)} answers")
    console.print(f"written: {output}")
    return 0


def run_evaluate(args: argparse.Namespace, console: Console) -> int:
    from hypertweaks.evaluate import default_report_path, evaluate, report_tables, write_report
    from hypertweaks.predict import describe

    try:
        with progress_bar(console, args.quiet) as start:
            info = describe(args.model)
            images = kind_of(info.task).inputs == "images"
            report = evaluate(
                info,
                args.labeled,
                args.target_recall,
                column=args.image_column if images else args.text_column,
                label_column=args.label_column,
                batch_size=args.batch_size,
                skip_bad=args.skip_bad,
                progress=start,
                device=args.device,
            )
    except (ConfigError, DataError, ModelError) as error:
        return user_error(console, error)
    for note in report["notes"]:
        console.print(f"note: {note}")
    for title, header, rows in report_tables(report):
        console.print(text_table(title, header, rows))
    output = args.output or default_report_path(info.directory, args.labeled)
    json_path, html_path = write_report(report, output)
    console.print(f"written: {json_path} and {html_path}")
    return 0


def run_merge(args: argparse.Namespace, console: Console) -> int:
    from hypertweaks.tasks.causal_lm import merge_adapter

    try:
        output = merge_adapter(args.adapter_dir, args.output)
    except ModelError as error:
        return user_error(console, error)
    console.print(f"merged model: {output}")
    return 0


def port_problem(host: str, port: int, error: OSError | None = None) -> str | None:
    """Why the dashboard cannot listen on host:port (trying to bind it when no error is
    given), or None when it can."""
    if error is None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            with socket.socket(family, socket.SOCK_STREAM) as probe:
                # as the server does: a closed connection's TIME_WAIT does not hold the port
                probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                probe.bind((host, port))
            return None
        except OSError as failure:
            error = failure
    reason = error.strerror or str(error)
    if error.errno == errno.EADDRINUSE:
        return f"port {port} on {host} is in use ({reason}); pass --port N with a free port"
    return f"cannot serve on {host}:{port} ({reason}); pass --port N with a free port, or --host"


def run_dashboard(args: argparse.Namespace, console: Console) -> int:
    try:
        from optuna_dashboard import run_server
    except ImportError:
        console.print("the dashboard needs optuna-dashboard: pip install 'hypertweaks[dashboard]'")
        return 2
    if args.storage is None and not (Path(args.run_dir) / "study.db").is_file():
        return user_error(
            console,
            f"{args.run_dir} holds no study.db; pass a study folder (e.g. runs/NAME) or "
            "--storage URL",
        )
    if problem := port_problem(args.host, args.port):
        return user_error(console, problem)
    storage = args.storage or sqlite_url(Path(args.run_dir) / "study.db")
    console.print(f"dashboard on http://{args.host}:{args.port} (Ctrl-C to stop)")
    try:
        run_server(storage, host=args.host, port=args.port)
    except OSError as error:  # the port was taken since the check, or the host cannot be bound
        return user_error(console, port_problem(args.host, args.port, error) or str(error))
    return 0


def print_result(result: Result, console: Console) -> None:
    title = f"best recipe (val {result.metric} {result.best_value:.4f})"
    rows = [(knob, format_value(value)) for knob, value in result.best_params.items()]
    console.print(text_table(title, ("knob", "value"), rows))
    soup_kept = bool(result.final_model and result.final_model["kept"])
    refit_kept = bool(result.refit and result.refit["kept"])
    if result.test_metrics:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.test_metrics.items())
        which = "the soup:    " if soup_kept else "the refit:   " if refit_kept else "best recipe:"
        console.print(f"test, {which} {shown}")
    if result.default_test_metrics:
        shown = ", ".join(f"{k} {v:.4f}" for k, v in result.default_test_metrics.items())
        console.print(f"test, default recipe: {shown}")
    console.print(f"{result.trials} trials in {result.seconds:.0f}s")
    if note := describe(result.within_noise):
        console.print(f"note: {note}")
    if note := describe_kept(result.defaults_kept):
        console.print(f"note: {note}")
    if result.stopped_early:
        console.print(f"note: {result.stopped_early}")
    if result.final_model:
        console.print(describe_soup(result.final_model, result.metric))
    if line := describe_refit(result.refit, result.metric):
        console.print(line)
    if line := describe_ledger(result.budget_bought, result.metric):
        console.print(line)
    if line := describe_backbone(result.backbone):
        console.print(line)
    console.print(
        f"best model: {result.best_model_dir} (recipe: {result.best_model_dir / 'best.yaml'})",
    )
    console.print(f"all trials: {result.results_path}")
    if result.report_path:
        console.print(f"report: {result.report_path}")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    console = plain_console()
    if args.command == "report":
        try:
            console.print(f"report: {render(args.run_dir, args.storage)}")
        except (FileNotFoundError, ConfigError) as error:
            return user_error(console, error)
        return 0
    if args.command == "dashboard":
        return run_dashboard(args, console)
    if args.command == "merge":
        return run_merge(args, console)
    if args.command == "predict":
        return run_predict(args, console)
    if args.command == "evaluate":
        return run_evaluate(args, console)
    overrides = {k: v for k, v in vars(args).items() if k not in ("command", "experiment")}
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    logging.getLogger("optuna").setLevel(logging.WARNING)
    try:
        experiment = load_experiment(args.experiment, overrides)
        result = tune(experiment)
    except USER_ERRORS as error:
        return user_error(console, error)
    except KeyboardInterrupt:
        console.print("interrupted: finished trials are saved; run the same command to resume")
        return 130
    print_result(result, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
