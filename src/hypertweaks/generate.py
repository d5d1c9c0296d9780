"""Answers of a tuned causal LM: the LoRA adapter on its base model (the task's own loader),
prompts encoded as training encoded them, batched with left padding, greedy by default."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import torch

from hypertweaks.data import DataError
from hypertweaks.kinds import kind_of
from hypertweaks.model_folder import ModelInfo, Progress, as_list, device_of
from hypertweaks.train import autocast


class Generator:
    """A tuned causal LM: the LoRA adapter on its base model (or the full fine-tuned model)."""

    task = "causal-lm"
    batch_size = 8

    def __init__(self, info: ModelInfo, device: str = "auto"):
        from hypertweaks.tasks.causal_lm import META_FILE, load_finetuned, load_tokenizer

        self.info, directory = info, info.directory
        self.directory = directory
        self.device = device_of(device)
        self.precision = info.recipe.get("precision", "auto")  # as it was tuned
        self.cpu_bfloat16 = kind_of(info.task).load_class().cpu_bfloat16
        meta_file = directory / META_FILE
        meta = json.loads(meta_file.read_text()) if meta_file.is_file() else {}
        # the training data's format (messages, prompt-completion, text); None: a folder saved
        # before it was recorded, whose plain prompts are encoded as they are
        self.format: str | None = meta.get("format")
        self.model = load_finetuned(directory).to(self.device).eval()
        self.tokenizer = load_tokenizer(str(directory))
        self.context = int(getattr(self.model.config, "max_position_embeddings", 0) or 0)
        self.notes: list[str] = []

    def encode(self, prompt: str | list[dict[str, str]] | dict[str, Any]) -> list[int]:
        """Token ids as training saw them: a prompt with the tokenizer's special tokens, a chat
        rendered with its template and the assistant's turn opened. A model trained on chat
        messages gets a plain prompt as one user message. A conversation that ends with an
        assistant turn is answered from the turns before it."""
        prompt = _content(prompt)
        if isinstance(prompt, str):
            if not self.wraps(prompt):
                return self.tokenizer(prompt)["input_ids"]
            prompt = [{"role": "user", "content": prompt}]
        messages = list(prompt)
        while messages and messages[-1]["role"] == "assistant":
            messages.pop()
        if not self.tokenizer.chat_template:
            raise DataError(
                "the prompts are chat messages but the model's tokenizer has no chat template; "
                'give {"prompt": ...} lines instead'
            )
        text = self.tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True
        )
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def wraps(self, prompt: Any) -> bool:
        """A plain prompt to a model trained on chat messages: sent as one user message through
        its chat template (as raw text, it would continue the text, or end the turn at once)."""
        return self.format == "messages" and isinstance(_content(prompt), str)

    @torch.inference_mode()
    def generate(
        self,
        prompts: str | Sequence[Any],
        max_new_tokens: int = 128,
        temperature: float = 0.0,
        top_p: float = 1.0,
        top_k: int = 0,
        seed: int = 0,
        batch_size: int | None = None,
        progress: Progress | None = None,
    ) -> list[str]:
        """One completion per prompt (a string, a list of chat messages, or a JSONL row):
        greedy unless `temperature` > 0, then sampled (`top_p`, `top_k`, `seed`)."""
        prompts = as_list(prompts)
        ids = [self.encode(p) for p in prompts]
        self.notes = []
        wrapped = sum(self.wraps(p) for p in prompts)
        if wrapped:
            self.notes.append(
                f"{wrapped} plain prompt{' was' if wrapped == 1 else 's were'} sent as "
                f"{'a user message' if wrapped == 1 else 'user messages'} through the chat "
                "template the model was trained with (chat messages)"
            )
        room = self.context - max_new_tokens if self.context else None
        if room is not None and room < 1:
            raise DataError(
                f"max_new_tokens {max_new_tokens} leaves no room for a prompt in the model's "
                f"context of {self.context} tokens; ask for fewer new tokens"
            )
        cut = sum(room is not None and len(row) > room for row in ids)
        if cut:
            ids = [row[-room:] for row in ids]  # keep the end: where the answer starts
            self.notes.append(
                f"{cut} of {len(ids)} prompts were longer than {room} tokens (the context "
                f"less max_new_tokens) and lost their beginning"
            )
        sample = temperature > 0
        options: dict[str, Any] = {"do_sample": sample, "max_new_tokens": max_new_tokens}
        if sample:
            torch.manual_seed(seed)
            options.update(temperature=temperature, top_p=top_p, top_k=top_k)
        else:
            options.update(temperature=None, top_p=None, top_k=None)
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        size, pad = batch_size or self.batch_size, self.tokenizer.pad_token_id
        out: list[str] = [""] * len(ids)
        for start in range(0, len(order), size):
            rows = [ids[i] for i in order[start : start + size]]
            width = max(len(r) for r in rows)
            batch = torch.full((len(rows), width), pad, dtype=torch.long)
            mask = torch.zeros((len(rows), width), dtype=torch.long)
            for r, row in enumerate(rows):  # left padding: every row ends where generation starts
                batch[r, width - len(row) :], mask[r, width - len(row) :] = torch.tensor(row), 1
            with autocast(self.device, self.precision, self.cpu_bfloat16):
                generated = self.model.generate(
                    input_ids=batch.to(self.device),
                    attention_mask=mask.to(self.device),
                    pad_token_id=pad,
                    eos_token_id=self.tokenizer.eos_token_id,
                    **options,
                )
            texts = self.tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
            for i, text in zip(order[start : start + size], texts, strict=True):
                out[i] = text.strip()
            if progress is not None:
                progress(len(rows))
        return out


def _content(prompt: Any) -> Any:
    """A JSONL row's prompt (its messages, prompt or text); a string or a chat as it is."""
    if isinstance(prompt, dict):
        return prompt.get("messages", prompt.get("prompt", prompt.get("text")))
    return prompt
