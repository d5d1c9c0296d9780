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
from bench.reference import REFERENCE_RECIPE, reference_recipe  # noqa: E402
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


def _fake_context(task, cut, seed, *args):
    return methods.Context(task, cut, seed, torch.device("cpu"), _Text(), {}, reference_recipe(0.1))


def test_cells_run_once_with_budget_from_defaults_and_report(tmp_path, monkeypatch):
    calls = []

    def fake_context(task, cut, seed, device="auto", data_root=None, model=None):
        return _fake_context(task, cut, seed)

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
                "chosen_recipe": reference_recipe(0.1) if name == "defaults" else {"lr": 1e-4},
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
    assert "predate the bench's common clock" not in text  # new cells say how they counted
    assert (tmp_path / f"anytime_{cut.key}_2x.png").stat().st_size > 1000


def test_a_failing_method_is_reported_and_leaves_no_cell(tmp_path, monkeypatch):
    def broken(ctx, budget_seconds):
        raise RuntimeError("boom")

    monkeypatch.setattr(methods, "make_context", _fake_context)
    monkeypatch.setattr(methods, "METHODS", {"defaults": broken, "random": broken})
    cut = Cut(10, 4, 5, 16)
    assert run.run(["sst2"], ["random"], [2.0], [0], cut, cells_dir=tmp_path) == 1
    assert not list((tmp_path / cut.key).glob("*.json"))
    assert "boom" in (tmp_path / cut.key / "sst2__defaults__s0.error.txt").read_text()


def test_tasks_are_any_folders_with_train_and_test(tmp_path):
    (tmp_path / "mine").mkdir()
    _table(30, ["x", "y", "z"], "train").to_csv(tmp_path / "mine" / "train.csv", index=False)
    _table(30, ["x", "y", "z"], "test").to_csv(tmp_path / "mine" / "test.csv", index=False)
    (tmp_path / "half").mkdir()  # no test.csv: not a task
    _table(30, ["x", "y", "z"], "train").to_csv(tmp_path / "half" / "train.csv", index=False)
    assert tasks.available_tasks(tmp_path) == ["mine"]
    tasks.check_tasks(["mine"], tmp_path)
    with pytest.raises(SystemExit, match=r"tasks \['half'\] under .*the tasks there are: mine"):
        tasks.check_tasks(["half"], tmp_path)


def test_no_machine_path_in_bench():
    # the data root is found from the checkout (or HYPERTWEAKS_BENCH_DATA / --data-root)
    bench_dir = Path(methods.__file__).parent
    for path in bench_dir.glob("*.py"):
        assert "/work/" not in path.read_text(), path.name


def test_committed_budget_units_are_the_reference_recipe():
    # cells from before the reference was recorded hold it as the defaults cell's recipe
    units = list((run.CELLS_DIR).glob("*/*__defaults__*.json"))
    for path in units:
        assert run.unit_recipe(json.loads(path.read_text())) is not None
        assert run.is_reference(run.unit_recipe(json.loads(path.read_text()))), path.name
    assert not run.is_reference({**REFERENCE_RECIPE, "learning_rate": 1e-4, "dropout": 0.1})


@pytest.mark.parametrize(
    ("multiple", "startup"), [(1, 2), (3, 2), (4, 2), (8, 4), (12, 6), (20, 10), (100, 10)]
)
def test_tpe_startup_scales_with_the_budget(multiple, startup):
    # half the expected trials (one per unit) random, at least 2, at most Optuna's 10
    assert methods.startup_trials(multiple) == startup


