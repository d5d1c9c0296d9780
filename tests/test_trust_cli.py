"""What the command line and the report show a user: a report of a study whose first trial is
still running, messages printed as text (not Rich markup), clear dashboard port errors, a most
important knob named only when the trials can tell, and a `tune --help` that lists everything."""

from __future__ import annotations

import argparse
import io
import json
import socket
import sys
import types

import optuna
import pandas as pd
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution
from rich.console import Console

from hypertweaks.cli import (
    build_parser,
    main,
    plain_console,
    print_result,
    run_dashboard,
    run_predict,
    user_error,
)
from hypertweaks.config import ConfigError, Experiment
from hypertweaks.display import LiveDisplay
from hypertweaks.report import load_importances, reading, render
from hypertweaks.search import Result

RECIPE = {
    "learning_rate": 1e-3,
    "batch_size": 8,
    "epochs": 2,
    "dropout": 0.1,
    "weight_decay": 0.01,
    "schedule": "linear",
    "warmup_ratio": 0.0,
    "freeze_layers": 0,
    "gradual_unfreeze": False,
}


def flat(text: str) -> str:
    return " ".join(text.split())


def console() -> Console:
    return plain_console(file=io.StringIO(), width=300, color_system=None)


def printed(shown: Console) -> str:
    return shown.file.getvalue()


def make_study(tmp_path, name: str = "s") -> tuple[optuna.Study, object]:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    run_dir = tmp_path / "runs" / name
    run_dir.mkdir(parents=True)
    study = optuna.create_study(
        study_name=name, storage=f"sqlite:///{run_dir / 'study.db'}", direction="maximize"
    )
    return study, run_dir


# 3: a report while the first trial runs, after Ctrl-C in it, and from a partial results.json


def test_report_of_a_study_whose_first_trial_is_still_running(tmp_path):
    study, run_dir = make_study(tmp_path)
    trial = study.ask()
    trial.set_user_attr("recipe", RECIPE)
    trial.set_user_attr("tag", "defaults")
    page = render(run_dir).read_text()
    assert "no trial finished yet" in page.lower()
    assert "no trial finished yet" in render(run_dir).read_text().lower()  # and again
    assert not (run_dir / "results.json").exists()  # no partial file left to outlive the trial


def test_report_of_a_study_whose_first_trial_was_interrupted(tmp_path):
    study, run_dir = make_study(tmp_path)
    trial = study.ask()
    trial.set_user_attr("recipe", RECIPE)
    trial.set_user_attr("interrupted", True)
    study.tell(trial, state=optuna.trial.TrialState.FAIL)
    page = render(run_dir).read_text()
    assert "no trial finished yet" in page.lower()
    assert "interrupted (trial 0); run the same tune command to resume it" in page


def test_report_copes_with_a_results_json_missing_keys(tmp_path):
    study, run_dir = make_study(tmp_path)
    row = {
        "number": 0,
        "state": "complete",
        "tag": "defaults",
        "value": 0.8,
        "recipe": RECIPE,
        "curve": [{"epoch": 1, "accuracy": 0.8, "loss": 0.5, "train_loss": 0.6}],
        "best_epoch": 1,
        "examples": 40,
    }
    (run_dir / "results.json").write_text(json.dumps({"study": "s", "trials": [row]}))
    page = render(run_dir).read_text()
    assert "<td>validation value</td><td>0.8</td>" in page  # the defaults trial it holds


# 4: user text printed as text, not Rich markup


def test_an_error_naming_a_path_with_brackets_is_printed_whole():
    shown = console()
    assert user_error(shown, ConfigError("cannot read /data/[/x]/[spam].csv")) == 2
    assert "error: cannot read /data/[/x]/[spam].csv" in printed(shown)
    hint = "the storage needs psycopg2: pip install 'hypertweaks[postgres]'"
    user_error(shown, ConfigError(hint))
    assert hint in printed(shown)


