"""Text classification with a Hugging Face encoder: a linear head on its mean-pooled states, alone
on the frozen encoder (head-only) or fine-tuned with it from a linear probe (LP-FT)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn
from torch.utils.data import Dataset

from hypertweaks.atomic import save_torch
from hypertweaks.config import Experiment
from hypertweaks.data import DataError, Split, load_splits, read_table, require_columns
from hypertweaks.models import (
    RESAVE,
    LayerStack,
    ModelError,
    check_max_length,
    default_dropout,
    error_reason,
    largest_block_list,
    layer_stack,
    load_hf_config,
    looks_like_path,
    quiet_transformers,
    unreadable,
    with_dropout,
)
from hypertweaks.space import Recipe
from hypertweaks.tasks.base import Features, IndexedExamples, TaskBase
from hypertweaks.tasks.metrics import classification_metrics
from hypertweaks.train import computes_bfloat16, resolve_device


def unusable_texts(values: Sequence[Any]) -> tuple[list[int], list[int]]:
    """Positions of the texts no model can use: (empty or missing, lists or objects). Training
    drops the first kind and refuses the second; predict refuses (or skips) both."""
    empty, nested = [], []
    for i, value in enumerate(values):
        if isinstance(value, list | tuple | dict | set | np.ndarray):
            nested.append(i)
        elif pd.isna(value) or not str(value).strip():
            empty.append(i)
    return empty, nested


def unusable_message(
    values: Sequence[Any], empty: list[int], nested: list[int], noun: str = "row", base: int = 0
) -> str:
    """What is wrong with the texts at these positions, naming them (from `base`) as `noun`s."""

    def at(positions: list[int]) -> str:
        shown = ", ".join(str(i + base) for i in positions[:5])
        more = f", ... ({len(positions)} in all)" if len(positions) > 5 else ""
        return f"{noun}{'s' if len(positions) > 1 else ''} {shown}{more}"

    parts, total = [], len(values)
    if empty:
        verb = "is" if len(empty) == 1 else "are"
        parts.append(f"{len(empty)} of {total} texts {verb} empty or missing ({at(empty)})")
    if nested:
        what = "is a list or object" if len(nested) == 1 else "are lists or objects"
        count = str(len(nested)) if parts else f"{len(nested)} of {total} texts"
        example = repr(values[nested[0]])
        example = example if len(example) <= 60 else example[:57] + "..."
        parts.append(f"{count} {what}, not a single text ({at(nested)}: {example})")
    return " and ".join(parts) + f", counting {noun}s from {base}"


def drop_empty_texts(max_dropped_fraction: float, column: str):
    def clean(table: pd.DataFrame, where: str) -> tuple[pd.DataFrame, str | None]:
        texts = table[column]
        values = texts.tolist()
        positions, nested = unusable_texts(values)
        if nested:
            raise DataError(
                f"{where}: {unusable_message(values, [], nested)}; give each example a single "
                f"text in the text column {column!r} (e.g. join a list into one string)"
            )
        if not positions:
            return table.assign(**{column: texts.astype(str)}), None
        empty = np.zeros(len(table), dtype=bool)
        empty[positions] = True
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


HEAD_FILE = "head.safetensors"  # a MeanPooledClassifier's head, beside its encoder's folder


def mean_pool(encoder: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor):
    """The mean of the encoder's last hidden states over the real (unpadded) tokens."""
    hidden = encoder(input_ids=input_ids, attention_mask=attention_mask)[0]
    mask = attention_mask.unsqueeze(-1).to(hidden.dtype)
    return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)


class MeanPooledClassifier(nn.Module):
    """A linear classifier on the mean of the encoder's last hidden states over the real tokens:
    every text model hypertweaks trains. Mean pooling, not the CLS pooler: sentence encoders are
    trained for it and their pooler is not, and on frozen features it is the better probe for
    BERT-style encoders too."""

    def __init__(self, encoder: nn.Module, num_labels: int, dropout: float):
        super().__init__()
        self.encoder = encoder
        self.dropout = nn.Dropout(dropout)
        self.head = nn.Linear(encoder.config.hidden_size, num_labels)

    def pool(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return mean_pool(self.encoder, input_ids, attention_mask)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(self.dropout(features))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, **_: Any):
        from transformers.modeling_outputs import SequenceClassifierOutput

        return SequenceClassifierOutput(logits=self.classify(self.pool(input_ids, attention_mask)))