@pytest.mark.slow
def test_every_method_runs_for_real_within_its_budget(tmp_path, monkeypatch, tiny_bert):
    # Every method trains for real, on a folder that is not one of the built-in tasks (no
    # validation.csv: carved from train), with a model path (the tiny random BERT); no trial
    # starts once the budget is spent, counted one way for all: wall time since the first trial.
    from conftest import make_texts

    from bench.__main__ import main

    root = tmp_path / "data"
    (root / "moods").mkdir(parents=True)
    make_texts(40, 0).to_csv(root / "moods" / "train.csv", index=False)
    make_texts(10, 2).to_csv(root / "moods" / "test.csv", index=False)
    monkeypatch.setattr(tasks, "WORK_DIR", tmp_path / "work")
    monkeypatch.setattr(methods, "WORK_DIR", tmp_path / "work")
    monkeypatch.setattr(run, "CELLS_DIR", tmp_path / "cells")
    # hypertweaks_larger is offered a wider tiny BERT in place of mpnet (not assembled in CI)
    from conftest import make_bert

    import bench.mpnet

    wider = make_bert(tmp_path / "wider-bert", hidden_size=64, layers=2)
    monkeypatch.setattr(bench.mpnet, "MODEL_DIR", wider)
    argv = ["run", "--data-root", str(root), "--tasks", "moods", "--profile", "tiny"]
    argv += ["--train-size", "48", "--val-size", "24", "--test-size", "30", "--max-length", "16"]
    argv += ["--model", str(tiny_bert), "--budget", "2x", "--seeds", "0", "--device", "cpu"]
    argv += ["--methods", ",".join(methods.METHODS), "--no-report"]
    threads, set_threads = torch.get_num_threads(), torch.set_num_threads
    torch.set_num_threads(1)  # on a busy machine one thread is several times faster
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)
    try:
        assert main(argv) == 0
    finally:
        set_threads(threads)

    folder = tmp_path / "cells" / tasks.table_key(Cut(48, 24, 30, 16), str(tiny_bert))
    assert folder.name.startswith("n48-v24-t30-L16-tiny-bert")  # another model, another table
    cells = {
        json.loads(p.read_text())["method"]: json.loads(p.read_text()) for p in folder.iterdir()
    }
    assert sorted(cells) == sorted(methods.METHODS)
    unit = cells["defaults"]["result"]["seconds"]
    onepoch = cells["onepoch_topk"]["result"]["trials"]
    full_runs = [t for t in onepoch if t["phase"] == 2]
    assert len(full_runs) <= 1  # K = 1 below 4x
    if not full_runs:  # at this size a scout costs most of a unit: the scouts spent the budget
        assert onepoch[-1]["at"] + onepoch[-1]["seconds"] >= cells["onepoch_topk"]["budget_seconds"]
        del cells["onepoch_topk"]  # it chose nothing; the rest of the checks do not apply
    for method, cell in cells.items():
        result = cell["result"]
        assert cell["reference_recipe"] == reference_recipe(0.1)
        assert 0 <= result["test_metrics"]["accuracy"] <= 1, method
        assert result["chosen_recipe"] and result["val_score"] is not None, method
        if method == "defaults":
            continue
        assert cell["budget_seconds"] == pytest.approx(2 * unit)
        budget = cell["budget_seconds"]
        assert all(0 <= t["at"] < budget for t in result["trials"]), method
        if method in ("random", "tpe_median", "hf_search"):  # stopped by the budget alone
            assert result["search_seconds"] >= budget, method
    assert cells["tpe_median"]["result"]["n_startup_trials"] == 2
    kept = tmp_path / "work" / "runs" / folder.name  # the bench's best models, once tested
    assert not [p for m in methods.METHODS for p in kept.glob(f"moods-{m}-seed0/checkpoints/*")]


def test_the_bench_text_task_builds_the_classifier_it_is_told_to(text_experiment, tmp_path):
    # bench/text_heads.py: beside the product's LP-FT ("probe"), the peers' HF sequence classifier
    # ("hf") and the mean-pooled classifier with a fresh head ("mean"); head-only is the product's
    from dataclasses import replace

    from conftest import FAST_RECIPE

    from bench.text_heads import BenchTextClassification
    from hypertweaks.config import make_experiment
    from hypertweaks.tasks.text import MeanPooledClassifier, TextClassification

    def built(task, recipe):
        torch.manual_seed(0)
        model, layers = task.build(recipe)
        return model, layers, torch.get_rng_state()

    experiment = make_experiment(text_experiment)
    product = TextClassification(experiment, tmp_path / "cache")
    product.prepare()
    fine_tune = FAST_RECIPE
    head_only = replace(FAST_RECIPE, freeze_layers=product.num_layers)
    models = {}
    for head in ("probe", "mean", "hf"):
        task = BenchTextClassification(experiment, tmp_path / "cache", fine_tune_head=head)
        task.prepare()
        models[head], layers, _ = built(task, fine_tune)
        assert len(layers.blocks) == task.num_layers
        frozen, _, _ = built(task, head_only)
        assert isinstance(frozen, MeanPooledClassifier)
    assert isinstance(models["mean"], MeanPooledClassifier)
    assert not isinstance(models["hf"], MeanPooledClassifier)
    assert type(models["hf"]).__name__.endswith("ForSequenceClassification")
    # "probe" is the product's own build: the same model and the same random draws
    ours, _, state = built(product, fine_tune)
    bench_probe = BenchTextClassification(experiment, tmp_path / "cache")
    bench_probe.prepare()
    theirs, _, bench_state = built(bench_probe, fine_tune)
    assert torch.equal(state, bench_state)
    assert all(
        torch.equal(a, b)
        for a, b in zip(ours.state_dict().values(), theirs.state_dict().values(), strict=True)
    )
    assert not torch.equal(models["mean"].head.weight, ours.head.weight)
    with pytest.raises(ValueError, match="fine_tune_head"):
        BenchTextClassification(experiment, tmp_path / "cache", fine_tune_head="cls").build(
            fine_tune
        )


