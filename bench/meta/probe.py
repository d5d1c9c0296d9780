"""Task similarity as meta-features: LogME of the frozen MiniLM's mean-pooled features (middle
and last layer) on each task's training cut, and the validation accuracy of a logistic
regression on them (a linear probe: comparable across tasks, which LogME, averaged over
one-hot classes, is not), added to bench/results/meta/<cut>/tasks/*.json.
What a strategy may use to choose freezing for a task it has never seen (issue 16, lever 2):
measured on train only, before any fine-tuning, as the product would."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

from bench.meta import META_DIR
from bench.tasks import Cut, load_task, model_path


@torch.no_grad()
def pooled_features(text, split, layers: tuple[int, ...]) -> dict[int, np.ndarray]:
    """Mean over each text's tokens of the hidden states after the given layers (0: the
    embeddings), from the pretrained encoder without any head."""
    from transformers import AutoModel

    model = AutoModel.from_pretrained(model_path()).eval()
    data = text.dataset(split, False)
    out: dict[int, list[np.ndarray]] = {layer: [] for layer in layers}
    for start in range(0, len(data), 64):
        inputs, _ = data.collate(list(range(start, min(start + 64, len(data)))))
        hidden = model(**inputs, output_hidden_states=True).hidden_states
        mask = inputs["attention_mask"].unsqueeze(-1).float()
        for layer in layers:
            out[layer].append(((hidden[layer] * mask).sum(1) / mask.sum(1)).numpy())
    return {layer: np.concatenate(chunks) for layer, chunks in out.items()}


def probe(tasks: list[str], cut: Cut, data_root: Path | None = None) -> dict[str, dict]:
    from sklearn.linear_model import LogisticRegression

    from bench.meta.logme import logme

    found = {}
    for task in tasks:
        info_path = META_DIR / cut.key / "tasks" / f"{task}.json"
        if not info_path.exists():
            continue
        text, _ = load_task(task, cut, "cpu", data_root)
        features = pooled_features(text, text.splits.train, (3, 6))
        held_out = pooled_features(text, text.splits.validation, (3, 6))
        test = pooled_features(text, text.splits.test, (3, 6))
        labels = np.asarray(text.splits.train.labels)
        val_labels = np.asarray(text.splits.validation.labels)
        test_labels = np.asarray(text.splits.test.labels)
        scores, tested = {}, {}
        for layer, train_features in features.items():
            scores[f"logme_layer{layer}"] = round(logme(train_features, labels), 4)
            probe_model = LogisticRegression(max_iter=2000).fit(train_features, labels)
            accuracy = probe_model.score(held_out[layer], val_labels)
            scores[f"linear_probe_layer{layer}"] = round(float(accuracy), 4)
            # its test score: not a meta-feature, only for scoring a strategy that picks it
            tested[f"linear_probe_layer{layer}"] = round(
                float(probe_model.score(test[layer], test_labels)), 4
            )
        info = json.loads(info_path.read_text())
        info["meta_features"].update(scores)
        info["probe_test_accuracy"] = tested
        info_path.write_text(json.dumps(info))
        found[task] = scores
        print(f"[probe] {task}: {scores} test {tested}", flush=True)
    return found