def test_predicted_labels_in_brackets_are_printed(monkeypatch, tmp_path):
    import hypertweaks.predict as predict

    table = pd.DataFrame({"text": ["a", "b", "c"], "predicted_label": ["[spam]", "[spam]", "ok"]})
    info = types.SimpleNamespace(task="text-classification")
    predictor = types.SimpleNamespace(notes=["column [text] used"])
    monkeypatch.setattr(predict, "describe", lambda model: info)
    monkeypatch.setattr(
        predict, "predict_file", lambda *a, **k: (tmp_path / "[out].csv", table, predictor)
    )
    args = argparse.Namespace(
        model="m",
        input="in.csv",
        output=None,
        image_column=None,
        text_column=None,
        top_k=None,
        threshold=None,
        batch_size=None,
        skip_bad=False,
        device="cpu",
        quiet=True,
        max_new_tokens=1,
        temperature=0.0,
        top_p=1.0,
        top_k_tokens=0,
        seed=0,
    )
    shown = console()
    assert run_predict(args, shown) == 0
    out = printed(shown)
    assert "3 predicted: [spam] 2, ok 1" in out
    assert "note: column [text] used" in out and "[out].csv" in out


def test_the_dashboard_install_hint_keeps_its_extra(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "optuna_dashboard", None)  # not installed
    shown = console()
    args = argparse.Namespace(run_dir=str(tmp_path), storage=None, host="127.0.0.1", port=8080)
    assert run_dashboard(args, shown) == 2
    assert "pip install 'hypertweaks[dashboard]'" in printed(shown)


def test_the_live_display_shows_recipes_tags_and_messages_as_text():
    shown = console()
    display = LiveDisplay("accuracy", console=shown)
    recipe = {"schedule": "[spam]", "learning_rate": 1e-3}
    display.message("cache in /tmp/[/x] and [bold]")
    display.trial_started(0, recipe, "[tag]")
    probe = console()
    probe.print(display._render())
    assert "sched=[spam]" in printed(probe) and "([tag])" in printed(probe)
    display.trial_finished({"number": 0, "state": "complete", "value": 0.5, "recipe": recipe})
    probe = console()
    probe.print(display._render())
    assert "sched=[spam]" in printed(probe)
    assert "cache in /tmp/[/x] and [bold]" in printed(shown)


def test_the_best_recipe_table_shows_values_in_brackets(tmp_path):
    shown = console()
    result = Result(
        best_params={"schedule": "[spam]"},
        best_value=0.9,
        metric="accuracy",
        best_model_dir=tmp_path / "[best]",
        test_metrics=None,
        results_path=tmp_path / "results.json",
    )
    print_result(result, shown)
    out = printed(shown)
    assert "[spam]" in out and "[best]" in out


# 6: the dashboard's port


def test_a_dashboard_port_out_of_range_is_a_clear_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stop:
        main(["dashboard", str(tmp_path), "--port", "70000"])
    assert stop.value.code == 2
    err = flat(capsys.readouterr().err)
    assert "1-65535" in err and "--port" in err and "Traceback" not in err


def fake_dashboard(monkeypatch, run_server) -> None:
    module = types.ModuleType("optuna_dashboard")
    module.run_server = run_server
    monkeypatch.setitem(sys.modules, "optuna_dashboard", module)


def test_a_dashboard_port_in_use_is_a_clear_error(tmp_path, monkeypatch, capsys):
    _, run_dir = make_study(tmp_path)
    started = []
    fake_dashboard(monkeypatch, lambda *a, **k: started.append(k))
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert main(["dashboard", str(run_dir), "--port", str(port)]) == 2
    out = flat(capsys.readouterr().out)
    assert f"port {port}" in out and "in use" in out and "--port" in out
    assert not started  # checked before the server starts


def test_a_dashboard_server_that_cannot_bind_is_a_clear_error(tmp_path, monkeypatch, capsys):
    _, run_dir = make_study(tmp_path)

    def run_server(*args, **kwargs):
        raise OSError(98, "Address already in use")

    fake_dashboard(monkeypatch, run_server)
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    assert main(["dashboard", str(run_dir), "--port", str(port)]) == 2
    out = flat(capsys.readouterr().out)
    assert "Address already in use" in out and "--port" in out


# 12: the knob that mattered most