def test_the_same_run_table_gives_each_tasks_spread_and_the_kept_trial(tmp_path):
    from bench import same_run
    from bench.confirm import CUT, PEERS

    folder = tmp_path / "cells" / CUT
    folder.mkdir(parents=True)

    def write(task, method, seed, accuracy, result=None):
        name = f"{task}__{method}__s{seed}.json" if method == "defaults" else (
            f"{task}__{method}__1x__s{seed}.json")  # fmt: skip
        body = {"result": {"test_metrics": {"accuracy": accuracy}, **(result or {})}}
        (folder / name).write_text(json.dumps(body))

    for seed, (ours, peer) in enumerate([(0.80, 0.70), (0.90, 0.74)]):
        write("sst2", "defaults", seed, 0.60)
        for method in PEERS:
            write("sst2", method, seed, peer)
        trials = [  # the same recipe twice: the kept one is the second
            {"number": 0, "state": "complete", "tag": "defaults", "recipe": {"lr": 1}},
            {"number": 1, "state": "complete", "tag": "", "recipe": {"lr": 1}},
        ]
        kept = {"chosen_recipe": {"lr": 1}, "chosen_trial": 1, "trials": trials}
        write("sst2", "hypertweaks", seed, ours, kept)

    write("trec6", "defaults", 0, 0.60)  # a pair hypertweaks trails: the peer's score is bold
    for method, accuracy in zip(PEERS, [0.75, 0.70, 0.70, 0.70], strict=True):
        write("trec6", method, 0, accuracy)
    write("trec6", "hypertweaks", 0, 0.72, {"chosen_trial": 0, "trials": trials})

    write("trec6", "defaults", 1, 0.60)  # its final model, a soup of three runs, kept
    for method in PEERS:
        write("trec6", method, 1, 0.70)
    souped = {"members": [1, 2, 3], "value": 0.8, "kept": True}
    write("trec6", "hypertweaks", 1, 0.78, {"chosen_trial": 1, "trials": trials,
                                            "final_model": souped})  # fmt: skip

    text = same_run.table("1x", tmp_path)
    assert "| sst2 | 0 | 60.0 |" in text and "| **80.0** | searched |" in text
    assert "| trec6 | 1 | 60.0 | 70.0 | 70.0 | 70.0 | 70.0 | **78.0** | soup of 3 |" in text
    assert "| trec6 | 0 | 60.0 | **75.0** | 70.0 | 70.0 | 70.0 | 72.0 | defaults |" in text
    assert "| sst2 | 2 | 60.0 ± 0.0 |" in text  # two seeds: mean ± sd
    assert "85.0 ± 7.1 | +13.0 (+10.0 to +16.0) |" in text


def test_the_same_run_table_shows_one_task_carrying_the_lead_and_what_3x_bought(tmp_path):
    from bench import same_run
    from bench.confirm import CUT, PEERS

    folder = tmp_path / "cells" / CUT
    folder.mkdir(parents=True)

    def write(task, method, accuracy, budget="3x"):
        middle = "" if method == "defaults" else f"{budget}__"
        body = {"result": {"test_metrics": {"accuracy": accuracy}, "trials": []}}
        (folder / f"{task}__{method}__{middle}s0.json").write_text(json.dumps(body))

    # hypertweaks leads banking77 by 40 points and trails the best peer by 1 on the others
    for task, ours, peer in [
        ("banking77", 0.80, 0.40),
        ("sst2", 0.85, 0.86),
        ("trec6", 0.90, 0.91),
    ]:
        write(task, "defaults", 0.5)
        for budget, gain in [("1x", 0.0), ("3x", 0.02)]:
            write(task, "hypertweaks", ours, budget)
            for method in PEERS:
                write(task, method, peer - 0.02 + gain, budget)

    text = same_run.table("3x", tmp_path)
    assert "- the best peer of each pair: +12.7" in text
    assert "- without banking77: -1.0 [-1.0, -1.0], 0-2" in text
    assert "- without sst2: +19.5" in text
    assert "1x -> 3x): hypertweaks 85.0 -> 85.0; the best peer of each pair 70.3 -> 72.3." in text