class LinearProbe(nn.Module):
    """The head of a MeanPooledClassifier alone, trained on cached features."""

    def __init__(self, hidden_size: int, num_labels: int):
        super().__init__()
        self.head = nn.Linear(hidden_size, num_labels)

    def classify(self, features: torch.Tensor) -> torch.Tensor:
        return self.head(features)


def load_encoder(source: str | Path, dropout: float | None = None) -> nn.Module:
    """The pretrained encoder without a head (every dropout set to `dropout` when given)."""
    from transformers import AutoModel

    quiet_transformers()
    source = str(source)
    overrides = with_dropout(load_hf_config(source), dropout) if dropout is not None else {}
    path = str(Path(source).expanduser()) if looks_like_path(source) else source
    return AutoModel.from_pretrained(path, **overrides)


def count_layers(config: Any) -> int:
    """The encoder's freezable layers, from its architecture alone: built on the meta device,
    no weights are read or allocated."""
    from transformers import AutoModel

    with torch.device("meta"):
        encoder = AutoModel.from_config(config)
    return len(layer_stack(encoder, body=encoder).blocks)


def load_saved(directory: Path) -> nn.Module:
    """A classifier written by `TextClassification.save` (its tokenizer is in the same folder):
    a mean-pooled classifier (the encoder's folder plus head.safetensors), or a Hugging Face
    sequence classifier (models saved before LP-FT, or by the bench's CLS-pooler classifier,
    bench/text_heads.py). A folder whose head is missing or unreadable is refused: a random head
    would answer in its place."""
    from safetensors import SafetensorError

    head_file = directory / HEAD_FILE
    if head_file.is_file():
        from safetensors.torch import load_file

        try:
            head = {k.removeprefix("head."): v for k, v in load_file(head_file).items()}
            num_labels = head["weight"].shape[0]
        except (SafetensorError, OSError, KeyError, IndexError) as error:
            raise ModelError(
                f"{head_file} cannot be read ({error_reason(error)}): it holds the classifier's "
                f"head, without which the model cannot predict; {RESAVE}"
            ) from None
        model = MeanPooledClassifier(_loaded(load_encoder, directory), num_labels, 0.0)
        try:
            model.head.load_state_dict(head)
        except RuntimeError as error:
            raise ModelError(
                f"{head_file} does not fit the encoder beside it ({error_reason(error)}); {RESAVE}"
            ) from None
        return model
    config = directory / "config.json"
    try:
        architectures = json.loads(config.read_text()).get("architectures") or []
    except (OSError, ValueError, AttributeError) as error:
        raise unreadable(config, error) from None
    if not any(str(name).endswith("ForSequenceClassification") for name in architectures):
        raise ModelError(
            f"{head_file} is missing: {directory} holds the encoder of a classifier but not its "
            f"head, so every prediction would come from a random head; {RESAVE}"
        )
    from transformers import AutoModelForSequenceClassification

    return _loaded(AutoModelForSequenceClassification.from_pretrained, directory)


def _loaded(loader, directory: Path) -> nn.Module:
    """The weights in `directory`, or a ModelError saying they cannot be read."""
    from safetensors import SafetensorError

    try:
        return loader(directory)
    except (SafetensorError, OSError, ValueError) as error:
        raise ModelError(
            f"the model's weights in {directory} cannot be read ({error_reason(error)}); {RESAVE}"
        ) from None


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


