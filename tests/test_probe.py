import numpy as np

from bench.meta.logme import logme


def test_logme_is_higher_when_the_features_separate_the_classes():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 3, 300)
    noise = rng.normal(size=(300, 16))
    separable = noise.copy()
    separable[:, :3] += 4.0 * np.eye(3)[labels]  # the class shows in three directions
    assert logme(separable, labels) > logme(noise, labels) + 0.1


def test_logme_is_finite_with_more_dimensions_than_examples():
    rng = np.random.default_rng(1)
    assert np.isfinite(logme(rng.normal(size=(20, 64)), rng.integers(0, 2, 20)))