def test_bench_quick_runs_its_cells_on_a_fresh_clone_not_the_committed_ones(tmp_path, monkeypatch):
    # bench/results/ holds committed cells of the quick cut: run into them, quick skipped all
    import bench.__main__ as bench_main
    import bench.report

    calls = {}

    def fake_run(tasks_, methods_, budgets, seeds, cut, device, **kwargs):
        calls.update(kwargs, tasks=tasks_, methods=methods_)
        return 0

    monkeypatch.setattr(run, "run", fake_run)
    monkeypatch.setattr(
        bench.report, "report", lambda results_dir=None: calls.setdefault("report", results_dir)
    )
    monkeypatch.setattr(bench_main, "check_tasks", lambda *a: None)
    assert bench_main.main(["quick", "--results", str(tmp_path)]) == 0
    assert calls["cells_dir"] == tmp_path / "cells" and calls["report"] == tmp_path
    assert bench_main.QUICK_RESULTS.parent.name == "work"  # ignored by git: a fresh clone has none


@pytest.fixture
def moods(tmp_path, monkeypatch, tiny_bert):
    """A bench context on a small three-class text set and the tiny random BERT."""
    from conftest import make_texts

    root = tmp_path / "data"
    (root / "moods").mkdir(parents=True)
    make_texts(40, 0).to_csv(root / "moods" / "train.csv", index=False)
    make_texts(10, 1).to_csv(root / "moods" / "validation.csv", index=False)
    make_texts(20, 2).to_csv(root / "moods" / "test.csv", index=False)
    monkeypatch.setattr(tasks, "WORK_DIR", tmp_path / "work")
    monkeypatch.setattr(methods, "WORK_DIR", tmp_path / "work")
    monkeypatch.setattr(torch, "set_num_threads", lambda n: None)  # make_context takes all cores
    return methods.make_context("moods", Cut(120, 30, 60, 16), 0, "cpu", root, str(tiny_bert))


def test_embed_lr_fits_frozen_embeddings_chooses_c_on_validation_and_beats_chance(moods):
    # frozen mean-pooled features of the tiny random BERT, a logistic regression on them: the
    # words tell the classes apart, so even random embeddings separate them
    result = methods.METHODS["embed_lr"](moods, 600.0)

    keys = {"chosen_recipe", "val_score", "test_metrics", "examples", "seconds"}
    keys |= {"search_seconds", "curve", "trials"}
    assert keys <= set(result)
    assert set(result["test_metrics"]) == {"accuracy", "macro_f1", "loss"}
    assert result["examples"] == 120 and result["converged"]
    (trial,) = result["trials"]
    assert (
        trial["state"] == "complete" and trial["at"] < 1 and trial["value"] == result["val_score"]
    )
    assert 0 < result["search_seconds"] <= result["seconds"] < 600  # on the clock, far within it
    # C chosen on validation: the best validation score over the grid is the one kept
    assert result["val_score"] == pytest.approx(max(result["val_by_C"].values()), abs=1e-4)
    assert str(result["chosen_recipe"]["C"]) and len(result["val_by_C"]) == methods.EMBED_LR_CS
    assert result["test_metrics"]["accuracy"] > 0.6  # chance: 1/3
    assert result["curve"] == [[120, result["val_score"]]]


def test_setfit_trains_pairs_for_the_steps_its_budget_holds_then_its_head(moods, monkeypatch):
    monkeypatch.setattr(methods, "_pair_step_seconds", lambda *a: 0.5)  # a step: half a second
    result = methods.METHODS["setfit"](moods, 10.0)

    recipe = result["chosen_recipe"]
    # the budget's steps (10 s less the head's pass, at 0.5 s a step) set SetFit's schedule
    assert 10 <= recipe["pair_steps"] <= 19 and recipe["pairs_batch"] == methods.SETFIT_BATCH
    assert result["examples"] == 2 * methods.SETFIT_BATCH * recipe["pair_steps"]
    (trial,) = result["trials"]
    assert trial["value"] == result["val_score"] and trial["state"] == "complete"
    assert set(result["test_metrics"]) == {"accuracy", "macro_f1", "loss"}
    assert result["test_metrics"]["accuracy"] > 0.5  # chance: 1/3


