"""Causal language models (instruction data, prompt/completion, plain text), fine-tuned with LoRA
adapters through peft, or fully.

The loss is on the completion / assistant tokens only. Exact match is measured with teacher
forcing: greedy decoding produces the target exactly when, at every target position, the most
likely next token given the true prefix is the target token (the end-of-turn token included), so
it comes from the same forward pass as the validation loss, without generating.
"""

from __future__ import annotations

import hashlib
import json
import math
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from hypertweaks.config import Experiment
from hypertweaks.data import DataError, Split, Splits, stratified_split
from hypertweaks.data.jsonl import read_jsonl, record_format
from hypertweaks.models import (
    ModelError,
    default_dropout,
    largest_block_list,
    layer_stack,
    load_hf_config,
    looks_like_path,
    quiet_transformers,
    with_dropout,
)
from hypertweaks.space import Recipe
from hypertweaks.tasks.base import IndexedExamples, TaskBase

IGNORE = -100  # label of a token that is not learned (prompt, padding)
SHORT_TARGET = 16  # completions of at most this many tokens are labels: exact match is measured
META_FILE = "hypertweaks.json"


class TokenExamples(IndexedExamples):
    """Token ids and per-token labels of variable length; batches are padded to their longest
    row, and training batches are grouped by length so little compute goes to padding."""

    def __init__(self, ids: list[torch.Tensor], targets: list[torch.Tensor], pad_id: int):
        self.ids, self.targets, self.pad_id = ids, targets, pad_id
        self.lengths = torch.tensor([len(row) for row in ids])

    def __len__(self) -> int:
        return len(self.ids)

    def collate(self, indices: list[int]) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        width = int(self.lengths[indices].max())
        ids = torch.full((len(indices), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(indices), width), IGNORE, dtype=torch.long)
        mask = torch.zeros((len(indices), width), dtype=torch.long)
        for row, index in enumerate(indices):
            size = len(self.ids[index])
            ids[row, :size], labels[row, :size], mask[row, :size] = (
                self.ids[index],
                self.targets[index],
                1,
            )
        return {"input_ids": ids, "attention_mask": mask}, labels

    def batches(self, batch_size: int, drop_last: bool, generator: torch.Generator):
        return LengthGroupedBatches(self.lengths, batch_size, drop_last, generator)


class LengthGroupedBatches:
    """Shuffled batches of similar length (as transformers' group_by_length): shuffle, sort
    within windows of 50 batches, cut into batches, shuffle the batches."""

    def __init__(self, lengths: torch.Tensor, size: int, drop_last: bool, generator):
        self.lengths, self.size = lengths, size
        self.drop_last, self.generator = drop_last, generator

    def __len__(self) -> int:
        n = len(self.lengths)
        return n // self.size if self.drop_last else math.ceil(n / self.size)

    def __iter__(self):
        order = torch.randperm(len(self.lengths), generator=self.generator).tolist()
        window = self.size * 50
        batches = []
        for start in range(0, len(order), window):
            chunk = sorted(order[start : start + window], key=lambda i: -int(self.lengths[i]))
            batches += [chunk[i : i + self.size] for i in range(0, len(chunk), self.size)]
        if self.drop_last:
            batches = [b for b in batches if len(b) == self.size]
        for b in torch.randperm(len(batches), generator=self.generator).tolist():
            yield batches[b]


def _source(model: str) -> str:
    return str(Path(model).expanduser()) if looks_like_path(model) else model


def load_causal_lm(source: str, gguf_file: str | None = None, dropout: float | None = None):
    from transformers import AutoModelForCausalLM

    quiet_transformers()
    extra = {"gguf_file": gguf_file} if gguf_file else {}
    overrides = {}
    if dropout is not None:
        overrides = with_dropout(load_hf_config(source, **extra), dropout)
    try:
        model = AutoModelForCausalLM.from_pretrained(_source(source), **extra, **overrides)
    except (OSError, ValueError) as error:
        raise ModelError(
            f"cannot load causal language model {source!r}"
            + (f" from GGUF file {gguf_file!r}" if gguf_file else "")
            + f": {str(error).splitlines()[0]}"
        ) from None
    if gguf_file:
        # transformers dequantises GGUF weights to float32 but still marks the model as
        # quantized, which forbids saving it; the weights are plain tensors, so unmark it.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    return model