def importance_study(tmp_path, rates: list[float], batches: list[int]):
    study, run_dir = make_study(tmp_path)
    distributions = {
        "learning_rate": FloatDistribution(1e-5, 1e-2, log=True),
        "batch_size": CategoricalDistribution([8, 16, 32]),
    }
    rows = []
    for number, (rate, batch) in enumerate(zip(rates, batches, strict=True)):
        value = 0.5 + number * 0.07
        params = {"learning_rate": rate, "batch_size": batch}
        study.add_trial(
            optuna.trial.create_trial(params=params, distributions=distributions, value=value)
        )
        rows.append(
            {
                "number": number,
                "state": "complete",
                "value": value,
                "recipe": {**RECIPE, **params},
                "curve": [],
                "best_epoch": 1,
            }
        )
    results = {"study": "s", "metric": "accuracy", "direction": "maximize", "trials": rows}
    return run_dir, results


def test_no_knob_is_named_from_two_trials_in_which_it_had_the_same_value(tmp_path):
    run_dir, results = importance_study(tmp_path, [1e-3, 1e-3], [8, 16])
    importances = load_importances(run_dir, results)
    assert importances == {}
    lines = " ".join(reading(results, importances))
    assert "mattered most was" not in lines
    assert "at least 4 completed trials" in lines


def test_only_a_knob_that_varied_can_be_the_one_that_mattered_most(tmp_path):
    rates = [1e-4, 3e-4, 1e-3, 3e-3, 5e-3]
    run_dir, results = importance_study(tmp_path, rates, [16] * len(rates))
    importances = load_importances(run_dir, results)
    assert list(importances) == ["learning_rate"]
    assert "The knob that mattered most was learning_rate" in " ".join(
        reading(results, importances)
    )


# 15: tune --help and dashboard --help


def help_text(monkeypatch, capsys, *command: str) -> str:
    monkeypatch.setenv("COLUMNS", "400")  # argparse wraps at hyphens too
    with pytest.raises(SystemExit):
        main([*command, "--help"])
    return capsys.readouterr().out


def tune_dests() -> set[str]:
    commands = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    return {a.dest for a in commands.choices["tune"]._actions}


def test_tune_help_describes_examples_defaults_and_fresh(monkeypatch, capsys):
    out = help_text(monkeypatch, capsys, "tune")
    assert "hypertweaks tune experiment.yaml" in out
    assert (
        "hypertweaks tune --task text-classification --model "
        "sentence-transformers/all-MiniLM-L6-v2 --train data.csv" in out
    )
    fields = Experiment.model_fields
    for flag, dest in (("--trials", "trials"), ("--patience", "patience"), ("--seed", "seed")):
        line = next(line for line in out.splitlines() if line.strip().startswith(flag))
        assert f"default: {fields[dest].default}" in line, line
    line = next(line for line in out.splitlines() if line.strip().startswith("--runs-dir"))
    assert f"default: {fields['runs_dir'].default}" in line
    assert (
        "DELETES the study of this name (its trials, best model and results) and starts afresh"
        in flat(out)
    )


def test_every_experiment_field_is_a_flag_or_listed_as_yaml_only(monkeypatch, capsys):
    out = help_text(monkeypatch, capsys, "tune")
    epilog = out[out.index("only in the YAML file") :]
    dests = tune_dests()
    yaml_only = [name for name in Experiment.model_fields if name not in dests]
    assert "space" in yaml_only and "heartbeat_seconds" in yaml_only
    listed = {line.split()[0] for line in epilog.splitlines() if line.startswith("  ")}
    assert listed == set(yaml_only)  # every field without a flag, and only those


def test_dashboard_port_help_gives_its_default(monkeypatch, capsys):
    out = help_text(monkeypatch, capsys, "dashboard")
    line = next(line for line in out.splitlines() if line.strip().startswith("--port"))
    assert "default 8080" in line or "default: 8080" in line


def test_the_command_line_prints_brackets_as_written(capsys, tmp_path):
    # main's own console: a path with Rich closing-tag syntax neither crashes nor vanishes
    missing = tmp_path / "[/x]" / "[spam]"
    assert main(["predict", str(missing), str(tmp_path / "in.csv")]) == 2
    out = " ".join(capsys.readouterr().out.split())
    assert "[/x]" in out and "[spam]" in out and "Traceback" not in out


def test_an_error_naming_a_long_path_prints_it_whole(capsys, tmp_path):
    # a log file of the command keeps the path on one line, ready to copy
    missing = tmp_path / ("nested-" * 20) / "model"
    assert main(["predict", str(missing), str(tmp_path / "in.csv")]) == 2
    assert str(missing) in capsys.readouterr().out