def test_the_same_run_table_adds_embed_lr_as_a_peer_once_measured(tmp_path):
    from bench import same_run
    from bench.confirm import CUT, PEERS

    folder = tmp_path / "cells" / CUT
    folder.mkdir(parents=True)

    def write(task, method, seed, accuracy):
        middle = "" if method == "defaults" else "3x__"
        body = {"result": {"test_metrics": {"accuracy": accuracy}, "trials": []}}
        (folder / f"{task}__{method}__{middle}s{seed}.json").write_text(json.dumps(body))

    for seed in (0, 1):
        write("sst2", "defaults", seed, 0.6)
        write("sst2", "hypertweaks", seed, 0.8)
        for method in PEERS:
            write("sst2", method, seed, 0.7)
    assert "embed+LR" not in same_run.table("3x", tmp_path)  # not measured: no column
    write("sst2", "embed_lr", 0, 0.9)  # the best peer of its pair, beyond the searches
    text = same_run.table("3x", tmp_path)
    assert "| one-epoch top-K | embed+LR | hypertweaks |" in text
    assert "| sst2 | 0 | 60.0 | 70.0 | 70.0 | 70.0 | 70.0 | **90.0** | 80.0 |" in text
    assert "Pairs left out, a peer's cell missing: sst2 s1." in text
    assert "- embed+LR: -10.0 [-10.0, -10.0], 0-1" in text
    assert "- the best fine-tuning search of each pair (HF search, random, TPE+median, " in text


def test_the_same_run_table_of_another_model_has_the_peers_run_there(tmp_path):
    from bench import same_run
    from bench.confirm import CUT

    cut = f"{CUT}-all-mpnet-base-v2"
    folder = tmp_path / "cells" / cut
    folder.mkdir(parents=True)
    for method, accuracy in (("defaults", 0.6), ("hypertweaks", 0.8), ("setfit", 0.7)):
        middle = "" if method == "defaults" else "3x__"
        body = {"result": {"test_metrics": {"accuracy": accuracy}, "trials": []}}
        (folder / f"sst2__{method}__{middle}s0.json").write_text(json.dumps(body))
    text = same_run.table("3x", tmp_path, cut)
    assert f"Cut and model: {cut}." in text
    assert "| task | seed | reference | SetFit | hypertweaks | its choice |" in text
    assert "| sst2 | 0 | 60.0 | 70.0 | **80.0** | ? |" in text
    assert "- SetFit: +10.0 [+10.0, +10.0], 1-0" in text
    assert "sst2" not in same_run.table("3x", tmp_path)  # the MiniLM table: no cells
    body = {"result": {"test_metrics": {"accuracy": 0.75}, "trials": []}}
    (folder / "sst2__hypertweaks__1x__s0.json").write_text(json.dumps(body))
    alone = same_run.table("1x", tmp_path, cut)  # hypertweaks alone at 1x: no peer column
    assert "| task | seed | reference | hypertweaks | its choice |" in alone
    assert "| sst2 | 0 | 60.0 | **75.0** | ? |" in alone and "No peer ran at 1x" in alone


def test_confirm_pairs_new_runs_with_the_committed_peers_and_their_own_1x(tmp_path):
    from bench import confirm

    new, old = tmp_path / "new", tmp_path / "old"

    def write(root, task, method, seed, accuracy, budget="3x"):
        folder = root / "cells" / confirm.CUT
        folder.mkdir(parents=True, exist_ok=True)
        body = {"result": {"test_metrics": {"accuracy": accuracy}}}
        (confirm.cell(root, task, method, f"s{seed}", budget)).write_text(json.dumps(body))

    for seed, (at_1x, at_3x) in enumerate([(0.80, 0.82), (0.84, 0.83)]):
        for root in (new, old):
            write(root, "sst2", "defaults", seed, 0.6)  # the same reference run in both
        for method in (*confirm.PEERS, "setfit"):
            write(old, "sst2", method, seed, 0.7)
        write(new, "sst2", "hypertweaks", seed, at_1x, "1x")
        write(new, "sst2", "hypertweaks", seed, at_3x)
    text = confirm.table(new, old, (*confirm.PEERS, "setfit"), (*confirm.HEADERS, "SetFit"))
    assert "| one-epoch top-K | hypertweaks before |" not in text  # SetFit's column between
    assert "| SetFit | hypertweaks before | hypertweaks session 6 | hypertweaks now |" in text
    assert "- SetFit: +12.5 [+12.0, +13.0], 2-0" in text
    assert "3x minus its own 1x (mean 82.0): +0.5 [-1.0, +2.0], 1-1" in text
    write(new, "sst2", "defaults", 1, 0.61)  # another reference score: not the same runs
    with pytest.raises(SystemExit, match="not the same runs"):
        confirm.table(new, old)


