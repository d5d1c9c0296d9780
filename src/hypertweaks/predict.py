"""Use a tuned model: `load(DIR)` reads runs/NAME/best (or any folder a study wrote) back into a
predictor with scikit-learn's `predict` / `predict_proba` (texts, image paths), or `generate`
(causal LMs, the adapter on its base model). Loading goes through each task's own loader."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import torch

from hypertweaks.data import DataError
from hypertweaks.kinds import kind_of
from hypertweaks.model_folder import (  # noqa: F401  (re-exported for evaluate and the CLI)
    ModelInfo,
    Progress,
    as_list,
    describe,
    device_of,
    model_dir,
)
from hypertweaks.models import quiet_transformers
from hypertweaks.train import autocast

if TYPE_CHECKING:
    from hypertweaks.generate import Generator


def load(path: str | Path | ModelInfo, device: str = "auto") -> Classifier | Generator:
    """The tuned model in `path` (runs/NAME or runs/NAME/best), ready to predict: a classifier
    (`predict`, `predict_proba`) or, for a causal LM, a `Generator` (`generate`). It computes in
    the precision it was tuned in (`precision`, an attribute: set it to "float32" to predict as
    plain transformers does where auto chose bfloat16)."""
    info = describe(path)
    quiet_transformers()
    return kind_of(info.task).load_class("predictor")(info, device)


def is_loaded(model: Any) -> bool:
    """A predictor (from `load`), not a path or ModelInfo still to load."""
    return not isinstance(model, str | Path | ModelInfo)


def check_threshold(threshold: float | None, classes: list[Any]) -> None:
    if threshold is None:
        return
    if len(classes) != 2:
        raise DataError(
            f"a threshold needs a model with two classes; this one has {len(classes)} "
            f"({', '.join(map(str, classes))}): leave the threshold out"
        )
    if not 0 <= threshold <= 1:
        raise DataError(f"the threshold must be in [0, 1]. Got {threshold} instead")


def check_options(
    batch_size: int | None = None, top_k: int | None = None, generation: dict | None = None
) -> None:
    """Numbers the user gives, checked before anything loads; messages name the option."""
    rules = {
        "batch_size": (batch_size, lambda v: v >= 1, "at least 1"),
        "top_k": (top_k, lambda v: v >= 1, "at least 1"),
    }
    generation = generation or {}
    rules |= {
        "max_new_tokens": (generation.get("max_new_tokens"), lambda v: v >= 1, "at least 1"),
        "temperature": (generation.get("temperature"), lambda v: v >= 0, "0 (greedy) or more"),
        "top_p": (generation.get("top_p"), lambda v: 0 < v <= 1, "in (0, 1]"),
        "top_k_tokens": (generation.get("top_k"), lambda v: v >= 0, "0 (all) or more"),
    }
    for name, (value, valid, wanted) in rules.items():
        if value is not None and not valid(value):
            flag = "--" + name.replace("_", "-")
            raise DataError(f"{flag} must be {wanted}. Got {value} instead")


class Classifier:
    """What text and image classifiers share: classes, probabilities, a threshold for two."""

    task: str
    batch_size = 64

    def __init__(self, info: ModelInfo, device: str = "auto"):
        self.info, self.directory, self.recipe = info, info.directory, info.recipe
        self.device = device_of(device)
        self.precision = self.recipe.get("precision", "auto")  # as it was tuned
        self.cpu_bfloat16 = kind_of(info.task).load_class().cpu_bfloat16
        self.classes_: list[Any] = info.classes
        self.positive = info.positive
        self.notes: list[str] = []  # what the last call did to its inputs (truncated, skipped)

    def predict_proba(
        self, inputs: Any, batch_size: int | None = None, progress=None, skip_bad: bool = False
    ):
        """[n, classes] probabilities; inputs that cannot be read are an error, or with
        `skip_bad` a row of NaN."""
        raise NotImplementedError

    def predict(
        self, inputs: Any, threshold: float | None = None, batch_size: int | None = None
    ) -> list[Any]:
        """The predicted class of each input (its original value); with two classes,
        `threshold` on the positive class's probability replaces the argmax."""
        return self.labels_of(self.predict_proba(inputs, batch_size), threshold)

    def labels_of(self, proba: np.ndarray, threshold: float | None = None) -> list[Any]:
        check_threshold(threshold, self.classes_)
        if threshold is None:
            chosen = proba.argmax(axis=1)
        else:
            other = 1 - self.positive
            chosen = np.where(proba[:, self.positive] >= threshold, self.positive, other)
        return [self.classes_[i] for i in chosen]

    def _run(self, model: torch.nn.Module, batches, progress: Progress | None) -> np.ndarray:
        """Softmax probabilities of (model inputs, size) batches, float32 on the CPU."""
        chunks = []
        with torch.inference_mode(), autocast(self.device, self.precision, self.cpu_bfloat16):
            for inputs, size in batches:
                inputs = {k: v.to(self.device) for k, v in inputs.items()}
                logits = self._forward(model, inputs)
                chunks.append(torch.softmax(logits.float(), dim=-1).cpu())
                if progress is not None:
                    progress(size)
        return torch.cat(chunks).numpy() if chunks else np.zeros((0, len(self.classes_)))

    def _forward(self, model, inputs):
        return model(**inputs).logits


