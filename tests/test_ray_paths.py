"""Paths are resolved once: the Ray backend, whose trials run in their own working directories,
sees the same files as the driver, with the README's relative `--train train.csv`."""

from __future__ import annotations

import json

import pytest
import yaml
from conftest import make_texts

from hypertweaks.cli import main

pytestmark = pytest.mark.slow
ray = pytest.importorskip("ray")


def test_ray_with_relative_paths_from_another_directory(tiny_bert, tmp_path, monkeypatch):
    # the experiment file's relative paths are relative to its folder, wherever it is run from
    project = tmp_path / "project"
    (project / "data").mkdir(parents=True)
    make_texts(12, seed=0).to_csv(project / "data" / "train.csv", index=False)
    make_texts(4, seed=1).to_csv(project / "data" / "val.csv", index=False)
    experiment = {
        "model": str(tiny_bert), "train": "data/train.csv", "validation": "data/val.csv",
        "runs_dir": "runs", "name": "rel", "trials": 2, "max_length": 16, "quiet": True,
        "smoke": False, "space": {"epochs": 1, "batch_size": 8},
    }  # fmt: skip
    (project / "exp.yaml").write_text(yaml.safe_dump(experiment))
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    monkeypatch.setenv("RAY_USAGE_STATS_ENABLED", "0")
    assert main(["tune", "../project/exp.yaml", "--backend", "ray", "--cpus-per-trial", "1"]) == 0
    results = json.loads((project / "runs" / "rel" / "results.json").read_text())
    assert [t["state"] for t in results["trials"]] == ["complete", "complete"]
    assert not (elsewhere / "runs").exists()