def test_the_larger_table_pairs_the_larger_encoder_with_minilm_at_the_same_budget(tmp_path):
    from bench import larger
    from bench.confirm import CUT

    folder = tmp_path / "cells" / CUT
    folder.mkdir(parents=True)

    def write(name, accuracy, result=None, unit=60.0, used=1.0):
        body = {"unit_seconds": unit, "result": {"test_metrics": {"accuracy": accuracy}}}
        body.update(budget_seconds=600.0, wall_seconds=600.0 * used)
        body["result"].update(result or {})
        (folder / name).write_text(json.dumps(body))

    chose = {"model": "/m/all-mpnet-base-v2", "estimated_seconds": {"/m/all-mpnet-base-v2": 400}}
    for task, scores in (("sst2", (0.8, 0.85, 0.86, 0.9)), ("trec6", (0.7, 0.9, 0.92, 0.91))):
        write(f"{task}__defaults__s0.json", scores[0])
        write(f"{task}__hypertweaks__1x__s0.json", scores[1])
        write(f"{task}__hypertweaks__10x__s0.json", scores[2], used=1.02)
        write(f"{task}__hypertweaks_larger__10x__s0.json", scores[3], {"backbone": chose}, used=1.3)
    write("ag-news__hypertweaks_larger__10x__s0.json", 0.9)  # its pair unfinished: left out
    text = larger.table("10x", tmp_path)
    assert "| sst2 | 0 | 60 | 80.0 | 85.0 | 86.0 | **90.0** | all-mpnet-base-v2 (one run" in text
    assert "estimate 400s" in text and "ag-news" not in text
    assert "- larger 10x minus hypertweaks 10x: +1.5" in text and "1-1" in text
    assert "hypertweaks 10x 1.02 (1.02-1.02); larger 10x 1.30 (1.30-1.30)" in text

    # larger at 4x, partly frozen, against MiniLM's cells at 10x (none at 4x)
    frozen = {**chose, "freeze_layers": 10}
    write("sst2__hypertweaks_larger__4x__s0.json", 0.88, {"backbone": frozen}, used=1.1)
    text = larger.table("4x", tmp_path, minilm_budget="10x")
    assert "| sst2 | 0 | 60 | 80.0 | 85.0 | 86.0 | **88.0** | all-mpnet-base-v2 (lowest 10" in text
    assert "- larger 4x minus hypertweaks 10x: +2.0" in text

    # against 1x alone: its column once, one difference
    text = larger.table("4x", tmp_path, minilm_budget="1x")
    assert (
        "| hypertweaks 1x | larger 4x |" in text and "hypertweaks 1x | hypertweaks 1x" not in text
    )
    assert "| sst2 | 0 | 60 | 80.0 | 85.0 | **88.0** | all-mpnet-base-v2 (lowest 10" in text
    assert "- larger 4x minus hypertweaks 1x: +3.0" in text and "minus hypertweaks 10x" not in text
    assert "- larger 4x's wall time over budget: 1.10" in text


@pytest.mark.parametrize(
    ("flag", "file"),
    [
        ("--class-weights", "images_class_weights.json"),
        ("--soup", "images_soup.json"),
        ("--lp-ft", "images_lp_ft.json"),
        ("--image-size=192", "images_image_size.json"),
    ],
)
def test_bench_images_runs_each_experiment_it_offers(monkeypatch, tmp_path, flag, file):
    """Each flag of bench.images reaches its experiment and writes its table (the studies
    themselves replaced by rows of their shape)."""
    from bench import images

    scores = {"accuracy": 0.8, "macro_f1": 0.7, "roc_auc": 0.9}
    row = {"dataset": "magnetic-tile", "seed": 0, "default": scores, "balanced": scores,
           "lp-ft": scores, "192": scores,
           "tuned": scores, "soup": scores, "soup_final": {"members": [0, 1], "kept": True},
           "soup_alone": {"averaged": scores, "bn_recomputed": scores}}  # fmt: skip
    monkeypatch.setattr(images, "magnetic_tile_tables", lambda *args: {})
    monkeypatch.setattr(images, "machine", lambda device: {})
    monkeypatch.setattr(images, "variant_default", lambda *args: row)
    monkeypatch.setattr(images, "soup_pair", lambda *args: row)
    monkeypatch.setattr(images, "lp_ft_default", lambda *args: row)
    out = tmp_path / "images.json"
    args = ["--datasets", "magnetic-tile", "--seeds", "0", "--out", str(out), flag]
    assert images.main(args) == 0
    assert json.loads((tmp_path / file).read_text())["rows"] == [row]
    assert not out.exists()  # only the experiment's own file