class TextClassifier(Classifier):
    """A tuned text classifier; texts longer than the length it was tuned on are truncated."""

    task = "text-classification"

    def __init__(self, info: ModelInfo, device: str = "auto"):
        super().__init__(info, device)
        from transformers import AutoTokenizer

        from hypertweaks.tasks.text import load_saved

        directory = info.directory
        self.model = load_saved(directory).to(self.device).eval()
        self.tokenizer = AutoTokenizer.from_pretrained(directory)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token or self.tokenizer.unk_token
        self.max_length = int(self.recipe.get("max_length") or 128)

    def predict_proba(
        self,
        inputs: str | Sequence[str],
        batch_size: int | None = None,
        progress: Progress | None = None,
        skip_bad: bool = False,
    ) -> np.ndarray:
        """[n, classes] probabilities. Texts are tokenized at once and run shortest first, so a
        batch pads only to its own longest text. Texts training cannot use (empty, missing, a
        list) are an error, or with `skip_bad` a row of NaN."""
        values = as_list(inputs)
        self.notes = []
        bad = set(check_texts(values, "predict", "input", 0, skip_bad))
        kept = [i for i in range(len(values)) if i not in bad]
        if bad:
            self.notes.append(
                f"skipped {len(bad)} of {len(values)} texts that are empty, missing or not a "
                "single text"
            )
        ids = self._tokenize([str(values[i]) for i in kept])
        order = sorted(range(len(ids)), key=lambda i: len(ids[i]))
        size, pad = batch_size or self.batch_size, self.tokenizer.pad_token_id

        def batches():
            for start in range(0, len(order), size):
                rows = [ids[i] for i in order[start : start + size]]
                width = max(len(r) for r in rows)
                batch = torch.full((len(rows), width), pad, dtype=torch.long)
                mask = torch.zeros((len(rows), width), dtype=torch.long)
                for r, row in enumerate(rows):
                    batch[r, : len(row)], mask[r, : len(row)] = torch.tensor(row), 1
                yield {"input_ids": batch, "attention_mask": mask}, len(rows)

        proba = self._run(self.model, batches(), progress)
        out = np.full((len(values), proba.shape[1]), np.nan, dtype=proba.dtype)
        out[[kept[i] for i in order]] = proba
        return out

    def _tokenize(self, texts: list[str]) -> list[list[int]]:
        """Token ids, cut at max_length; how many were cut goes to `notes`."""
        if not texts:
            return []
        encoded = self.tokenizer(
            texts, truncation=True, max_length=self.max_length, return_overflowing_tokens=True
        )
        mapping = encoded.get("overflow_to_sample_mapping")
        if mapping is None:  # slow tokenizers: no overflow mapping, count by length
            full = self.tokenizer(texts)["input_ids"]
            cut = sum(len(row) > self.max_length for row in full)
            ids = [row[: self.max_length] for row in encoded["input_ids"]]
        else:
            first: dict[int, int] = {}
            for row, sample in enumerate(mapping):  # a cut text overflows into more rows
                first.setdefault(int(sample), row)
            ids = [encoded["input_ids"][first[i]] for i in range(len(texts))]
            cut = len({int(s) for s, n in Counter(mapping).items() if n > 1})
        if cut:
            self.notes.append(
                f"{cut} of {len(texts)} texts were longer than {self.max_length} tokens (the "
                "length the model was tuned on) and were truncated"
            )
        return ids


