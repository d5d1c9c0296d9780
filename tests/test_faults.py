"""Each fault is caused for real; each test checks that nothing finished is lost."""

import json
import signal
import time

import optuna
import pytest
import torch
import yaml
from conftest import FAST_RECIPE, patch_fit
from faults import Postgres, load_trials, start_worker, trial_running, wait_until

import hypertweaks.trial
from hypertweaks import tune
from hypertweaks.checkpoints import BestCheckpoint
from hypertweaks.space import Recipe
from hypertweaks.study import counted, redact
from hypertweaks.train import fit

FAIL = optuna.trial.TrialState.FAIL


@pytest.fixture
def slow_experiment(text_experiment, tmp_path):
    """Trials of several seconds, so that a worker can be hit in the middle of one."""
    exp = {
        **text_experiment,
        "name": "faults",
        "trials": 3,
        "heartbeat_seconds": 1,
        "pruner": "none",
        "patience": 100,
        # freezing fixed: no head-only candidate, whose trial takes no time to hit
        "space": {"epochs": 12, "batch_size": 8, "learning_rate": 1e-4, "freeze_layers": 0},
    }
    path = tmp_path / "faults.yaml"
    path.write_text(yaml.safe_dump(exp))
    storage = f"sqlite:///{tmp_path}/runs/faults/study.db"
    return exp, path, storage


@pytest.fixture
def workers():
    """Starts worker processes; a failing test must not leave them running."""
    started = []

    def start(*args):
        started.append(start_worker(*args))
        return started[-1]

    yield start
    for worker in started:
        if worker.poll() is None:
            worker.kill()
            worker.wait()


def snapshot(trials, numbers):
    return {n: (trials[n].params, trials[n].value, trials[n].state) for n in numbers}


def test_a_killed_worker_s_trial_is_retried_and_nothing_finished_is_lost(slow_experiment, workers):
    exp, path, storage = slow_experiment
    worker = workers(path)
    wait_until(lambda: trial_running(storage, "faults", 1, worker), what="trial 1 to run")
    worker.kill()  # SIGKILL mid-trial: no chance to clean up
    worker.wait()
    time.sleep(2 * exp["heartbeat_seconds"] + 1)  # its heartbeat goes stale
    before = snapshot(load_trials(storage, "faults"), [0])
    best_before = json.loads((exp_dir(exp) / "best" / "trial.json").read_text())

    result = tune({**exp, "space": exp["space"]})  # the same command, run again
    trials = load_trials(storage, "faults")
    assert snapshot(trials, [0]) == before
    assert trials[1].state == FAIL  # stale heartbeat -> failed ...
    retries = [t for t in trials if t.system_attrs.get("failed_trial") == 1]
    assert len(retries) == 1 and retries[0].params == trials[1].params  # ... and retried once
    assert sum(map(counted, trials)) == 3 == result.trials
    assert best_before["trial"] == 0


def exp_dir(exp):
    from pathlib import Path

    return Path(exp["runs_dir"]) / exp["name"]


def test_ctrl_c_stops_the_trial_saves_the_study_and_the_same_command_resumes(
    slow_experiment, workers
):
    exp, path, storage = slow_experiment
    worker = workers(path)
    wait_until(lambda: trial_running(storage, "faults", 1, worker), what="trial 1 to run")
    worker.send_signal(signal.SIGINT)
    output, _ = worker.communicate(timeout=120)
    assert worker.returncode == 130 and "run the same command to resume" in output, output
    trials = load_trials(storage, "faults")
    assert trials[1].state == FAIL and trials[1].user_attrs["interrupted"]
    before = snapshot(trials, [0])
    assert (exp_dir(exp) / "best" / "config.json").exists()

    resumed = workers(path)
    output, _ = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, output
    trials = load_trials(storage, "faults")
    assert snapshot(trials, [0]) == before
    assert sum(map(counted, trials)) == 3
    assert any(t.user_attrs.get("retry_of") == 1 for t in trials)


FAST = Recipe(**{**FAST_RECIPE.as_dict(), "epochs": 2})


def test_out_of_memory_shrinks_the_micro_batch_and_keeps_the_effective_batch(task):
    task.experiment.precision = "float32"  # bfloat16 would round the two sums apart

    class OutOfMemoryAbove(type(task)):
        def forward(self, model, inputs):
            if model.training and len(inputs["input_ids"]) > 3:
                raise torch.OutOfMemoryError("CUDA out of memory (injected)")
            return super().forward(model, inputs)

    oom_task = object.__new__(OutOfMemoryAbove)
    oom_task.__dict__.update(task.__dict__)
    results = {}
    for name, runner in (("plain", task), ("oom", oom_task)):
        torch.manual_seed(0)
        model, layers = task.build(FAST)
        results[name] = (
            model,
            fit(
                runner,
                model,
                layers,
                FAST,
                task.dataset(task.splits.train, True),
                task.dataset(task.splits.validation, False),
                seed=0,
            ),
        )
    (plain_model, plain), (oom_model, oom) = results["plain"], results["oom"]
    assert oom.micro_batch == 2 and plain.micro_batch is None
    assert oom.examples == plain.examples  # same batches, same optimizer steps
    for a, b in zip(plain_model.parameters(), oom_model.parameters(), strict=True):
        assert torch.allclose(a, b, atol=1e-4)
    # timing a larger model's steps (larger_models) shrinks its micro-batch the same way
    from hypertweaks.train import seconds_per_example

    model, layers = task.build(FAST)
    train = task.dataset(task.splits.train, True)
    assert 0 < seconds_per_example(oom_task, model, layers, FAST, train, "cpu") < 60