def test_bench_images_pairs_select_on_the_metric_asked_for(monkeypatch, tmp_path):
    """`--metric` reaches both studies of every pair and is recorded with the rows."""
    from bench import images

    scores = {"accuracy": 0.8, "macro_f1": 0.7, "roc_auc": 0.9}
    asked = []

    def pair(dataset, paths, seed, budget, runs, **fields):
        asked.append(fields)
        return {"dataset": dataset, "seed": seed, "default": scores, "tuned": scores,
                "trials": 3, "kept_default": True}  # fmt: skip

    monkeypatch.setattr(images, "magnetic_tile_tables", lambda *args: {})
    monkeypatch.setattr(images, "machine", lambda device: {})
    monkeypatch.setattr(images, "pair", pair)
    out = tmp_path / "images.json"
    args = ["--datasets", "magnetic-tile", "--seeds", "0,1", "--out", str(out)]
    assert images.main([*args, "--metric", "macro_f1"]) == 0
    assert asked == [{"metric": "macro_f1"}] * 2
    assert json.loads(out.read_text())["metric"] == "macro_f1"


def test_bench_images_variants_take_the_metric_and_refuse_a_second_variant(monkeypatch, tmp_path):
    """`--metric` reaches both studies of a variant; two variants in one run are refused
    (each writes its own file of one experiment)."""
    from bench import images

    asked = []

    def variant_default(dataset, paths, seed, runs, field, value, **fields):
        asked.append((field, value, fields))
        scores = {"accuracy": 0.8, "macro_f1": 0.7, "roc_auc": None}
        return {"dataset": dataset, "seed": seed, "default": scores, value: scores}

    monkeypatch.setattr(images, "magnetic_tile_tables", lambda *args: {})
    monkeypatch.setattr(images, "machine", lambda device: {})
    monkeypatch.setattr(images, "variant_default", variant_default)
    out = tmp_path / "images.json"
    args = ["--datasets", "magnetic-tile", "--seeds", "0", "--out", str(out)]
    assert images.main([*args, "--image-size", "192", "--metric", "macro_f1"]) == 0
    assert asked == [("image_size", "192", {"metric": "macro_f1"})]
    assert json.loads((tmp_path / "images_image_size.json").read_text())["metric"] == "macro_f1"
    with pytest.raises(SystemExit):
        images.main([*args, "--image-size", "192", "--class-weights"])
    assert len(asked) == 1  # refused before any study


def test_bench_images_keeps_the_trials_validation_values(tmp_path):
    """What an offline replay of a selection rule reads: the complete trials' numbers, start
    tags and validation values, and the validation examples, from the study's results.json."""
    from types import SimpleNamespace

    from bench.images import validation_trials

    path = tmp_path / "results.json"
    trials = [
        {"number": 0, "state": "complete", "tag": "defaults", "value": 0.5},
        {"number": 1, "state": "pruned", "tag": "", "value": None},
        {"number": 2, "state": "complete", "tag": "", "value": 0.6},
    ]
    path.write_text(json.dumps({"data": {"train": 320, "validation": 80}, "trials": trials}))
    kept = validation_trials(SimpleNamespace(results_path=path))
    assert kept == {
        "validation_examples": 80,
        "trials": [
            {"number": 0, "tag": "defaults", "value": 0.5},
            {"number": 2, "tag": "", "value": 0.6},
        ],
    }


def test_bench_images_replay_scores_each_rule_s_choice_on_test():
    """The one-error rule takes a trial that led the default by 1.5 errors after 30 trials;
    the widened rule keeps the default: each scored by the test result the pair recorded."""
    import math

    from bench.images_replay import kept_test, table

    error = math.sqrt(0.25 / 80)
    trials = [{"number": 0, "tag": "defaults", "value": 0.5}]
    trials += [{"number": n, "tag": "", "value": 0.45} for n in range(1, 29)]
    trials += [{"number": 29, "tag": "", "value": 0.5 + 1.5 * error}]
    row = {
        "dataset": "magnetic-tile",
        "seed": 0,
        "default": {"macro_f1": 0.50},
        "tuned": {"macro_f1": 0.44},
        "kept_default": False,
        "tuned_validation": {"validation_examples": 80, "trials": trials},
    }
    assert kept_test(row, "macro_f1", "one error") == 0.44
    assert kept_test(row, "macro_f1", "widened for the trials compared") == 0.50
    text = table([row], "macro_f1")
    assert "- one error minus the default, macro_f1 points: -6.0" in text
    assert "- widened for the trials compared minus the default, macro_f1 points: +0.0" in text


