import json
import math

import pytest

from hypertweaks import tune
from hypertweaks.checkpoints import BestCheckpoint
from hypertweaks.noise import chosen_among, describe, standard_error, within_noise
from hypertweaks.strategies.selectors import Candidate, KeepDefaults, trials_chosen_among


def rows(*values):
    return [{"number": i, "value": v} for i, v in enumerate(values)]


def test_the_binomial_standard_error_of_accuracy():
    assert standard_error("accuracy", 0.8, 200) == pytest.approx(0.02828, abs=1e-4)
    assert standard_error("loss", 0.8, 200) is None  # not a share of examples
    assert standard_error("roc_auc", 0.8, 200) is None
    # macro-F1's is near its bootstrap's (bench/results/meta/NOISE.md): selection needs a margin
    assert standard_error("macro_f1", 0.8, 200) == pytest.approx(0.02828, abs=1e-4)


def test_trials_within_the_best_ones_band_are_named():
    noise = within_noise(rows(0.80, 0.78, 0.70, None), "accuracy", "maximize", 200)
    assert noise["trials"] == [0, 1]  # 0.78 is within 1.96 x 0.028 of 0.80; 0.70 is not
    assert "2 trials (#0, #1) are within validation noise" in describe(noise)


def test_a_clear_winner_is_not_called_noise():
    noise = within_noise(rows(0.95, 0.70), "accuracy", "maximize", 2000)
    assert noise["trials"] == [0] and describe(noise) is None


def test_metrics_without_a_binomial_error_say_nothing():
    assert within_noise(rows(0.4, 0.41), "loss", "minimize", 200) is None


def offer(best, trial, value, tag=""):
    return best.offer(trial, value, lambda folder: (folder / "m").write_text(str(trial)), tag=tag)


def test_the_defaults_trial_yields_only_to_a_lead_beyond_one_standard_error(tmp_path):
    selector = KeepDefaults("maximize", "accuracy", 200)
    assert selector.margin(0.8) == pytest.approx(0.02828, abs=1e-4)
    best = BestCheckpoint(tmp_path, "maximize", selector)
    assert offer(best, 0, 0.80, tag="defaults")
    assert not offer(best, 1, 0.82)  # +0.02: inside the noise, the recommended recipe stays
    assert offer(best, 2, 0.85)  # +0.05: beyond it (widened 1.48x for the best of 3 trials)
    assert offer(best, 3, 0.855)  # between searched trials, any lead counts as before
    assert best.meta()["trial"] == 3


def test_the_margin_widens_with_the_trials_a_lead_was_the_best_of(tmp_path):
    """A lead that is the best of many noisy scores is inflated by the choice (about sqrt(2 ln
    k) errors for k equal trials): one error for the first trial, then wider."""
    assert chosen_among(1) == 1.0
    assert chosen_among(2) == pytest.approx(1.177, abs=1e-3)
    assert chosen_among(10) == pytest.approx(2.146, abs=1e-3)
    assert chosen_among(30) == pytest.approx(2.608, abs=1e-3)
    selector = KeepDefaults("maximize", "macro_f1", 80)
    assert selector.margin(0.5, 30) == pytest.approx(2.608 * math.sqrt(0.25 / 80), abs=1e-4)
    lead = 0.5 + 1.5 * math.sqrt(0.25 / 80)  # 1.5 errors above the default's 0.5
    early = BestCheckpoint(tmp_path / "early", "maximize", selector)
    assert offer(early, 0, 0.5, tag="defaults") and offer(early, 1, lead)
    late = BestCheckpoint(tmp_path / "late", "maximize", selector)
    assert offer(late, 0, 0.5, tag="defaults") and not offer(late, 29, lead)
    assert offer(late, 30, 0.5 + 2.7 * math.sqrt(0.25 / 80))


def test_the_defaults_trial_finishing_second_takes_the_place_of_a_lead_inside_the_noise(tmp_path):
    # the head-only candidate runs before the defaults trial: the rule must not depend on order
    best = BestCheckpoint(tmp_path, "maximize", KeepDefaults("maximize", "accuracy", 200))
    assert offer(best, 0, 0.82, tag="head-only")
    assert offer(best, 1, 0.80, tag="defaults")  # 0.82 leads by less than one error
    assert best.meta()["trial"] == 1
    assert not offer(best, 2, 0.82)  # and it stays the choice, as if it had come first

    other = BestCheckpoint(tmp_path / "b", "maximize", KeepDefaults("maximize", "accuracy", 200))
    assert offer(other, 0, 0.84, tag="head-only")
    assert not offer(other, 1, 0.80, tag="defaults")  # a lead beyond the noise stands


def test_a_study_that_selects_on_macro_f1_keeps_the_defaults_over_a_lead_inside_the_noise(
    tmp_path,
):
    best = BestCheckpoint(tmp_path, "maximize", KeepDefaults("maximize", "macro_f1", 80))
    assert offer(best, 0, 0.75, tag="defaults")
    assert not offer(best, 1, 0.79)  # +0.04 on 80 rows (one error: 0.048): noise
    assert offer(best, 2, 0.83)  # beyond 1.48 errors, the margin for the best of 3 trials
    assert best.meta()["trial"] == 2


def test_losses_have_no_margin(tmp_path):
    best = BestCheckpoint(tmp_path, "minimize", KeepDefaults("minimize", "loss", 200))
    offer(best, 0, 0.50, tag="defaults")
    assert offer(best, 1, 0.499)


def test_a_study_says_when_it_kept_the_defaults_over_a_lead_inside_the_noise(
    text_experiment, tmp_path, monkeypatch
):
    import hypertweaks.trial

    real = hypertweaks.trial.fit_trial
    values = iter([0.50, 0.55])  # 30 validation rows: one standard error is about 0.09

    def scored(*args, **kwargs):
        model, result = real(*args, **kwargs)
        result.best_value = next(values)
        return model, result

    monkeypatch.setattr(hypertweaks.trial, "fit_trial", scored)
    space = {**text_experiment["space"], "freeze_layers": 0}
    exp = {**text_experiment, "trials": 2, "space": space, "smoke": False, "pruner": "none"}
    result = tune(exp)
    run_dir = tmp_path / "runs" / "tiny"
    results = json.loads((run_dir / "results.json").read_text())
    assert results["best_trial"] == 0 and result.best_value == 0.50
    kept = results["defaults_kept"]
    assert kept["trial"] == 1 and kept["lead"] == pytest.approx(0.05) and kept["margin"] > 0.05
    assert "the recommended recipe was kept" in (run_dir / "report.html").read_text()


def test_a_candidate_is_chosen_among_the_trials_started_up_to_it():
    """The recommended recipe and the soup are one model each (no choice); a search trial's
    value is the best of every trial started up to it, pruned ones included."""
    assert Candidate(0.8, "defaults", 1).among == 1
    assert Candidate(0.8, "soup", 1).among == 1
    assert Candidate(0.8, "head-only", 0).among == 1
    assert Candidate(0.8, "", 9).among == 10 == trials_chosen_among("", 9)
