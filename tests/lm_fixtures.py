"""A tiny randomly initialised Llama with a word-level tokenizer and a ChatML template, and
prompt/completion or chat data whose answer is given away by a word of the prompt."""

from __future__ import annotations

import json
import random
from pathlib import Path

from conftest import FILLER, WORDS

CHATML = (
    "{% for message in messages %}<|im_start|>{{ message['role'] }} {{ message['content'] }}"
    "<|im_end|> {% endfor %}{% if add_generation_prompt %}<|im_start|>assistant {% endif %}"
)
SPECIAL = ["<pad>", "<unk>", "<|im_start|>", "<|im_end|>"]


def build_tiny_llama(folder: Path, chat_template: bool = True, layers: int = 3) -> Path:
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import LlamaConfig, LlamaForCausalLM, PreTrainedTokenizerFast

    words = [*FILLER, *(w for ws in WORDS.values() for w in ws), *WORDS, "user", "assistant"]
    words += ["system", "feeling", ":"]
    vocab = {token: i for i, token in enumerate(SPECIAL + words)}
    backend = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend,
        pad_token="<pad>",
        unk_token="<unk>",
        eos_token="<|im_end|>",
        additional_special_tokens=["<|im_start|>"],
    )
    if chat_template:
        tokenizer.chat_template = CHATML
    tokenizer.save_pretrained(folder)
    config = LlamaConfig(
        vocab_size=len(vocab),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=layers,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=64,
        eos_token_id=vocab["<|im_end|>"],
        pad_token_id=vocab["<pad>"],
        tie_word_embeddings=True,
        initializer_range=0.3,  # embeddings large enough for LoRA alone to make confident logits
    )
    torch.manual_seed(0)
    LlamaForCausalLM(config).save_pretrained(folder)
    return folder


def make_pairs(n_per_class: int, seed: int = 0) -> list[dict[str, str]]:
    rng = random.Random(seed)
    rows = []
    for label, words in WORDS.items():
        for _ in range(n_per_class):
            prompt = rng.sample(FILLER, 3) + rng.sample(words, 1)
            rng.shuffle(prompt)
            rows.append({"prompt": " ".join(prompt) + " feeling:", "completion": " " + label})
    rng.shuffle(rows)
    return rows


def as_chat(rows: list[dict[str, str]]) -> list[dict]:
    return [
        {
            "messages": [
                {"role": "user", "content": row["prompt"]},
                {"role": "assistant", "content": row["completion"].strip()},
            ]
        }
        for row in rows
    ]


def write_jsonl(path: Path, rows: list) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path