def load_tokenizer(source: str, gguf_file: str | None = None):
    from transformers import AutoTokenizer

    extra = {"gguf_file": gguf_file} if gguf_file else {}
    tokenizer = AutoTokenizer.from_pretrained(_source(source), **extra)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token or tokenizer.unk_token
    return tokenizer


def lora_targets(model: nn.Module, which: str) -> list[str]:
    """Names of the linear layers inside the blocks that get adapters: every one ('all-linear'),
    or those inside the attention modules (q/k/v/o_proj, c_attn, ...)."""
    from transformers.pytorch_utils import Conv1D

    names = set()
    for name, module in largest_block_list(model).named_modules():
        parts = name.split(".")
        if not isinstance(module, nn.Linear | Conv1D):
            continue
        if which == "all-linear" or any("attn" in p or "attention" in p for p in parts[:-1]):
            names.add(parts[-1])
    if not names:
        raise ModelError(f"found no {which} layers for LoRA in {type(model).__name__}")
    return sorted(names)


def _blocks_name(model: nn.Module) -> str:
    blocks = largest_block_list(model)
    return next(name for name, module in model.named_modules() if module is blocks).split(".")[-1]


class CausalLM(TaskBase):
    """The causal-lm task: what the trainer and the search need (see tasks/base.Task), plus
    `loss_sum`, `count_targets` and `evaluate` for a loss over target tokens."""

    cpu_bfloat16 = True

    def __init__(self, experiment: Experiment, cache_dir: Path):
        super().__init__(experiment, cache_dir)
        self.model_source = experiment.model

    # -- data -----------------------------------------------------------------------------
    def prepare(self) -> None:
        exp = self.experiment
        records = {
            role: read_jsonl(getattr(exp, role), role, exp.text_column)
            for role in ("train", "validation", "test")
            if getattr(exp, role) is not None
        }
        kinds = {role: _format_of(rows) for role, rows in records.items()}
        if len(set(kinds.values())) > 1:
            shown = ", ".join(f"{role}: {kind}" for role, kind in kinds.items())
            raise DataError(f"the files use different formats ({shown}); use one format")
        self.format = kinds["train"]

        cached = self._cache_folder()
        if cached is not None and (cached / "config.json").exists():
            config, self.tokenizer = load_hf_config(str(cached)), load_tokenizer(str(cached))
        else:
            config = load_hf_config(exp.model, **self._gguf())  # fails fast on a bad model name
            self.tokenizer = load_tokenizer(exp.model, exp.gguf_file)
        if self.format == "messages" and not self.tokenizer.chat_template:
            raise DataError(
                f"the data is in chat format ('messages') but the tokenizer of {exp.model!r} has "
                "no chat template; use prompt/completion fields, or a chat (instruct) model"
            )
        context = getattr(config, "max_position_embeddings", None)
        self.max_length = exp.max_length or min(512, context or 512)
        if context is not None and self.max_length > context:
            raise DataError(
                f"max_length {exp.max_length} is longer than the model's context of {context} "
                f"tokens; set max_length to at most {context}"
            )
        self.pretrained_dropout = default_dropout(config)
        self.num_layers = int(config.num_hidden_layers) - 1  # at least one layer trains

        notes: list[str] = []
        encoded = {role: self._encode_all(rows, role, notes) for role, rows in records.items()}
        self.short_targets = self.format != "text" and all(
            int(t.ne(IGNORE).sum()) <= SHORT_TARGET for rows in encoded.values() for _, t, _ in rows
        )
        if exp.metric == "exact_match" and not self.short_targets:
            raise DataError(
                f"metric exact_match needs short completions (at most {SHORT_TARGET} tokens, "
                "e.g. labels) in prompt/completion or chat data; use metric loss or perplexity"
            )
        self.splits = self._splits(encoded, notes)
        self.base_source, self.base_gguf = self._cached_base()

    def _gguf(self) -> dict[str, str]:
        return {"gguf_file": self.experiment.gguf_file} if self.experiment.gguf_file else {}

    def _encode_all(self, rows: list[dict[str, Any]], role: str, notes: list[str]) -> list:
        limit, out, truncated, dropped = self.max_length, [], 0, 0
        for row in rows:
            ids, targets, label = self._encode(row)
            if len(ids) > limit:
                truncated += 1
                ids, targets = ids[:limit], targets[:limit]
                if not any(t != IGNORE for t in targets[1:]):
                    dropped += 1
                    continue
            out.append((torch.tensor(ids), torch.tensor(targets), label))
        if truncated:
            notes.append(
                f"{role}: {truncated} of {len(rows)} examples longer than max_length "
                f"{limit} tokens were truncated"
                + (f", {dropped} of them dropped (no completion token left)" if dropped else "")
            )
        if dropped > self.experiment.max_dropped_fraction * len(rows) or not out:
            raise DataError(
                f"{role}: {dropped} of {len(rows)} examples lose their whole completion at "
                f"max_length {limit}; raise max_length or shorten the prompts"
            )
        return out

    def _encode(self, row: dict[str, Any]) -> tuple[list[int], list[int], str]:
        """Token ids, per-token targets (IGNORE where not learned), and the target text."""
        tok, eos = self.tokenizer, self.tokenizer.eos_token_id
        if self.format == "text":
            ids = tok(row["text"])["input_ids"] + [eos]
            return ids, list(ids), ""
        if self.format == "prompt-completion":
            prompt = tok(row["prompt"])["input_ids"]
            completion = tok(row["completion"], add_special_tokens=False)["input_ids"] + [eos]
            return prompt + completion, [IGNORE] * len(prompt) + completion, row["completion"]
        return self._encode_chat(row["messages"])

    def _encode_chat(self, messages: list[dict[str, str]]) -> tuple[list[int], list[int], str]:
        """The chat template's rendering; the assistant turns (with their end-of-turn token) are
        learned, found by rendering each turn's prefix."""
        render = self.tokenizer.apply_chat_template
        full = render(messages, tokenize=False)
        spans = []
        for i, message in enumerate(messages):
            if message["role"] != "assistant":
                continue
            before = render(messages[:i], tokenize=False, add_generation_prompt=True) if i else ""
            through = render(messages[: i + 1], tokenize=False)
            if not (full.startswith(before) and full.startswith(through.rstrip())):
                raise DataError(
                    "the tokenizer's chat template does not render a conversation as the "
                    "concatenation of its turns, so the assistant tokens cannot be found; use "
                    "prompt/completion fields instead"
                )
            spans.append((len(before), len(through.rstrip())))
        encoding = self.tokenizer(full, add_special_tokens=False, return_offsets_mapping=True)
        ids = encoding["input_ids"]
        targets = [
            token if any(lo <= start < hi for lo, hi in spans) else IGNORE
            for token, (start, _) in zip(ids, encoding["offset_mapping"], strict=True)
        ]
        return ids, targets, messages[-1]["content"] if messages[-1]["role"] == "assistant" else ""

    def _splits(self, encoded: dict[str, list], notes: list[str]) -> Splits:
        """Label-like targets (short completions) stratify the validation split and the smoke
        subset; other data is one 'class'."""
        texts = [label for rows in encoded.values() for _, _, label in rows]
        classes = sorted(set(texts)) if self.short_targets else [""]
        index = {c: i for i, c in enumerate(classes)}

        def split(role: str) -> Split:
            rows = encoded[role]
            inputs = [(ids, targets) for ids, targets, _ in rows]
            labels = [index[label] if self.short_targets else 0 for _, _, label in rows]
            return Split(inputs, np.array(labels, dtype=np.int64), role)

        train = split("train")
        validation = split("validation") if "validation" in encoded else None
        if validation is None:
            exp = self.experiment
            counts = np.bincount(train.labels)
            labels = train.labels if counts[counts > 0].min() >= 2 else np.zeros_like(train.labels)
            kept, held = stratified_split(labels, exp.validation_fraction, exp.seed)
            train, validation = train.subset(kept), train.subset(held)
            notes.append(
                f"validation: {len(held)} examples ({exp.validation_fraction:.0%}) held out of "
                f"train, seed {exp.seed}"
            )
        test = split("test") if "test" in encoded else None
        return Splits(classes, train, validation, test, notes)

    def _cache_folder(self) -> Path | None:
        exp = self.experiment
        if not exp.gguf_file:
            return None
        key = hashlib.sha256(f"{exp.model}\0{exp.gguf_file}".encode()).hexdigest()[:16]
        return self.cache_dir / f"base-{key}"

    def _cached_base(self) -> tuple[str, str | None]:
        """A GGUF file is dequantised once per study into a model folder in the cache; later
        trials load that in a fraction of the time."""
        exp, folder = self.experiment, self._cache_folder()
        if folder is None:
            return exp.model, None
        if not (folder / "config.json").exists():
            model = load_causal_lm(exp.model, exp.gguf_file)
            folder.parent.mkdir(parents=True, exist_ok=True)
            # a private folder per writer: two workers may dequantise the same file at once
            tmp = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}."))
            model.save_pretrained(tmp)
            self.tokenizer.save_pretrained(tmp)
            del model
            if (folder / "config.json").exists():  # another worker finished first
                shutil.rmtree(tmp, ignore_errors=True)
            else:
                shutil.rmtree(folder, ignore_errors=True)
                try:
                    tmp.rename(folder)
                except OSError:  # lost the race between the check and the rename
                    shutil.rmtree(tmp, ignore_errors=True)
        return str(folder.resolve()), None

    # -- model ----------------------------------------------------------------------------
    def build(self, recipe: Recipe):
        model = load_causal_lm(self.base_source, self.base_gguf, recipe.dropout)
        model.config.use_cache = False  # no generation while training
        if recipe.adapter != "lora":
            return model, layer_stack(model)
        from peft import LoraConfig, get_peft_model

        total = self.num_layers + 1
        config = LoraConfig(
            r=recipe.lora_r,
            lora_alpha=recipe.lora_alpha,
            lora_dropout=recipe.lora_dropout,
            target_modules=lora_targets(model, recipe.lora_targets),
            layers_to_transform=list(range(recipe.freeze_layers, total)),
            layers_pattern=_blocks_name(model),
            task_type="CAUSAL_LM",
        )
        with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
            warnings.simplefilter("ignore", FutureWarning)
            model = get_peft_model(model, config)
        stack = layer_stack(model, body=model.get_base_model().base_model)
        stack.only = {id(p) for name, p in model.named_parameters() if "lora_" in name}
        return model, stack

    def dataset(self, split: Split, train: bool, recipe: Recipe | None = None) -> TokenExamples:
        def examples() -> TokenExamples:
            ids, targets = zip(*split.inputs, strict=True) if len(split) else ((), ())
            return TokenExamples(list(ids), list(targets), self.tokenizer.pad_token_id)

        return self.cached("tokens", split, examples)

    def forward(self, model: nn.Module, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        return model(**inputs).logits

    @staticmethod
    def count_targets(labels: torch.Tensor) -> int:
        return int(labels[:, 1:].ne(IGNORE).sum())

    def loss_sum(self, model: nn.Module, inputs, labels: torch.Tensor) -> torch.Tensor:
        logits = self.forward(model, inputs)[:, :-1].float()
        return nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            labels[:, 1:].reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )

    def _batch_stats(self, logits: torch.Tensor, labels: torch.Tensor) -> tuple[float, int, int]:
        """Summed token loss, target tokens, and examples whose every target is the argmax."""
        logits, targets = logits[:, :-1].float(), labels[:, 1:]
        loss = nn.functional.cross_entropy(
            logits.reshape(-1, logits.shape[-1]),
            targets.reshape(-1),
            ignore_index=IGNORE,
            reduction="sum",
        )
        learned = targets.ne(IGNORE)
        right = (logits.argmax(-1) == targets) | ~learned
        return float(loss), int(learned.sum()), int(right.all(dim=1).sum())

    def _metrics(self, loss: float, tokens: int, exact: int, examples: int) -> dict[str, float]:
        mean = loss / max(tokens, 1)
        metrics = {"loss": mean, "perplexity": math.exp(min(mean, 50.0))}
        if self.short_targets:
            metrics["exact_match"] = exact / max(examples, 1)
        return metrics

    def metrics(self, logits: torch.Tensor, labels: torch.Tensor) -> dict[str, float]:
        return self._metrics(*self._batch_stats(logits, labels), len(labels))

    @torch.no_grad()
    def evaluate(self, model: nn.Module, data: TokenExamples, device, batch_size: int = 16):
        model.eval()
        device = torch.device(device)
        loss, tokens, exact = 0.0, 0, 0
        order = sorted(range(len(data)), key=lambda i: -int(data.lengths[i]))
        size = min(batch_size, 16)  # logits are vocabulary-wide: keep them small
        for start in range(0, len(order), size):
            inputs, labels = data.collate(order[start : start + size])
            with self.autocast(device):
                logits = self.forward(model, {k: v.to(device) for k, v in inputs.items()})
            part = self._batch_stats(logits, labels.to(device))
            loss, tokens, exact = loss + part[0], tokens + part[1], exact + part[2]
        return self._metrics(loss, tokens, exact, len(data))

    # -- saving ---------------------------------------------------------------------------
    def save(self, model: nn.Module, directory: Path) -> None:
        """LoRA: the adapter only (a few MB); full fine-tuning: the whole model."""
        model.save_pretrained(directory)
        self.tokenizer.save_pretrained(directory)
        meta = {
            "task": "causal-lm",
            "base_model": self.model_source,
            "gguf_file": self.experiment.gguf_file,
            "cached_base": self.base_source,
            "adapter": "lora" if (directory / "adapter_config.json").exists() else "full",
            "short_targets": self.short_targets,
            # how prompts were encoded in training: "messages" ones through the chat template
            "format": self.format,
        }
        (directory / META_FILE).write_text(json.dumps(meta, indent=2))

    def load(self, directory: Path) -> nn.Module:
        return load_finetuned(directory)

    def describe(self) -> dict[str, Any]:
        return {
            "model": self.model_source,
            "gguf_file": self.experiment.gguf_file,
            "format": self.format,
            "num_layers": self.num_layers + 1,
            "exact_match": self.short_targets,
        }