class FrozenStates(EncodedTexts):
    """Tokens with the output of the encoder's lowest `depth` layers cached (they are frozen for
    the whole recipe): fine-tuning runs only the layers above them (`lowest_layers_cached`)."""

    def __init__(self, tokens: EncodedTexts, states: torch.Tensor, depth: int):
        super().__init__(tokens.ids, tokens.lengths, tokens.labels)
        self.states, self.depth = states, depth

    def collate(self, indices: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        inputs, labels = super().collate(indices)
        width = inputs["input_ids"].shape[1]
        inputs["frozen_states"] = self.states[torch.as_tensor(indices), :width]
        inputs["frozen_depth"] = torch.full((len(indices),), self.depth)  # per row: micro-batches
        return inputs, labels


class _Reached(Exception):
    """Stops a forward pass once the layer whose output is cached has run."""


@contextmanager
def lowest_layers_cached(
    blocks: Sequence[nn.Module], states: torch.Tensor, returns_tuple: bool
) -> Iterator[None]:
    """Within it, the lowest `len(blocks)` layers of an encoder do not compute: each passes its
    input on and the last hands over `states`, their output cached from the frozen layers (the
    encoder's own loop, masks and position biases are left as they are)."""

    def passed(value: torch.Tensor):
        return (value,) if returns_tuple else value

    try:
        for block in blocks[:-1]:
            block.forward = lambda hidden, *args, **kwargs: passed(hidden)
        blocks[-1].forward = lambda hidden, *args, **kwargs: passed(states)
        yield
    finally:
        for block in blocks:
            del block.forward


def encoder_stack(model: MeanPooledClassifier) -> LayerStack:
    """The classifier's layers for freezing. The encoder's parameters outside its layers (MPNet's
    relative position bias, which every layer reads; BERT's pooler, unused) train only when
    nothing is frozen, as the embeddings do: a frozen layer computes what the pretrained one did."""
    stack = layer_stack(model, body=model.encoder)
    head = {id(p) for p in model.head.parameters()}
    shared = [p for p in stack.top if id(p) not in head]
    top = [p for p in stack.top if id(p) in head]
    return replace(stack, bottom=stack.bottom + shared, top=top)


# The most memory the cached output of the frozen layers may take for one split; past it the
# recipe runs them at every step instead (same result, more compute).
FROZEN_STATES_BYTES = 2 * 1024**3


def truncation_note(tokenizer, texts: list[str], max_length: int) -> str | None:
    """Training texts longer than max_length are cut to it: say how many, so that a user with
    long texts knows the model reads only their start."""
    lengths = [len(ids) for ids in tokenizer(texts)["input_ids"]]
    cut = sum(length > max_length for length in lengths)
    if not cut:
        return None
    return (
        f"train: {cut} of {len(texts)} texts ({cut / len(texts):.0%}) are longer than max_length "
        f"{max_length} tokens (the longest {max(lengths)}) and are cut to it; a larger "
        "max_length reads more of each, at more compute"
    )


class TextClassification(TaskBase):
    cpu_bfloat16 = True

    def __init__(self, experiment: Experiment, cache_dir: Path):
        super().__init__(experiment, cache_dir)
        self.model_source = experiment.model
        self._block_returns_tuple = False  # the encoder's layers return a tuple (_pass)
        # The default recipe's frozen depth, where it freezes layers (a larger model, search.py):
        # the pass that computes the frozen features keeps that depth's output too.
        self.default_frozen_depth = 0

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
        self.hidden_size = config.hidden_size  # sizes the cache of frozen layers' output
        self.tokenizer = self._load_tokenizer(exp.model)
        self.tokenizer_key = json.dumps(
            [
                type(self.tokenizer).__name__,
                self.tokenizer.name_or_path,
                len(self.tokenizer),
                exp.max_length,
            ]
        )
        self.num_layers = count_layers(config)
        if note := truncation_note(self.tokenizer, self.splits.train.inputs, exp.max_length):
            self.splits.notes.append(note)

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

    def trains_head_only(self, recipe: Recipe) -> bool:
        """Every layer frozen for every epoch: a linear head on cached mean-pooled features."""
        return recipe.freeze_layers >= self.num_layers and not recipe.gradual_unfreeze

    def build(self, recipe: Recipe, probe: bool = True):
        """The mean-pooled classifier: a head-only recipe's head on the frozen encoder, or, for a
        recipe that trains some layers, its head from a linear probe on the frozen features
        (LP-FT, Kumar et al. 2022). The simulator's evidence for LP-FT over a fresh head or the
        CLS pooler: bench/results/meta/<cut>/SIMULATED.md. `probe=False`: a fresh head (only to
        time training steps, larger_models.py)."""
        if self.trains_head_only(recipe):
            encoder = load_encoder(self.model_source)
            model = MeanPooledClassifier(encoder, len(self.splits.classes), recipe.dropout)
            return model, encoder_stack(model)
        encoder = load_encoder(self.model_source, recipe.dropout)
        model = MeanPooledClassifier(encoder, len(self.splits.classes), recipe.dropout)
        if probe:
            if 0 < recipe.freeze_layers < self.num_layers:  # one pass: the probe's and the cache
                for split in (self.splits.train, self.splits.validation):
                    self._frozen_states(split, recipe.freeze_layers, encoder)
            model.head.load_state_dict(self._probe_head(encoder).state_dict())
        return model, encoder_stack(model)

    def _probe_head(self, encoder: nn.Module) -> nn.Linear:
        """The head fine-tuning starts from. `encoder` (pretrained, not trained yet) computes
        the features where they are not cached."""
        return self.fit_linear_probe(lambda split: self._features(split, encoder), LinearProbe).head

    def dataset(self, split: Split, train: bool, recipe: Recipe | None = None) -> Dataset:
        if recipe is not None and self.trains_head_only(recipe):
            return self._features(split)
        tokens = self.cached("tokens", split, lambda: self._encode(split))
        depth = 0 if recipe is None else recipe.freeze_layers
        if (
            0 < depth < self.num_layers
            and (states := self._frozen_states(split, depth)) is not None
        ):
            return FrozenStates(tokens, states, depth)
        return tokens

    def _frozen_states(
        self, split: Split, depth: int, encoder: nn.Module | None = None
    ) -> torch.Tensor | None:
        """The output of the pretrained encoder's lowest `depth` layers for every row of the split
        (padded as its tokens), computed once per study and kept in memory: a recipe that freezes
        them never runs them again (never paying twice for the same work). None, and the layers
        run at every step, where they would take more than FROZEN_STATES_BYTES, or for an encoder
        whose layers cannot be passed over so (checked on a few rows)."""
        if self._states_too_large(split):
            return None
        kind = f"states-{depth}"
        for key in [k for k in self._cache if k[0].startswith("states-") and k[0] != kind]:
            del self._cache[key]  # one depth in memory at a time: a search may try many
        return self.cached(kind, split, lambda: self._pass(split, encoder, depth)[1])

    def _states_too_large(self, split: Split) -> bool:
        tokens = self.cached("tokens", split, lambda: self._encode(split))
        return tokens.ids.numel() * self.hidden_size * 4 > FROZEN_STATES_BYTES

    def _features(self, split: Split, encoder: nn.Module | None = None) -> Features:
        features = self.cached("features", split, lambda: self.pooled_features(split, encoder))
        return Features(features, torch.as_tensor(split.labels))

    def _features_path(self, split: Split) -> Path:
        device = resolve_device(self.experiment.device)
        kind = "mean-pooled-bfloat16" if computes_bfloat16(self, device) else "mean-pooled"
        digest = hashlib.sha256(json.dumps([kind, self.tokenizer_key]).encode())
        digest.update(str(self.model_source).encode())
        for text in split.inputs:
            digest.update(text.encode() + b"\0")
        return self.cache_dir / f"features-{digest.hexdigest()[:24]}.pt"

    def pooled_features(self, split: Split, encoder: nn.Module | None = None) -> torch.Tensor:
        """The frozen encoder's mean-pooled features: one forward pass per study (never paying
        twice), on disk beside the tokens. `encoder`: the pretrained encoder already in memory,
        if any (else it is loaded)."""
        path = self._features_path(split)
        if path.exists():
            return torch.load(path, weights_only=True)
        depth = self.default_frozen_depth
        if not 0 < depth < self.num_layers or self._states_too_large(split):
            return self._pass(split, encoder)[0]
        features, states = self._pass(split, encoder, depth)
        self._cache.setdefault((f"states-{depth}", split.key), states)
        return features

    @torch.no_grad()
    def _pass(
        self, split: Split, encoder: nn.Module | None, depth: int = 0
    ) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """One forward pass of the pretrained encoder (`encoder`, if in memory) over the split, as
        in evaluation: its mean-pooled features, unless they are on disk already (then the pass
        stops at layer `depth`), and, for a `depth`, the output of the lowest `depth` layers."""
        path = self._features_path(split)
        whole = not path.exists()
        device = resolve_device(self.experiment.device)
        encoder = (encoder if encoder is not None else load_encoder(self.model_source)).to(device)
        training = encoder.training
        encoder.eval()  # no dropout: what the pretrained model computes
        blocks = list(largest_block_list(encoder).children())
        seen: dict[str, Any] = {}

        def keep(module, args, output):
            seen["tuple"] = isinstance(output, tuple)
            seen["states"] = output[0] if seen["tuple"] else output
            if not whole:
                raise _Reached

        hook = blocks[depth - 1].register_forward_hook(keep) if depth else None
        tokens = self.cached("tokens", split, lambda: self._encode(split))
        chunks, states = [], None
        try:
            for start in range(0, len(tokens), 64):
                inputs, _ = tokens.collate(list(range(start, min(start + 64, len(tokens)))))
                ids, mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
                try:
                    with self.autocast(device):
                        chunks.append(mean_pool(encoder, ids, mask).float().cpu())
                except _Reached:
                    pass
                if depth:
                    chunk = seen["states"].float().cpu()
                    if states is None:
                        states = torch.zeros(len(tokens), tokens.ids.shape[1], chunk.shape[-1])
                    states[start : start + len(chunk), : chunk.shape[1]] = chunk
        finally:
            if hook is not None:
                hook.remove()
        features = None
        if whole:
            features = torch.cat(chunks) if chunks else torch.zeros(0, encoder.config.hidden_size)
            save_torch(features, path)
        if states is not None:
            if self._passes_over(encoder, blocks[:depth], tokens, states, seen["tuple"]):
                self._block_returns_tuple = seen["tuple"]
            else:
                states = None
        encoder.train(training)
        return features, states

    @torch.no_grad()
    def _passes_over(self, encoder, blocks, tokens, states, returns_tuple: bool) -> bool:
        """Whether the encoder, its lowest layers passed over, computes what it does whole."""
        device = next(encoder.parameters()).device
        inputs, _ = tokens.collate(list(range(min(4, len(tokens)))))
        ids, mask = inputs["input_ids"].to(device), inputs["attention_mask"].to(device)
        with self.autocast(device):
            whole = mean_pool(encoder, ids, mask).float()
            cached = states[: len(ids), : ids.shape[1]].to(device)
            with lowest_layers_cached(blocks, cached, returns_tuple):
                passed = mean_pool(encoder, ids, mask).float()
        # in bfloat16 the two may differ by its rounding: as much as it differs from float32
        rounding = (whole - mean_pool(encoder, ids, mask)).abs().max().item()
        return torch.allclose(whole, passed, atol=1e-4 + 2 * rounding, rtol=1e-3)

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
        if "features" in inputs:  # the frozen encoder ran once already: only the head trains
            return model.classify(inputs["features"])
        if "frozen_states" in inputs:  # its lowest layers ran once already: the rest trains
            inputs = dict(inputs)
            states, depth = inputs.pop("frozen_states"), int(inputs.pop("frozen_depth")[0])
            blocks = list(largest_block_list(model).children())[:depth]  # any classifier
            with lowest_layers_cached(blocks, states, self._block_returns_tuple):
                return model(**inputs).logits
        return model(**inputs).logits

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return classification_metrics(logits, labels)

    def save(self, model: nn.Module, directory: Path) -> None:
        if isinstance(model, MeanPooledClassifier):
            from safetensors.torch import save_file

            model.encoder.save_pretrained(directory)
            head = {f"head.{k}": v.contiguous() for k, v in model.head.state_dict().items()}
            save_file(head, directory / HEAD_FILE)
        else:
            model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        labels = {
            "task": "text-classification",  # the folder's kind, read by predict and evaluate
            "classes": [
                c if isinstance(c, int | float | str) else str(c) for c in self.splits.classes
            ],
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