def check_texts(
    values: Sequence[Any], where: str, noun: str, base: int, skip_bad: bool = False
) -> list[int]:
    """Texts training cannot use (empty, missing, a list or object: its own check) are an error
    naming them (as `noun`s counted from `base`), or with `skip_bad` returned, to be left out
    and counted."""
    from hypertweaks.tasks.text import unusable_message, unusable_texts

    empty, nested = unusable_texts(values)
    if (empty or nested) and not skip_bad:
        raise DataError(
            f"{where}: {unusable_message(values, empty, nested, noun, base)}; training cannot "
            f"use such texts, so no label for them would mean anything: drop or fill those "
            f"{noun}s, or pass --skip-bad (skip_bad=True) to skip and count them"
        )
    return sorted(empty + nested)


def unreadable_images(paths: Sequence[str], skip_bad: bool = False) -> list[str]:
    """Open every image's header (cheap) before any compute: the unreadable ones are an error
    naming them, or with `skip_bad` returned, to be left out and counted."""
    from PIL import Image, UnidentifiedImageError

    bad = []
    for path in paths:
        try:
            with Image.open(path):
                pass
        except UnidentifiedImageError:
            bad.append((path, "not an image file"))
        except (OSError, ValueError) as error:
            bad.append((path, getattr(error, "strerror", None) or str(error)))
    if bad and not skip_bad:
        shown = "; ".join(f"{p!r} ({why})" for p, why in bad[:3])
        raise DataError(
            f"cannot read {len(bad)} of {len(paths)} images: {shown}; fix or remove them, or "
            "pass --skip-bad (skip_bad=True) to skip and count them"
        )
    return [path for path, _ in bad]


class ImageClassifier(Classifier):
    """A tuned image classifier (defect detector): images are resized and normalised as in
    training; an unreadable image is an error, or with `skip_bad` a row of NaN."""

    task = "image-classification"
    batch_size = 32

    def __init__(self, info: ModelInfo, device: str = "auto"):
        super().__init__(info, device)
        from hypertweaks.tasks.image import load_saved

        meta, directory = info.labels, info.directory
        self.image_size = int(meta.get("image_size") or self.recipe.get("image_size", 224))
        self.mean = torch.tensor(meta["mean"]).view(1, -1, 1, 1)
        self.std = torch.tensor(meta["std"]).view(1, -1, 1, 1)
        self.hf = (directory / "config.json").is_file()
        self.model = load_saved(directory, meta["model"], len(self.classes_))
        self.model = self.model.to(self.device).eval()
        self.skipped: list[str] = []

    def _forward(self, model, inputs):
        if self.hf:
            return model(pixel_values=inputs["pixel_values"]).logits
        return model(inputs["pixel_values"])

    def predict_proba(
        self,
        inputs: str | Path | Sequence[str | Path],
        batch_size: int | None = None,
        progress: Progress | None = None,
        skip_bad: bool = False,
    ) -> np.ndarray:
        """[n, classes] probabilities; a skipped image's row is NaN (see `skipped`)."""
        from hypertweaks.data.images import decode_image

        paths = [str(p) for p in as_list(inputs)]
        self.notes, skipped = [], set(unreadable_images(paths, skip_bad))
        size = batch_size or self.batch_size
        kept = [i for i, p in enumerate(paths) if p not in skipped]

        def batches():
            for start in range(0, len(kept), size):
                images = []
                for i in kept[start : start + size]:
                    try:
                        image, _ = decode_image(paths[i], self.image_size)
                    except DataError:
                        if not skip_bad:
                            raise
                        skipped.add(paths[i])
                        continue
                    images.append(image.expand(3, -1, -1) if image.shape[0] == 1 else image)
                if images:
                    pixels = torch.stack(images).float().div_(255)
                    yield {"pixel_values": (pixels - self.mean) / self.std}, len(images)

        proba = self._run(self.model, batches(), progress)
        out = np.full((len(paths), len(self.classes_)), np.nan, dtype=np.float32)
        out[[i for i in kept if paths[i] not in skipped]] = proba
        self.skipped = [p for p in paths if p in skipped]
        if self.skipped:
            self.notes.append(
                f"skipped {len(self.skipped)} of {len(paths)} unreadable images, e.g. "
                f"{self.skipped[0]!r}"
            )
        return out


