import json
import re
import shutil
import subprocess

import pytest

from hypertweaks import tune
from hypertweaks.report import render


@pytest.fixture(scope="module")
def study(tiny_bert, tmp_path_factory):
    """A real small study on the tiny BERT, with its report written by tune."""
    import sys

    sys.path.insert(0, str(__import__("pathlib").Path(__file__).parent))
    from conftest import make_texts

    root = tmp_path_factory.mktemp("report")
    for role, n, seed in (("train", 40, 0), ("validation", 10, 1), ("test", 10, 2)):
        make_texts(n, seed).to_csv(root / f"{role}.csv", index=False)
    result = tune(
        {
            "model": str(tiny_bert),
            "train": str(root / "train.csv"),
            "validation": str(root / "validation.csv"),
            "test": str(root / "test.csv"),
            "name": "report",
            "runs_dir": str(root / "runs"),
            "trials": 5,
            "max_length": 16,
            "quiet": True,
            "space": {
                "epochs": {"low": 2, "high": 4},
                "batch_size": [8, 16],
                "learning_rate": {"low": 1e-4, "high": 3e-3, "log": True},
            },
        }
    )
    return result, json.loads(result.results_path.read_text())


def test_tune_writes_the_report(study):
    result, _ = study
    assert result.report_path == result.results_path.parent / "report.html"
    assert result.report_path.read_text().startswith("<!doctype html>")


def test_report_numbers_match_results_json(study):
    result, results = study
    page = render(result.results_path.parent).read_text()
    best = next(t for t in results["trials"] if t["number"] == results["best_trial"])
    assert f"best (trial {results['best_trial']})" in page
    assert "<td>validation accuracy</td>" in page
    assert f"{best['value']:.4g}" in page
    for name, value in results["test_metrics"].items():
        assert f"<td>test {name}</td>" in page and f"{value:.4g}" in page
    used = results["budget"]["used_trials"]
    assert f"{used} of 5 trials" in page
    assert page.count("<svg") >= 3  # history, slices, learning curves (+ importances)
    assert "<script" not in page  # self-contained and static: nothing to fail offline


def test_report_reading_is_derived_from_the_numbers(study):
    result, results = study
    page = result.report_path.read_text()
    ranked = sorted(
        (t for t in results["trials"] if t["value"] is not None),
        key=lambda t: t["value"],
        reverse=True,
    )[:3]
    freezes = sorted(t["recipe"]["freeze_layers"] for t in ranked)
    assert f"froze {freezes[0]} to {freezes[-1]} layers" in page
    pruned = sum(t["state"] == "pruned" for t in results["trials"])
    if pruned:
        assert f"{pruned} of {len(results['trials'])} trials were pruned" in page


def test_report_of_a_folder_without_results():
    with pytest.raises(FileNotFoundError, match=r"holds no study \(no results.json, no study.db\)"):
        render("/nonexistent/study")


def chromium() -> str | None:
    return shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.mark.skipif(chromium() is None, reason="needs Debian's chromium (.ci/run installs it)")
def test_report_renders_in_headless_chromium_without_errors(study, tmp_path):
    result, _ = study
    shot = tmp_path / "report.png"
    flags = [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-first-run",
        f"--user-data-dir={tmp_path / 'profile'}",
        "--enable-logging=stderr",
        "--v=0",
    ]
    done = subprocess.run(
        [
            chromium(),
            *flags,
            "--window-size=1200,4000",
            f"--screenshot={shot}",
            result.report_path.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert shot.exists() and shot.stat().st_size > 10_000
    assert not re.search(r"Uncaught|CONSOLE\(\d+\)", done.stderr), done.stderr[-2000:]
    dom = subprocess.run(
        [chromium(), *flags, "--dump-dom", result.report_path.as_uri()],
        capture_output=True,
        text=True,
        timeout=120,
    ).stdout
    assert dom.count("<svg") >= 3


def test_dashboard_serves_the_study_on_localhost(tmp_path):
    pytest.importorskip("optuna_dashboard")
    import os
    import socket
    import sys
    import time
    import urllib.request

    import optuna

    run_dir = tmp_path / "runs" / "dash"
    run_dir.mkdir(parents=True)
    study = optuna.create_study(study_name="dash", storage=f"sqlite:///{run_dir / 'study.db'}")
    study.add_trial(optuna.trial.create_trial(value=0.5))
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    server = subprocess.Popen(
        [sys.executable, "-m", "hypertweaks.cli", "dashboard", str(run_dir), "--port", str(port)],
        env={**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        deadline, body = time.monotonic() + 60, ""
        while time.monotonic() < deadline and "dash" not in body:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/api/studies") as answer:
                    body = answer.read().decode()
            except OSError:
                time.sleep(0.5)
        assert '"study_name": "dash"' in body or '"study_name":"dash"' in body
    finally:
        server.terminate()
        server.wait(timeout=30)


def test_reading_copes_with_a_trial_killed_before_its_recipe_was_recorded():
    from hypertweaks.report import reading

    killed = {
        "number": 1,
        "state": "fail",
        "value": None,
        "recipe": {},
        "curve": [],
        "error": None,
        "interrupted": False,
        "metric": "accuracy",
    }
    results = {"metric": "accuracy", "direction": "maximize", "trials": [killed]}
    assert reading(results, {}) == ["1 trials failed: interrupted or killed."]


def test_a_pruned_trial_is_scored_by_its_best_epoch_in_the_metric_direction():
    from hypertweaks.report import _score

    pruned = {"value": None, "curve": [{"loss": 0.9}, {"loss": 0.4}, {"loss": 0.6}]}
    assert _score(pruned, "loss", "minimize") == 0.4
    pruned = {"value": None, "curve": [{"accuracy": 0.5}, {"accuracy": 0.7}, {"accuracy": 0.6}]}
    assert _score(pruned, "accuracy", "maximize") == 0.7


def test_a_loss_study_reports_its_lowest_loss_as_best(text_experiment):
    result = tune({**text_experiment, "metric": "loss", "trials": 3, "smoke": False})
    results = json.loads(result.results_path.read_text())
    values = {t["number"]: t["value"] for t in results["trials"] if t["value"] is not None}
    assert results["best_trial"] == min(values, key=values.get)
    page = render(result.results_path.parent).read_text()
    assert f"best (trial {results['best_trial']})" in page


def test_results_name_the_trials_within_validation_noise_of_the_best(study):
    result, results = study
    noise = results["within_noise"]
    assert results["best_trial"] in noise["trials"] and noise["validation_examples"] == 30
    assert result.within_noise == noise
    page = render(result.results_path.parent).read_text()
    if len(noise["trials"]) > 1:
        assert "within validation noise of the best" in page


def test_a_study_says_what_its_budget_bought(study):
    result, results = study
    ledger = results["budget_bought"]
    assert ledger == result.budget_bought and ledger["kept"][-1]["trial"] == results["best_trial"]
    page = render(result.results_path.parent).read_text()
    assert "What the budget bought" in page