def test_a_trial_out_of_memory_even_at_one_example_fails_alone(text_experiment, monkeypatch):
    real_fit, calls = hypertweaks.trial.fit, []

    def oom_on_trial_1(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:  # smoke, trial 0, trial 1
            raise torch.OutOfMemoryError("CUDA out of memory (injected)")
        return real_fit(*args, **kwargs)

    patch_fit(monkeypatch, oom_on_trial_1)
    result = tune(text_experiment)
    trials = load_trials(f"sqlite:///{text_experiment['runs_dir']}/tiny/study.db", "tiny")
    assert trials[1].state == FAIL and "OutOfMemoryError" in trials[1].user_attrs["error"]
    assert result.trials == 3 and trials[2].state.is_finished()


def test_a_crash_while_writing_a_new_best_keeps_the_previous_one(tmp_path):
    best = BestCheckpoint(tmp_path, "maximize")
    best.offer(0, 0.5, lambda folder: (folder / "model.bin").write_text("trial 0"))

    def crash_midway(folder):
        (folder / "model.bin").write_text("half of trial 1")
        raise OSError("No space left on device")

    with pytest.raises(OSError):
        best.offer(1, 0.9, crash_midway)
    assert best.meta() == {"trial": 0, "value": 0.5, "tag": ""}
    assert (tmp_path / "best" / "model.bin").read_text() == "trial 0"
    best.remove_orphans(running=set())  # the next start cleans the half-written one
    assert [p.name for p in (tmp_path / "checkpoints").iterdir()] == ["trial-0"]
    assert not best.offer(2, 0.4, lambda folder: pytest.fail("a worse model is never written"))


def test_same_seed_and_config_give_the_same_recipes_and_scores(text_experiment, tmp_path):
    runs = []
    for attempt in ("a", "b"):
        tune({**text_experiment, "runs_dir": str(tmp_path / attempt)})
        trials = load_trials(f"sqlite:///{tmp_path / attempt}/tiny/study.db", "tiny")
        runs.append([(t.params, t.value, t.user_attrs["seed"]) for t in trials])
    assert runs[0] == runs[1]
    assert [seed for _, _, seed in runs[0]] == [0, 1, 2]


def test_storage_passwords_are_never_shown():
    url = "postgresql+psycopg2://me:hunter2@db.example.com:5432/studies"
    assert "hunter2" not in redact(url) and "db.example.com" in redact(url)


@pytest.fixture(scope="module")
def postgres():
    try:
        server = Postgres()
    except FileNotFoundError as error:
        pytest.skip(str(error))
    url = server.start()
    yield server, url
    server.stop()


def test_two_workers_share_one_study_on_postgresql(postgres, text_experiment, tmp_path, workers):
    server, url = postgres
    exp = {
        **text_experiment,
        "name": "shared",
        "trials": 5,
        "storage": url,
        "space": {**text_experiment["space"], "epochs": 3},
    }
    path = tmp_path / "shared.yaml"
    path.write_text(yaml.safe_dump(exp))
    both = [workers(path) for _ in range(2)]
    outputs = [w.communicate(timeout=600)[0] for w in both]
    assert [w.returncode for w in both] == [0, 0], "\n\n".join(
        o[-1500:] for o, w in zip(outputs, both, strict=True) if w.returncode
    )

    trials = load_trials(url, "shared")
    assert sum(map(counted, trials)) == 5  # one shared budget, nothing duplicated or lost
    # the worker that creates the study enqueues the defaults; the others must not (they did,
    # racing, in 2 of 7 runs before)
    tags = [t.user_attrs.get("tag") for t in trials]
    runs = ("defaults", "defaults-2", "defaults-3", "defaults-4")
    assert [tags.count(t) for t in runs] == [1, 1, 1, 1]  # head-only, then four runs: the soup
    assert all(t.state.is_finished() for t in trials)
    run_dir = tmp_path / "runs" / "shared"
    kept = [p.name for p in (run_dir / "checkpoints").iterdir() if p.name != "members"]
    assert len(kept) == 1  # one best model, whichever worker made the soup
    soup = json.loads((run_dir / "results.json").read_text())["final_model"]
    assert len(soup["members"]) == 4  # the soup of every run, made after the last one
    assert len(list((run_dir / "checkpoints" / "members").iterdir())) == 4
    results = (run_dir / "results.json").read_text()
    for text in [results, *outputs]:
        assert server.password not in text
    best = json.loads((run_dir / "best" / "trial.json").read_text())
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert best["value"] == max(t.value for t in complete)


def test_the_readme_s_postgresql_worker_command_runs_as_written(
    postgres, text_experiment, tmp_path
):
    # README "Many workers, one study": a plain postgresql:// URL (the driver is picked), with
    # its USER, PASSWORD, HOST and DB filled in for a real server, and its own runs folder
    import shlex
    from pathlib import Path

    server, _ = postgres
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    line = next(
        line
        for line in readme.splitlines()
        if line.startswith("hypertweaks tune experiment.yaml") and "USER:PASSWORD@HOST/DB" in line
    )
    place = f"{server.user}:{server.password}@127.0.0.1:{server.port}/{server.database}"
    runs = tmp_path / "shared" / "runs"
    line = line.replace("USER:PASSWORD@HOST/DB", place).replace("/shared/runs", str(runs))
    experiment = {k: v for k, v in text_experiment.items() if k != "runs_dir"}
    (tmp_path / "experiment.yaml").write_text(yaml.safe_dump({**experiment, "trials": 2}))
    worker = start_worker(tmp_path / "experiment.yaml", *shlex.split(line)[3:])
    output = worker.communicate(timeout=600)[0]
    assert worker.returncode == 0, output[-2000:]
    trials = load_trials(f"postgresql+psycopg2://{place}", text_experiment["name"])
    assert sum(map(counted, trials)) == 2
    assert (runs / text_experiment["name"] / "best").is_dir()
