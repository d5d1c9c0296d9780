"""Wall time of the same small study on the embedded backend and on a local Ray cluster (a head
and a worker node, one CPU each: two trials at once).

    python -m bench.backends --trials 6
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pandas as pd

from bench.tasks import DATA_ROOT, model_path
from hypertweaks import tune

RESULTS = Path(__file__).resolve().parent / "results" / "backends.json"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_cluster() -> str:
    ray = str(Path(sys.executable).with_name("ray"))
    port = free_port()
    common = ["--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1"]
    subprocess.run(
        [ray, "start", "--head", f"--port={port}", "--include-dashboard=false", *common],
        check=True,
        capture_output=True,
    )
    subprocess.run([ray, "start", f"--address=127.0.0.1:{port}", *common], check=True)
    return f"127.0.0.1:{port}"


def stop_cluster() -> None:
    ray = str(Path(sys.executable).with_name("ray"))
    subprocess.run([ray, "stop", "--force"], capture_output=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=6)
    parser.add_argument("--rows", type=int, default=200, help="training tweets")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="backends-"))
    data = {}
    for role, rows in (("train", args.rows), ("validation", args.rows // 2)):
        table = pd.read_csv(DATA_ROOT / "tweeteval-emotion" / f"{role}.csv")
        data[role] = work / f"{role}.csv"
        table.groupby("label").head(rows // 4).to_csv(data[role], index=False)
    experiment = {
        "model": model_path(),
        "train": str(data["train"]),
        "validation": str(data["validation"]),
        "trials": args.trials,
        "max_length": 48,
        "quiet": True,
        "space": {"epochs": {"low": 1, "high": 3}},
    }
    timings = {}
    start = time.perf_counter()
    embedded = tune({**experiment, "runs_dir": str(work / "embedded"), "name": "embedded"})
    timings["embedded"] = time.perf_counter() - start
    address = start_cluster()
    try:
        start = time.perf_counter()
        on_ray = tune(
            {
                **experiment,
                "runs_dir": str(work / "ray"),
                "name": "ray",
                "backend": "ray",
                "ray_address": address,
                "cpus_per_trial": 1,
            }
        )
        timings["ray"] = time.perf_counter() - start
    finally:
        stop_cluster()
    record = {
        "study": f"MiniLM, tweeteval-emotion {args.rows} train / {args.rows // 2} validation "
        f"tweets, 48 tokens, {args.trials} trials, epochs 1-3",
        "embedded_seconds": round(timings["embedded"], 1),
        "embedded_setup": "one process, all (2) CPU threads, trials one after another",
        "ray_seconds": round(timings["ray"], 1),
        "ray_setup": "local cluster: head + 1 worker node, 1 CPU each, 2 trials at once",
        "ratio_embedded_over_ray": round(timings["embedded"] / timings["ray"], 2),
        "best_value": {"embedded": embedded.best_value, "ray": on_ray.best_value},
        "trials": {"embedded": embedded.trials, "ray": on_ray.trials},
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs",
        "command": f"python -m bench.backends --trials {args.trials} --rows {args.rows}",
    }
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
