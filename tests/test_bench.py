"""The benchmark harness without training: data cuts, budgets, cells and skipping, the anytime
curve, and the report. (The methods themselves run in `python -m bench quick`.)"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pandas as pd
import pytest
import torch

pytest.importorskip("matplotlib")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # bench/ lives beside src/

from bench import methods, run, tasks  # noqa: E402
from bench.report import report  # noqa: E402
from bench.tasks import Cut  # noqa: E402


def _table(n: int, classes: list[str], prefix: str) -> pd.DataFrame:
    return pd.DataFrame(
        {
            "text": [f"{prefix} text {i}" for i in range(n)],
            "label": [classes[i % 3] for i in range(n)],
        }
    )


def test_stratified_sample_keeps_proportions_and_every_class():
    labels = pd.Series(["a"] * 80 + ["b"] * 15 + ["c"] * 5)
    picked = tasks.stratified_sample(labels, 20, seed=0)
    counts = labels.iloc[picked].value_counts().to_dict()
    assert len(picked) == 20 and len(set(picked)) == 20
    assert counts == {"a": 16, "b": 3, "c": 1}
    assert list(tasks.stratified_sample(labels, 500, seed=0)) == list(range(100))
    # fewer rows than classes: no crash, exactly the size asked
    assert len(tasks.stratified_sample(labels, 2, seed=0)) == 2


def test_cut_carves_validation_from_train_without_overlap(tmp_path, monkeypatch):
    monkeypatch.setattr(tasks, "WORK_DIR", tmp_path / "work")
    source = tmp_path / "data" / "trec6"
    source.mkdir(parents=True)
    _table(300, ["x", "y", "z"], "train").to_csv(source / "train.csv", index=False)
    _table(90, ["x", "y", "z"], "test").to_csv(source / "test.csv", index=False)
    cut = Cut(train=60, validation=30, test=40, max_length=32)
    folder = tasks.make_cut("trec6", cut, data_root=tmp_path / "data")
    train, val, test = (pd.read_csv(folder / f"{n}.csv") for n in ("train", "validation", "test"))
    assert (len(train), len(val), len(test)) == (60, 30, 40)
    assert not set(train["text"]) & set(val["text"])
    assert set(train["label"]) == set(val["label"]) == {"x", "y", "z"}
    info = json.loads((folder / "cut.json").read_text())
    assert info["validation_carved_from_train"]
    # the same cut twice is the same rows
    again = pd.read_csv(tasks.make_cut("trec6", cut, data_root=tmp_path / "data") / "train.csv")
    assert again.equals(train)


def test_anytime_curve_counts_all_cost_but_only_completed_scores():
    trials = [
        {"state": "pruned", "value": None, "examples": 100},
        {"state": "complete", "value": 0.5, "examples": 300},
        {"state": "fail", "value": None, "examples": 50},
        {"state": "complete", "value": 0.4, "examples": 300},
        {"state": "complete", "value": 0.7, "examples": 300},
    ]
    assert methods.anytime_curve(trials) == [[400, 0.5], [450, 0.5], [750, 0.5], [1050, 0.7]]


def test_budget_parsing():
    assert run.parse_budget("4x") == 4.0
    assert run.budget_name(run.parse_budget("1.5X")) == "1.5x"
    with pytest.raises(SystemExit):
        run.parse_budget("0x")


class _Splits:
    def __init__(self):
        self.train, self.validation, self.test, self.classes = [0] * 10, [0] * 4, [0] * 5, [0, 1]


class _Text:
    splits = _Splits()


def test_cells_run_once_with_budget_from_defaults_and_report(tmp_path, monkeypatch):
    calls = []

    def fake_context(task, cut, seed, device="auto"):
        return methods.Context(task, cut, seed, torch.device("cpu"), _Text(), {}, {})

    def fake(name, score):
        def method(ctx, budget_seconds):
            calls.append((name, ctx.task, ctx.seed, budget_seconds))
            trials = [
                {
                    "state": "complete",
                    "value": score,
                    "examples": 100,
                    "seconds": 2.0,
                    "train_seconds": 1.5,
                }
            ]
            return {
                "chosen_recipe": {"learning_rate": 1e-4},
                "val_score": score,
                "test_metrics": {"accuracy": score, "macro_f1": score - 0.1, "loss": 1.0},
                "examples": 100,
                "seconds": 10.0 if name == "defaults" else budget_seconds,
                "search_seconds": 10.0,
                "curve": methods.anytime_curve(trials),
                "trials": trials,
            }

        return method

    monkeypatch.setattr(methods, "make_context", fake_context)
    monkeypatch.setattr(
        methods, "METHODS", {"defaults": fake("defaults", 0.5), "random": fake("random", 0.6)}
    )
    cut = Cut(10, 4, 5, 16)
    cells = tmp_path / "cells"
    failures = run.run(["sst2"], ["defaults", "random"], [2.0], [0, 1], cut, cells_dir=cells)
    assert failures == 0
    assert sorted(c[:3] for c in calls) == [
        ("defaults", "sst2", 0),
        ("defaults", "sst2", 1),
        ("random", "sst2", 0),
        ("random", "sst2", 1),
    ]
    assert all(c[3] == 20.0 for c in calls if c[0] == "random")  # 2 x the defaults' 10 s
    files = sorted(p.name for p in (cells / cut.key).glob("*.json"))
    assert files == [
        "sst2__defaults__s0.json",
        "sst2__defaults__s1.json",
        "sst2__random__2x__s0.json",
        "sst2__random__2x__s1.json",
    ]
    cell = json.loads((cells / cut.key / "sst2__random__2x__s0.json").read_text())
    assert cell["budget_seconds"] == 20.0 and cell["machine"]["torch"] == torch.__version__

    calls.clear()
    run.run(["sst2"], ["defaults", "random"], [2.0], [0, 1], cut, cells_dir=cells)
    assert calls == []  # everything present: nothing runs again

    # a budget unit timed on another machine is not used here: its seconds mean another budget
    unit_path = cells / cut.key / "sst2__defaults__s0.json"
    unit = json.loads(unit_path.read_text())
    unit["machine"]["device_name"] = "a faster CPU"
    unit_path.write_text(json.dumps(unit))
    assert run.run(["sst2"], ["defaults", "random"], [4.0], [0], cut, cells_dir=cells) == 1
    assert calls == [] and not (cells / cut.key / "sst2__random__4x__s0.json").exists()

    out = report(results_dir=tmp_path)
    text = out.read_text()
    assert "| sst2 | random | 2 | 60.0 ± 0.0 |" in text
    assert "| sst2 | defaults | 2 | 50.0 ± 0.0 |" in text and "0.167" in text  # regret
    assert "- sst2 seed 0: defaults on a faster CPU;" in text  # flagged: not comparable
    assert "sst2 seed 1:" not in text
    assert (tmp_path / f"anytime_{cut.key}_2x.png").stat().st_size > 1000


def test_a_failing_method_is_reported_and_leaves_no_cell(tmp_path, monkeypatch):
    def broken(ctx, budget_seconds):
        raise RuntimeError("boom")

    monkeypatch.setattr(
        methods,
        "make_context",
        lambda task, cut, seed, device="auto": methods.Context(
            task, cut, seed, torch.device("cpu"), _Text(), {}, {}
        ),
    )
    monkeypatch.setattr(methods, "METHODS", {"defaults": broken, "random": broken})
    cut = Cut(10, 4, 5, 16)
    assert run.run(["sst2"], ["random"], [2.0], [0], cut, cells_dir=tmp_path) == 1
    assert not list((tmp_path / cut.key).glob("*.json"))
    assert "boom" in (tmp_path / cut.key / "sst2__defaults__s0.error.txt").read_text()