def _format_of(rows: list[dict[str, Any]]) -> str:
    return record_format(rows[0]) or "text"  # read_jsonl checked that every row has one format


def _base_of(directory: Path) -> tuple[str, str | None]:
    meta = json.loads((directory / META_FILE).read_text())
    cached = meta.get("cached_base")
    if cached and Path(cached, "config.json").exists():
        return cached, None
    return meta["base_model"], meta.get("gguf_file")


def load_finetuned(directory: str | Path) -> nn.Module:
    """A saved fine-tuned model: the base model with the adapter applied, or the full model."""
    directory = Path(directory)
    if not (directory / "adapter_config.json").exists():
        return load_causal_lm(str(directory))
    from peft import PeftModel

    base, gguf_file = _base_of(directory)
    with warnings.catch_warnings():  # peft calls a transformers API deprecated in v5
        warnings.simplefilter("ignore", FutureWarning)
        return PeftModel.from_pretrained(load_causal_lm(base, gguf_file), directory)


def merge_adapter(directory: str | Path, output: str | Path) -> Path:
    """Merge a saved LoRA adapter into its base model and save the full model (and tokenizer)
    to `output`, loadable with AutoModelForCausalLM.from_pretrained(output)."""
    directory, output = Path(directory), Path(output)
    if not (directory / "adapter_config.json").exists():
        raise ModelError(f"{directory} holds no LoRA adapter (adapter_config.json) to merge")
    model = load_finetuned(directory).merge_and_unload()
    model.save_pretrained(output)
    load_tokenizer(str(directory)).save_pretrained(output)
    return output