def test_bench_images_replay_of_a_refit_study_scores_only_the_trial_it_refit():
    """A study that refit its kept trial recorded that refit's test score only: a rule that
    keeps the same trial gets it, a rule that keeps another trial gets none."""
    from bench.images_replay import kept_test

    trials = [{"number": 0, "tag": "defaults", "value": 0.5}]
    trials += [{"number": n, "tag": "", "value": 0.45} for n in range(1, 29)]
    trials += [{"number": 29, "tag": "", "value": 0.56}]
    row = {
        "default": {"macro_f1": 0.50},
        "tuned": {"macro_f1": 0.53},  # the default's refit: kept by the widened rule
        "kept_default": True,
        "tuned_refit": {"trial": 0, "kept": True},
        "tuned_validation": {"validation_examples": 80, "trials": trials},
    }
    assert kept_test(row, "macro_f1", "widened for the trials compared") == 0.53
    assert kept_test(row, "macro_f1", "one error") is None  # trial 29: its refit never ran


def test_bench_images_refit_rules_replay_each_stopping_epoch_from_one_scored_curve():
    """Each rule stops at its epoch if the refit there matches its trial on the validation
    rows it trained on, else the default's model stays."""
    from bench.images import refit_rules_table

    def point(trained_on, test):
        return {"trained_on": {"macro_f1": trained_on}, "test": {"macro_f1": test}}

    row = {
        "dataset": "elpv",
        "seed": 0,
        "chosen": 1,
        "metric": "macro_f1",
        "trial_value": 0.8,
        "default": {"macro_f1": 0.70},
        "curve": [point(0.4, 0.40), point(0.85, 0.74), point(0.9, 0.76)],
    }
    table = refit_rules_table([row], "macro_f1")
    assert "| elpv | 0 | 1 | 0.700 | 0.700 | 0.740 | 0.760 |" in table
    assert "last epoch, checked (shipped) minus the default, macro_f1 points: mean +6.0" in table
    row["curve"][-1] = point(0.7, 0.76)  # the last epoch fails the check: the default stays
    table = refit_rules_table([row], "macro_f1")
    assert "| elpv | 0 | 1 | 0.700 | 0.700 | 0.740 | 0.700 |" in table


@pytest.mark.parametrize("schedule", ["chosen", "whole"])
def test_bench_images_refit_trains_every_row_for_the_epochs_the_default_chose(
    schedule, monkeypatch, tmp_path
):
    """The default on train less a stratified 15% carve-out, then the refit on every training
    row with that carve-out as its (trained-on) validation, for the default's best epoch: on a
    schedule of those epochs, or on the whole schedule, stopped after them."""
    from types import SimpleNamespace

    import pandas as pd

    from bench import images
    from hypertweaks import trial
    from hypertweaks.data import DataError
    from hypertweaks.tasks import image

    train = pd.DataFrame({"image": [f"{i}.png" for i in range(40)], "label": ["a", "b"] * 20})
    paths = {"train": tmp_path / "train.csv", "test": tmp_path / "test.csv"}
    train.to_csv(paths["train"], index=False)
    studies = []

    def default_alone(dataset, paths, seed, runs, tag="", **fields):
        rows = len(pd.read_csv(paths["train"]))
        validation = len(pd.read_csv(paths["validation"]))
        try:  # the product refuses validation images that are training images
            image.check_not_in_train(["x.png"], ["x.png"], "validation (validation.csv)")
            refused = False
        except DataError:
            refused = True
        stop = getattr(trial.fit, "keywords", {}).get("stop_after")
        studies.append((tag, rows, validation, fields, refused, stop))
        results = tmp_path / f"results{len(studies)}.json"
        results.write_text(json.dumps({"trials": [{"best_epoch": 3}]}))
        scores = {"accuracy": 0.8, "macro_f1": 0.7, "roc_auc": None}
        return SimpleNamespace(seconds=1.0, test_metrics=scores, results_path=results)

    monkeypatch.setattr(images, "default_alone", default_alone)
    fit = trial.fit
    row = images.refit_default("elpv", paths, 0, tmp_path / "runs", schedule, metric="macro_f1")
    refit = (
        ("-refit3chosen", 40, 6, {"space": {"epochs": 3}, "metric": "macro_f1"}, False, None)
        if schedule == "chosen"
        else ("-refit3whole", 40, 6, {"metric": "macro_f1"}, False, 3)
    )
    assert studies == [("-carved", 34, 6, {"metric": "macro_f1"}, True, None), refit]
    assert row["epochs"] == 3 and row["rows"] == {"default": 34, "refit": 40}
    assert row["schedule"] == schedule and row["refit_best_epoch"] == 3
    assert trial.fit is fit
