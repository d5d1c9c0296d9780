"""Where a study's files go, and which study is the same one: best.yaml tuned again lands beside
its study (never inside its best/ model), an in-memory SQLite URL is refused, a SQLite file's
missing folder is created, and the Python API resumes a study the command line started."""

from __future__ import annotations

import json
from pathlib import Path

import optuna
import pytest
import yaml
from conftest import patch_fit

from hypertweaks import tune
from hypertweaks.cli import main
from hypertweaks.config import ConfigError, load_experiment, make_experiment
from hypertweaks.fingerprint import experiment_fingerprint
from hypertweaks.study import open_study


def quick(text_experiment: dict, **changes) -> dict:
    """One short trial, no smoke run."""
    space = {"epochs": 1, "batch_size": 8, "learning_rate": 1e-3}
    return {**text_experiment, "trials": 1, "smoke": False, "space": space, **changes}


def no_training(monkeypatch) -> None:
    def boom(*args, **kwargs):
        raise AssertionError("training started before the input was checked")

    patch_fit(monkeypatch, boom)


def test_best_yaml_tuned_again_lands_beside_its_study_not_inside_best(
    text_experiment, tmp_path, monkeypatch
):
    # the README: `hypertweaks tune runs/NAME/best/best.yaml`, with the default runs folder
    monkeypatch.chdir(tmp_path)
    exp = quick(text_experiment, test=None)
    del exp["runs_dir"]
    tune(exp)
    best = tmp_path / "runs" / "tiny" / "best"
    before = sorted(p.name for p in best.iterdir())

    refit = load_experiment(best / "best.yaml")
    assert refit.run_dir == tmp_path / "runs" / "tiny-refit"
    assert main(["tune", str(best / "best.yaml"), "--quiet"]) == 0
    assert (tmp_path / "runs" / "tiny-refit" / "best" / "best.yaml").is_file()
    assert sorted(p.name for p in best.iterdir()) == before  # nothing written inside best/


def old_study(root: Path) -> Path:
    """A study folder as older versions left it: best -> checkpoints/trial-0, whose best.yaml
    names the default (relative) runs folder. Returns best.yaml's path through the link."""
    run_dir = root / "runs" / "old"
    model = run_dir / "checkpoints" / "trial-0"
    model.mkdir(parents=True)
    (run_dir / "study.db").write_bytes(b"")
    (run_dir / "best").symlink_to(Path("checkpoints") / "trial-0")
    (model / "trial.json").write_text(json.dumps({"trial": 0, "value": 0.5, "tag": ""}))
    return model


def test_a_study_inside_another_studys_best_model_is_refused(
    text_experiment, tmp_path, monkeypatch
):
    no_training(monkeypatch)
    model = old_study(tmp_path)
    recipe = {**quick(text_experiment), "name": "old-refit", "runs_dir": "runs"}
    (model / "best.yaml").write_text(yaml.safe_dump(recipe))
    best_yaml = tmp_path / "runs" / "old" / "best" / "best.yaml"
    with pytest.raises(ConfigError, match=r"inside .*best.* --runs-dir") as error:
        tune(load_experiment(best_yaml))
    assert len(str(error.value).splitlines()) == 1
    assert sorted(p.name for p in model.iterdir()) == ["best.yaml", "trial.json"]

    # an explicit runs folder in another study's checkpoints (or its best/ itself) too
    for runs_dir in (tmp_path / "runs" / "old" / "checkpoints", tmp_path / "runs" / "old"):
        name = "x" if runs_dir.name == "checkpoints" else "best"
        with pytest.raises(ConfigError, match="inside"):
            tune({**quick(text_experiment), "runs_dir": str(runs_dir), "name": name})
    assert not (tmp_path / "runs" / "old" / "checkpoints" / "x").exists()


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_storage_is_refused(text_experiment, monkeypatch, url):
    no_training(monkeypatch)
    with pytest.raises(ConfigError, match=r"in memory.*sqlite:///runs/tiny/study\.db.*--storage"):
        tune(quick(text_experiment, storage=url))


def test_a_sqlite_file_in_a_missing_folder_is_created(text_experiment, tmp_path):
    database = tmp_path / "studies" / "2026" / "tiny.db"
    tune(quick(text_experiment, storage=f"sqlite:///{database}"))
    study = optuna.load_study(study_name="tiny", storage=f"sqlite:///{database}")
    assert [t.state.name for t in study.trials] == ["COMPLETE"]


def test_a_sqlite_folder_that_cannot_be_made_is_named(text_experiment, tmp_path, monkeypatch):
    no_training(monkeypatch)
    (tmp_path / "file").write_text("not a folder")
    database = tmp_path / "file" / "sub" / "tiny.db"
    with pytest.raises(ConfigError, match=r"folder .*file.* (is a file|cannot be created)"):
        tune(quick(text_experiment, storage=f"sqlite:///{database}"))


def test_the_python_api_resumes_a_study_the_cli_started(text_experiment, tmp_path, monkeypatch):
    # the same model folder, absolute on the command line, relative in Python
    monkeypatch.chdir(tmp_path)
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny").symlink_to(Path(text_experiment["model"]))
    exp = quick(text_experiment, model="models/tiny", test=None)
    (tmp_path / "exp.yaml").write_text(
        yaml.safe_dump({k: v for k, v in exp.items() if k != "model"})
    )
    assert main(["tune", "exp.yaml", "--model", "models/tiny"]) == 0
    result = tune({**exp, "trials": 2})
    assert result.trials == 2


def test_a_refused_study_says_how_to_go_on_from_python_too(text_experiment, tmp_path):
    exp = make_experiment(quick(text_experiment))
    exp.run_dir.mkdir(parents=True)
    study, _ = open_study(exp, 1)
    study.add_trial(optuna.trial.create_trial(value=0.5))
    changed = make_experiment(quick(text_experiment, seed=1))
    with pytest.raises(ConfigError, match=r"--name \(name=.*\).*--fresh.*fresh=True"):
        open_study(changed, 1)


def test_a_study_fingerprinted_with_a_relative_model_path_still_resumes(
    text_experiment, tmp_path, monkeypatch
):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tiny").symlink_to(Path(text_experiment["model"]))
    relative = make_experiment(quick(text_experiment, model="tiny"))
    absolute = make_experiment(quick(text_experiment, model=str(tmp_path / "tiny")))
    assert experiment_fingerprint(relative) == experiment_fingerprint(absolute)
    hub = make_experiment(quick(text_experiment, model="prajjwal1/bert-tiny"))
    assert experiment_fingerprint(hub)["model"] == "prajjwal1/bert-tiny"

    relative.run_dir.mkdir(parents=True)
    study, _ = open_study(relative, 1)
    old = {**experiment_fingerprint(relative), "model": "tiny"}  # as older versions stored it
    study.set_user_attr("experiment_fingerprint", old)
    study.add_trial(optuna.trial.create_trial(value=0.5))
    resumed, created = open_study(absolute, 1)
    assert not created and len(resumed.trials) == 1
