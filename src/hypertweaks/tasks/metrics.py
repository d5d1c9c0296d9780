"""Classification metrics from logits: loss, accuracy, macro-F1; ROC AUC and defect recall for two
classes (`positive` is the defect class: its recall at the argmax threshold)."""

from __future__ import annotations

import numpy as np
import torch
from sklearn.metrics import f1_score, recall_score, roc_auc_score
from torch.nn import functional as F


def macro_f1(truth: np.ndarray, predicted: np.ndarray) -> float:
    """The unweighted mean of the classes' F1 (a class never true nor predicted scores 0)."""
    return float(f1_score(truth, predicted, average="macro", zero_division=0))


def classification_metrics(
    logits: torch.Tensor, labels: torch.Tensor, positive: int = 1
) -> dict[str, float]:
    logits, labels = logits.float().cpu(), labels.cpu()
    predicted = logits.argmax(dim=1).numpy()
    truth = labels.numpy()
    metrics = {
        "loss": float(F.cross_entropy(logits, labels)),
        "accuracy": float((predicted == truth).mean()),
        "macro_f1": macro_f1(truth, predicted),
    }
    if logits.shape[1] == 2:
        scores = torch.softmax(logits, dim=1)[:, positive].numpy()
        is_positive = truth == positive
        both = len(np.unique(is_positive)) == 2
        metrics["roc_auc"] = float(roc_auc_score(is_positive, scores)) if both else 0.5
        metrics["defect_recall"] = float(
            recall_score(is_positive, predicted == positive, zero_division=0)
        )
    return metrics
