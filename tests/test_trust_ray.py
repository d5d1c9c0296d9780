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


def hypertweaks_tune(folder: Path, env: dict[str, str], *flags: str) -> None:
    """`hypertweaks tune experiment.yaml FLAGS` in its own process, as a user runs it (a Ray
    driver inside the test process would share Ray's state with the other tests)."""
    command = [str(Path(sys.executable).with_name("hypertweaks")), "tune", "experiment.yaml"]
    done = subprocess.run(
        [*command, *flags, "--quiet"], cwd=folder, env=env, capture_output=True, text=True,
        timeout=600,
    )  # fmt: skip
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]


@pytest.mark.slow
def test_without_an_address_a_private_instance_runs_the_study(text_experiment, ray_env, tmp_path):
    # a stopped `ray start` leaves its address behind (here in RAY_ADDRESS): not joined
    env = {**ray_env, "RAY_ADDRESS": f"127.0.0.1:{free_port()}"}
    exp = {**text_experiment, "backend": "ray", "trials": 1, "smoke": False, "space": SPACE}
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump({**exp, "test": None}))
    hypertweaks_tune(tmp_path, env)  # joining the dead address hung; its timeout says so
    run_dir = Path(exp["runs_dir"]) / exp["name"]
    assert (run_dir / "best" / "best.yaml").is_file()


@pytest.mark.slow
def test_the_readme_cluster_example_writes_the_best_model_to_the_runs_folder(
    text_experiment, ray_env, tmp_path
):
    # README: `ray start --head`, then `hypertweaks tune experiment.yaml --backend ray
    # --ray-address auto`, from the project folder, with the default runs folder
    project = tmp_path / "project"
    project.mkdir()
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
        env = {**ray_env, "RAY_ADDRESS": f"127.0.0.1:{port}"}
        hypertweaks_tune(project, env, "--backend", "ray", "--ray-address", "auto")
    finally:
        subprocess.run([RAY, "stop"], env=ray_env, capture_output=True, timeout=120)
    best = project / "runs" / "cluster" / "best"
    assert (best / "best.yaml").is_file() and (best / "labels.json").is_file()
    assert (project / "runs" / "cluster" / "results.json").is_file()
