"""How close a task is to what the model already knows, measured before any fine-tuning:
LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer
Learning"), the log marginal evidence of a Bayesian linear model on the frozen model's features.
Higher means the frozen features already separate the classes (freeze more, change less);
lower means the task is far from pre-training (let more layers adapt). A meta-feature of the
bench's meta-dataset (bench/meta/probe.py); the product does not use it."""

from __future__ import annotations

import numpy as np


def logme(features: np.ndarray, labels: np.ndarray, iterations: int = 11) -> float:
    """LogME of features (n, d) for integer class labels (n,): the mean over classes of the
    per-example log evidence of a Bayesian ridge regression on each class's one-hot target, its
    prior and noise precisions (alpha, beta) found by the paper's fixed-point iteration (as the
    authors' reference code, for d <= n; it holds for d > n too, only slower)."""
    f = np.asarray(features, dtype=np.float64)
    n, d = f.shape
    s, v = np.linalg.eigh(f.T @ f)  # eigenvalues of F'F and their vectors
    s = np.clip(s, 0.0, None)
    eps = 1e-5
    evidences = []
    for label in np.unique(labels):
        y = (np.asarray(labels) == label).astype(np.float64)
        projected = v.T @ (f.T @ y)
        alpha, beta, lam = 1.0, 1.0, 1.0
        for _ in range(iterations):
            gamma = float((s / (s + lam)).sum())
            m = v @ (projected * beta / (alpha + beta * s))
            alpha_de = float(m @ m)
            alpha = gamma / (alpha_de + eps)
            beta_de = float(((y - f @ m) ** 2).sum())
            beta = (n - gamma) / (beta_de + eps)
            new_lam = alpha / beta
            if abs(new_lam - lam) / lam < 0.01:
                break
            lam = new_lam
        evidence = (
            d / 2.0 * np.log(alpha)
            + n / 2.0 * np.log(beta)
            - 0.5 * np.sum(np.log(alpha + beta * s))
            - beta / 2.0 * (beta_de + eps)
            - alpha / 2.0 * (alpha_de + eps)
            - n / 2.0 * np.log(2 * np.pi)
        )
        evidences.append(evidence / n)
    return float(np.mean(evidences))
