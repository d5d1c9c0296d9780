import pytest

from hypertweaks.noise import describe, standard_error, within_noise


def rows(*values):
    return [{"number": i, "value": v} for i, v in enumerate(values)]


def test_the_binomial_standard_error_of_accuracy():
    assert standard_error("accuracy", 0.8, 200) == pytest.approx(0.02828, abs=1e-4)
    assert standard_error("loss", 0.8, 200) is None  # not a share of examples


def test_trials_within_the_best_ones_band_are_named():
    noise = within_noise(rows(0.80, 0.78, 0.70, None), "accuracy", "maximize", 200)
    assert noise["trials"] == [0, 1]  # 0.78 is within 1.96 x 0.028 of 0.80; 0.70 is not
    assert "2 trials (#0, #1) are within validation noise" in describe(noise)


def test_a_clear_winner_is_not_called_noise():
    noise = within_noise(rows(0.95, 0.70), "accuracy", "maximize", 2000)
    assert noise["trials"] == [0] and describe(noise) is None


def test_metrics_without_a_binomial_error_say_nothing():
    assert within_noise(rows(0.4, 0.41), "loss", "minimize", 200) is None
