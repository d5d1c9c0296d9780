"""The Ray backend finds the cluster it is told to, and only that one: the README's cluster
example (`ray start --head`, then `--ray-address auto` with the default runs folder) writes the
best model to ./runs/NAME/best; an address that does not answer is refused at once; without an
address a private local instance runs the study, whatever address a stopped cluster left."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from conftest import patch_fit

from hypertweaks import tune
from hypertweaks.cli import main
from hypertweaks.config import ConfigError

ray = pytest.importorskip("ray")
RAY = str(Path(sys.executable).with_name("ray"))
SPACE = {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.fixture
def ray_env(monkeypatch) -> dict[str, str]:
    """The environment of Ray nodes and drivers here: no usage stats, no token auth (Ray 2.60's
    local ray.init() leaves ~/.ray/auth_token, which a node started without it refuses)."""
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    monkeypatch.setenv("RAY_AUTH_MODE", "disabled")
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    return {**os.environ, "HF_HUB_OFFLINE": "1"}


def test_a_ray_address_that_does_not_answer_is_refused_at_once(
    text_experiment, ray_env, monkeypatch
):
    def boom(*args, **kwargs):
        raise AssertionError("training started before the cluster was checked")

    patch_fit(monkeypatch, boom)
    port = free_port()  # nothing listens there: a cluster that was stopped
    exp = {**text_experiment, "backend": "ray", "smoke": True, "space": SPACE}
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
    for address in (f"127.0.0.1:{port}", "auto"):
        start = time.perf_counter()
        with pytest.raises(
            ConfigError,
            match=rf"Ray cluster at 127\.0\.0\.1:{port}.*does not answer.*`ray start --head`, or "
            r"omit --ray-address",
        ):
            tune({**exp, "ray_address": address})
        assert time.perf_counter() - start < 15


@pytest.mark.slow
def test_without_an_address_a_private_instance_runs_the_study(
    text_experiment, ray_env, monkeypatch
):
    # a stopped `ray start` leaves its address behind (here in RAY_ADDRESS): not joined
    monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{free_port()}")
    exp = {**text_experiment, "backend": "ray", "trials": 1, "smoke": False, "space": SPACE}
    start = time.perf_counter()
    result = tune({**exp, "test": None})
    assert result.trials == 1 and (result.best_model_dir / "best.yaml").is_file()
    assert time.perf_counter() - start < 240


@pytest.mark.slow
def test_the_readme_cluster_example_writes_the_best_model_to_the_runs_folder(
    text_experiment, ray_env, tmp_path, monkeypatch
):
    # README: `ray start --head`, then `hypertweaks tune experiment.yaml --backend ray
    # --ray-address auto`, from the project folder, with the default runs folder
    project = tmp_path / "project"
    project.mkdir()
    monkeypatch.chdir(project)
    exp = {**text_experiment, "name": "cluster", "trials": 2, "smoke": False, "space": SPACE}
    del exp["runs_dir"]
    (project / "experiment.yaml").write_text(yaml.safe_dump(exp))
    port = free_port()
    head = [RAY, "start", "--head", f"--port={port}", "--num-cpus=2", "--num-gpus=0"]
    head += ["--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats"]
    try:
        subprocess.run(head, check=True, env=ray_env, capture_output=True, timeout=180)
        # what `auto` finds (RAY_ADDRESS, not /tmp/ray/ray_current_cluster: that file is shared
        # by every cluster started on this machine)
        monkeypatch.setenv("RAY_ADDRESS", f"127.0.0.1:{port}")
        flags = ["--backend", "ray", "--ray-address", "auto", "--quiet"]
        assert main(["tune", "experiment.yaml", *flags]) == 0
    finally:
        ray.shutdown()
        subprocess.run([RAY, "stop"], env=ray_env, capture_output=True, timeout=120)
    best = project / "runs" / "cluster" / "best"
    assert (best / "best.yaml").is_file() and (best / "labels.json").is_file()
    assert (project / "runs" / "cluster" / "results.json").is_file()
