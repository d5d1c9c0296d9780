"""The demo ends by saying plainly what tuning bought on the held-out scans."""

from hypertweaks.demo import verdict


def test_the_demo_says_plainly_when_tuning_bought_nothing():
    line = verdict("roc_auc", 0.822, 0.822)
    assert line.startswith("Tuning bought nothing") and "0.822" in line


def test_the_demo_states_the_gain_or_the_loss_on_held_out_scans():
    assert verdict("roc_auc", 0.80, 0.85).startswith("Tuning bought +0.050 roc_auc")
    assert verdict("roc_auc", 0.85, 0.80).startswith("Tuning cost -0.050 roc_auc")