def predict_file(
    model: Classifier | Generator | str | Path,
    source: str | Path,
    output: str | Path | None = None,
    column: str | None = None,
    top_k: int | None = None,
    threshold: float | None = None,
    batch_size: int | None = None,
    skip_bad: bool = False,
    generation: dict[str, Any] | None = None,
    progress: Callable[[int], Progress | None] | None = None,
    device: str = "auto",
) -> tuple[Path, pd.DataFrame, Classifier | Generator]:
    """Predict every row of a file (texts: a table or a text file; images: a folder or a table
    of paths; causal LMs: JSONL prompts) and write the rows with the predictions to `output`
    (default INPUT.predictions.EXT beside the input), atomically. `model` is a loaded predictor
    or a model folder; a folder's weights are loaded only once the inputs and options have been
    checked. `progress(total)` may return a callback told how many more examples are done."""
    from hypertweaks.data.inputs import (
        check_output,
        default_output,
        image_table,
        read_prompts,
        read_texts,
        write_atomically,
    )

    info = model.info if is_loaded(model) else describe(model)
    device_of(device)
    kind = kind_of(info.task)
    check_options(batch_size, top_k, generation if kind.generates else None)
    if kind.inputs == "prompts":
        target = check_output(output or default_output(source, ".jsonl"))
        rows = read_prompts(source)
        predictor = _loaded(model, info, device)
        answers = predictor.generate(
            rows, batch_size=batch_size, progress=_start(progress, len(rows)), **(generation or {})
        )
        table = pd.DataFrame(rows).assign(generated=answers)
        return write_atomically(table, target), table, predictor
    target = check_output(output or default_output(source))
    check_threshold(threshold, info.classes)
    if kind.inputs == "images":
        folder = Path(source).is_dir()
        column = "path" if folder else column or info.column("image_column")
        table = image_table(source, column)
        inputs = table[column].tolist()
        unreadable_images(inputs, skip_bad)
    else:
        table, inputs = read_texts(source, column or info.column("text_column"))
        check_texts(inputs, f"input data {str(source)!r}", "row", 1, skip_bad)
    predictor = _loaded(model, info, device)
    advance = _start(progress, len(inputs))
    proba = predictor.predict_proba(inputs, batch_size, advance, skip_bad=skip_bad)
    kept = ~np.isnan(proba).any(axis=1)
    table, proba = table.loc[kept].reset_index(drop=True), proba[kept]
    predicted = _prediction_columns(predictor, proba, top_k, threshold)
    table = table.drop(columns=[c for c in predicted.columns if c in table.columns])  # a rerun
    table = pd.concat([table, predicted], axis=1)
    return write_atomically(table, target), table, predictor


def _loaded(model, info: ModelInfo, device: str):
    return model if is_loaded(model) else load(info, device)


def _start(progress, total: int) -> Progress | None:
    return progress(total) if progress is not None else None


def _prediction_columns(
    predictor: Classifier, proba: np.ndarray, top_k: int | None, threshold: float | None
) -> pd.DataFrame:
    """predicted_label, then prob_CLASS for every class, or label_i / prob_i for the top k."""
    columns: dict[str, Any] = {"predicted_label": predictor.labels_of(proba, threshold)}
    classes = predictor.classes_
    if top_k is None or top_k >= len(classes):
        for i, name in enumerate(classes):
            columns[f"prob_{name}"] = proba[:, i]
    else:
        best = np.argsort(-proba, axis=1)[:, :top_k]
        for rank in range(top_k):
            columns[f"label_{rank + 1}"] = [classes[i] for i in best[:, rank]]
            columns[f"prob_{rank + 1}"] = np.take_along_axis(proba, best[:, rank : rank + 1], 1)[
                :, 0
            ]
    return pd.DataFrame(columns)
