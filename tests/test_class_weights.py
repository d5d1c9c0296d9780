"""`class_weights: balanced`: on imbalanced data (defect scans, rare intents) every class weighs
as much in the training loss as every other, whatever its number of rows."""

from __future__ import annotations

import json

import pandas as pd
import pytest
import torch
from conftest import FAST_RECIPE, make_texts

from hypertweaks.config import ConfigError, make_experiment
from hypertweaks.fingerprint import check_saved_fingerprint
from hypertweaks.tasks.text import TextClassification


@pytest.fixture
def imbalanced(text_experiment, tmp_path) -> dict:
    """Train with 30 'joy' rows for every 6 'anger' and 6 'calm' rows."""
    common = make_texts(30, seed=3, classes=("joy",))
    rare = make_texts(6, seed=4, classes=("anger", "calm"))
    path = tmp_path / "imbalanced.csv"
    pd.concat([common, rare]).sample(frac=1.0, random_state=0).to_csv(path, index=False)
    return {**text_experiment, "train": str(path)}


def prepared(experiment: dict, cache) -> TextClassification:
    task = TextClassification(make_experiment(experiment), cache)
    task.prepare()
    return task


def batch_loss(task: TextClassification) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    model, _ = task.build(FAST_RECIPE)
    inputs, labels = task.dataset(task.splits.train, False).collate(
        list(range(len(task.splits.train)))
    )
    model.eval()  # no dropout: the same logits for both calls below
    loss = task.loss_sum(model, inputs, labels)
    logits = task.forward(model, inputs).float()
    return loss, logits, labels


def test_balanced_weights_make_each_class_weigh_the_same_in_the_loss(imbalanced, tmp_path):
    task = prepared({**imbalanced, "class_weights": "balanced"}, tmp_path / "cache")
    weights = task.class_weights()
    labels = torch.as_tensor(task.splits.train.labels)
    counts = torch.bincount(labels, minlength=3).float()
    # every class's total weight is the same, and the weights average to 1 over the rows, so the
    # loss keeps its scale (the learning rates mean what they meant)
    assert torch.allclose(weights * counts, torch.full((3,), len(labels) / 3))
    assert weights[labels].mean() == pytest.approx(1.0)
    assert weights.max() > 2 * weights.min()  # the rare classes weigh more per row

    loss, logits, labels = batch_loss(task)
    expected = torch.nn.functional.cross_entropy(logits, labels, weight=weights, reduction="sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_without_class_weights_the_loss_is_plain_cross_entropy(imbalanced, tmp_path):
    task = prepared(imbalanced, tmp_path / "cache")
    assert task.class_weights() is None
    loss, logits, labels = batch_loss(task)
    expected = torch.nn.functional.cross_entropy(logits, labels, reduction="sum")
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_class_weights_is_refused_where_it_means_nothing(text_experiment):
    with pytest.raises(ConfigError, match="class_weights"):
        make_experiment({**text_experiment, "class_weights": "inverse"})
    with pytest.raises(ConfigError, match="class_weights is for classification"):
        make_experiment({**text_experiment, "task": "causal-lm", "class_weights": "balanced",
                         "space": {}})  # fmt: skip


def test_a_study_started_before_the_setting_existed_resumes_and_a_change_is_refused(
    text_experiment, tmp_path
):
    exp = make_experiment(text_experiment)
    saved = tmp_path / "fingerprint.json"
    check_saved_fingerprint(exp, saved, resumable=False)
    stored = json.loads(saved.read_text())
    del stored["class_weights"]  # as written before class_weights existed
    saved.write_text(json.dumps(stored))
    check_saved_fingerprint(exp, saved)  # it ran unweighted: the same study
    balanced = make_experiment({**text_experiment, "class_weights": "balanced"})
    with pytest.raises(ConfigError, match=r"class_weights \('none', now 'balanced'\)"):
        check_saved_fingerprint(balanced, saved)
