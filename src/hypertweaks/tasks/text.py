"""Text classification with a Hugging Face encoder and a sequence-classification head."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pandas as pd
import torch
from torch import nn

from hypertweaks.atomic import save_torch
from hypertweaks.config import Experiment
from hypertweaks.data import DataError, Split, load_splits, read_table, require_columns
from hypertweaks.models import (
    check_max_length,
    default_dropout,
    layer_stack,
    load_hf_config,
    load_text_classifier,
    looks_like_path,
)
from hypertweaks.space import Recipe
from hypertweaks.tasks.base import IndexedExamples, TaskBase
from hypertweaks.tasks.metrics import classification_metrics


def drop_empty_texts(max_dropped_fraction: float, column: str):
    def clean(table: pd.DataFrame, where: str) -> tuple[pd.DataFrame, str | None]:
        texts = table[column]
        empty = texts.isna() | (texts.astype(str).str.strip() == "")
        if not empty.any():
            return table.assign(**{column: texts.astype(str)}), None
        fraction = float(empty.mean())
        if fraction > max_dropped_fraction:
            raise DataError(
                f"{where}: {int(empty.sum())} of {len(table)} texts ({fraction:.0%}) are empty "
                f"or missing, more than max_dropped_fraction={max_dropped_fraction}; check the "
                f"text column {column!r}"
            )
        kept = table.loc[~empty]
        return kept.assign(**{column: kept[column].astype(str)}), (
            f"{where}: dropped {int(empty.sum())} empty or missing texts"
        )

    return clean


def load_saved(directory: Path) -> nn.Module:
    """A classifier written by `TextClassification.save` (its tokenizer is in the same folder)."""
    from transformers import AutoModelForSequenceClassification

    return AutoModelForSequenceClassification.from_pretrained(directory)


class EncodedTexts(IndexedExamples):
    """Token ids padded to max_length once; batches are trimmed to their longest row."""

    def __init__(self, ids: torch.Tensor, lengths: torch.Tensor, labels: torch.Tensor):
        self.ids, self.lengths, self.labels = ids, lengths, labels

    def collate(self, indices: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        index = torch.as_tensor(indices)
        width = int(self.lengths[index].max())
        ids = self.ids[index, :width].long()
        mask = torch.arange(width)[None, :] < self.lengths[index, None]
        return {"input_ids": ids, "attention_mask": mask.long()}, self.labels[index]


class TextClassification(TaskBase):
    def __init__(self, experiment: Experiment, cache_dir: Path):
        super().__init__(experiment, cache_dir)
        self.model_source = experiment.model

    def prepare(self) -> None:
        exp = self.experiment
        config = load_hf_config(exp.model)  # fails fast on a bad model name
        exp.max_length = check_max_length(exp.max_length, config, exp.model, exp._max_length_given)
        tables = {}
        for role in ("train", "validation", "test"):
            path = getattr(exp, role)
            if path is None:
                tables[role] = None
                continue
            table = read_table(path, role)
            require_columns(
                table, {"text_column": exp.text_column, "label_column": exp.label_column}, path
            )
            tables[role] = (table, str(path))
        self.splits = load_splits(
            tables,
            exp.text_column,
            exp.label_column,
            exp.validation_fraction,
            exp.seed,
            clean=drop_empty_texts(exp.max_dropped_fraction, exp.text_column),
        )
        self.pretrained_dropout = default_dropout(config)
        self.tokenizer = self._load_tokenizer(exp.model)
        self.tokenizer_key = json.dumps(
            [
                type(self.tokenizer).__name__,
                self.tokenizer.name_or_path,
                len(self.tokenizer),
                exp.max_length,
            ]
        )
        probe = load_text_classifier(exp.model, len(self.splits.classes), self.id2label)
        self.num_layers = len(layer_stack(probe).blocks)
        del probe

    @property
    def id2label(self) -> dict[int, str]:
        return {i: str(name) for i, name in enumerate(self.splits.classes)}

    def _load_tokenizer(self, model: str):
        from transformers import AutoTokenizer

        source = str(Path(model).expanduser()) if looks_like_path(model) else model
        tokenizer = AutoTokenizer.from_pretrained(source)
        if tokenizer.pad_token is None:
            tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
        return tokenizer

    def build(self, recipe: Recipe):
        model = load_text_classifier(
            self.model_source, len(self.splits.classes), self.id2label, recipe.dropout
        )
        return model, layer_stack(model)

    def dataset(self, split: Split, train: bool, recipe: Recipe | None = None) -> EncodedTexts:
        return self.cached("tokens", split, lambda: self._encode(split))

    def _encode(self, split: Split) -> EncodedTexts:
        """Tokenize once per study: the cache is keyed by tokenizer, max length and the texts."""
        digest = hashlib.sha256()
        digest.update(self.tokenizer_key.encode())
        for text in split.inputs:
            digest.update(text.encode() + b"\0")
        path = self.cache_dir / f"tokens-{digest.hexdigest()[:24]}.pt"
        if path.exists():
            cached = torch.load(path, weights_only=True)
        else:
            encoded = self.tokenizer(
                split.inputs,
                truncation=True,
                max_length=self.experiment.max_length,
                padding="longest",  # batches are trimmed anyway: never pad beyond the data
                return_tensors="pt",
            )
            cached = {
                "ids": encoded["input_ids"].to(torch.int32),
                "lengths": encoded["attention_mask"].sum(dim=1),
            }
            save_torch(cached, path)
        return EncodedTexts(cached["ids"], cached["lengths"], torch.as_tensor(split.labels))

    def forward(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**inputs).logits

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return classification_metrics(logits, labels)

    def save(self, model: nn.Module, directory: Path) -> None:
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        labels = {
            "classes": [
                c if isinstance(c, int | float | str) else str(c) for c in self.splits.classes
            ]
        }
        (directory / "labels.json").write_text(json.dumps(labels, indent=2, default=str))

    def load(self, directory: Path) -> nn.Module:
        return load_saved(directory)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_source,
            "num_layers": self.num_layers,
            "pretrained_dropout": self.pretrained_dropout,
        }
