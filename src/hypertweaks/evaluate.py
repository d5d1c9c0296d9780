"""Score a tuned model on a labelled file: the task's metrics, per-class precision and recall, the
confusion matrix, and for two classes precision/recall at each threshold and the threshold that
reaches a wanted recall. Written as JSON and as an HTML section in the report's style."""

from __future__ import annotations

import html
import json
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from hypertweaks.atomic import write_text
from hypertweaks.data import DataError
from hypertweaks.data.inputs import image_table, read_prompts, read_texts
from hypertweaks.generate import Generator
from hypertweaks.kinds import kind_of
from hypertweaks.predict import (
    Classifier,
    ModelInfo,
    Progress,
    check_options,
    check_texts,
    describe,
    device_of,
    is_loaded,
    load,
    unreadable_images,
)
from hypertweaks.tasks.causal_lm import SHORT_TARGET
from hypertweaks.tasks.metrics import classification_metrics

GRID = [round(0.05 * i, 2) for i in range(1, 20)]  # thresholds shown: 0.05 ... 0.95


def _key(value: Any) -> str:
    """Labels compare as text, so 1 (from a CSV) matches '1' (an image folder's name)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return str(value)


def encode_labels(values: list[Any], classes: list[Any], where: str) -> np.ndarray:
    """Class ids of the labels; unknown or missing labels are refused, named with counts."""
    missing = sum(1 for v in values if v is None or (isinstance(v, float) and np.isnan(v)))
    if missing:
        raise DataError(f"{where}: {missing} rows have no label; fill them in or remove them")
    index = {_key(c): i for i, c in enumerate(classes)}
    unknown = Counter(_key(v) for v in values if _key(v) not in index)
    if unknown:
        shown = ", ".join(
            f"{label!r} ({n} row{'s' if n > 1 else ''})" for label, n in unknown.most_common()
        )
        raise DataError(
            f"{where} has labels the model does not know: {shown}; the model knows "
            f"{', '.join(repr(c) for c in classes)}. Remove those rows, or evaluate a model "
            "tuned with these classes"
        )
    return np.array([index[_key(v)] for v in values], dtype=np.int64)


def labeled_inputs(
    info: ModelInfo,
    path: str | Path,
    column: str | None = None,
    label_column: str | None = None,
    skip_bad: bool = False,
) -> tuple[list[str], np.ndarray]:
    """Inputs and class ids of a labelled file (images: also a folder of class sub-folders),
    checked against the model's classes before any weights are loaded."""
    label_column = label_column or info.column("label_column")
    where = f"evaluation data {str(path)!r}"
    if kind_of(info.task).inputs == "images":
        from hypertweaks.data.images import read_image_folder

        if Path(path).is_dir():
            table = read_image_folder(Path(path), "evaluation")
            column, label_column = "image", "label"
        else:
            column = column or info.column("image_column")
            table = image_table(path, column, "evaluation")
        inputs = table[column].tolist()
        unreadable_images(inputs, skip_bad)
    else:
        table, inputs = read_texts(path, column or info.column("text_column"), "evaluation")
        check_texts(inputs, where, "row", 1, skip_bad)
    if label_column not in table.columns:
        raise DataError(
            f"{path}: no label column {label_column!r} (set by --label-column); the columns "
            f"are: {', '.join(map(str, table.columns))}"
        )
    return inputs, encode_labels(table[label_column].tolist(), info.classes, where)


def thresholds(truth: np.ndarray, scores: np.ndarray, target_recall: float | None) -> dict:
    """Precision, recall and flagged share of the positive class at each threshold of GRID,
    and the highest threshold whose recall reaches `target_recall` (the most precise one)."""
    from sklearn.metrics import precision_recall_curve

    def at(threshold: float) -> dict[str, float]:
        flagged = scores >= threshold
        hits = int((flagged & truth).sum())
        return {
            "threshold": threshold,
            "precision": hits / max(int(flagged.sum()), 1),
            "recall": hits / max(int(truth.sum()), 1),
            "flagged": float(flagged.mean()),
        }

    out: dict[str, Any] = {"rows": [at(t) for t in GRID]}
    if target_recall is not None and truth.any():
        _, recall, cuts = precision_recall_curve(truth, scores)
        reaching = [float(c) for c, r in zip(cuts, recall[:-1], strict=True) if r >= target_recall]
        chosen = max(reaching) if reaching else float(scores.min())
        out["target_recall"] = target_recall
        out["chosen"] = at(chosen)
    return out


def evaluate(
    model: Classifier | Generator | str | Path,
    path: str | Path,
    target_recall: float | None = None,
    column: str | None = None,
    label_column: str | None = None,
    batch_size: int | None = None,
    skip_bad: bool = False,
    progress: Callable[[int], Progress | None] | None = None,
    device: str = "auto",
) -> dict[str, Any]:
    """The evaluation of `model` (a predictor, or a model folder loaded once the labelled file
    `path` has been checked) as a JSON-ready dict."""
    if target_recall is not None and not 0 < target_recall <= 1:
        raise DataError(f"the target recall must be in (0, 1]. Got {target_recall} instead")
    loaded = is_loaded(model)
    info = model.info if loaded else describe(model)
    device_of(device)
    check_options(batch_size)
    if kind_of(info.task).inputs == "prompts":
        task = _lm_task(info, path)  # the study's own reader checks every line first
        predictor = model if loaded else load(info, device)
        return _evaluate_generator(predictor, task, path, batch_size, progress)
    inputs, truth = labeled_inputs(info, path, column, label_column, skip_bad)
    predictor = model if loaded else load(info, device)
    advance = progress(len(inputs)) if progress is not None else None
    proba = predictor.predict_proba(inputs, batch_size, advance, skip_bad=skip_bad)
    kept = ~np.isnan(proba).any(axis=1)
    return classification_report(predictor, proba[kept], truth[kept], str(path), target_recall)


def classification_report(
    predictor: Classifier,
    proba: np.ndarray,
    truth: np.ndarray,
    data: str,
    target_recall: float | None = None,
) -> dict[str, Any]:
    from sklearn.metrics import confusion_matrix, precision_recall_fscore_support

    classes, n = predictor.classes_, len(predictor.classes_)
    logits = torch.log(torch.as_tensor(proba, dtype=torch.float32).clamp_min(1e-12))
    metrics = classification_metrics(logits, torch.as_tensor(truth), positive=predictor.positive)
    predicted = proba.argmax(axis=1)
    precision, recall, f1, support = precision_recall_fscore_support(
        truth, predicted, labels=list(range(n)), zero_division=0
    )
    report: dict[str, Any] = {
        "model": str(predictor.directory),
        "task": predictor.task,
        "data": data,
        "examples": len(truth),
        "metrics": metrics,
        "per_class": [
            {
                "class": classes[i],
                "precision": float(precision[i]),
                "recall": float(recall[i]),
                "f1": float(f1[i]),
                "support": int(support[i]),
            }
            for i in range(n)
        ],
        "confusion": {
            "classes": classes,
            "matrix": confusion_matrix(truth, predicted, labels=list(range(n))).tolist(),
        },
        "notes": list(predictor.notes),
    }
    if n == 2:
        positive = predictor.positive
        report["thresholds"] = {
            "positive_class": classes[positive],
            **thresholds(truth == positive, proba[:, positive], target_recall),
        }
    return report


def _lm_task(info: ModelInfo, path: str | Path):
    """The causal-lm task of the study (best.yaml), prepared on the labelled file: the examples
    encoded as training encoded them, so its metrics are the study's."""
    from hypertweaks.config import make_experiment
    from hypertweaks.tasks.causal_lm import CausalLM

    if not info.recipe:
        raise DataError(
            f"{info.directory} has no best.yaml, so how its examples were encoded is unknown; "
            "evaluate the folder a study wrote (runs/NAME/best)"
        )
    fields = {"train": str(path), "validation": str(path), "test": None, "metric": "loss"}
    task = CausalLM(make_experiment({**info.recipe, **fields}), info.directory.parent / "cache")
    task.prepare()
    return task


def _evaluate_generator(
    predictor: Generator, task, path: str | Path, batch_size: int | None, progress
) -> dict[str, Any]:
    """Loss and perplexity per answer token, and for short answers (labels) the share that
    greedy decoding reproduces exactly, all by the task's own evaluation; for short answers
    also the generated answers that differ from the reference."""
    data = task.dataset(task.splits.validation, train=False)
    metrics = task.evaluate(predictor.model, data, predictor.device, batch_size or 16)
    notes = [n.replace("train: ", "", 1) for n in task.splits.notes if n.startswith("train: ")]
    report = {
        "model": str(predictor.directory),
        "task": predictor.task,
        "data": str(path),
        "examples": len(data),
        "metrics": metrics,
        "notes": notes,
    }
    if task.short_targets:
        rows = read_prompts(path, "evaluation")
        references = [
            row["messages"][-1]["content"] if "messages" in row else row["completion"]
            for row in rows
        ]
        answers = predictor.generate(
            rows,
            batch_size=batch_size,
            progress=progress(len(rows)) if progress is not None else None,
            max_new_tokens=SHORT_TARGET + 1,  # the answer and its end of turn
        )
        report["misses"] = [
            {"reference": r, "answer": a}
            for a, r in zip(answers, references, strict=True)
            if a.strip() != r.strip()
        ][:20]
    return report


def _cell(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def report_tables(report: dict[str, Any]) -> list[tuple[str, tuple[str, ...], list[tuple]]]:
    """(title, header, rows) of each table, shared by the console and the HTML page."""
    tables = [
        ("metrics", ("metric", "value"), [(k, _cell(v)) for k, v in report["metrics"].items()])
    ]
    if "per_class" in report:
        tables.append(
            (
                "per class",
                ("class", "precision", "recall", "f1", "support"),
                [
                    (
                        str(c["class"]),
                        *(_cell(c[k]) for k in ("precision", "recall", "f1")),
                        str(c["support"]),
                    )
                    for c in report["per_class"]
                ],
            )
        )
        confusion = report["confusion"]
        tables.append(
            (
                "confusion matrix (row: true class, column: predicted)",
                ("", *map(str, confusion["classes"])),
                [
                    (str(c), *map(str, row))
                    for c, row in zip(confusion["classes"], confusion["matrix"], strict=True)
                ],
            )
        )
    if "thresholds" in report:
        th = report["thresholds"]
        rows = [
            (_cell(r["threshold"]), _cell(r["precision"]), _cell(r["recall"]), _cell(r["flagged"]))
            for r in th["rows"]
        ]
        title = f"thresholds on P({th['positive_class']})"
        if "chosen" in th:
            c = th["chosen"]
            title += (
                f": recall >= {th['target_recall']} at threshold {c['threshold']:.4f} "
                f"(precision {c['precision']:.4f}, recall {c['recall']:.4f})"
            )
        tables.append((title, ("threshold", "precision", "recall", "flagged"), rows))
    if report.get("misses"):
        tables.append(
            (
                "answers that differ from the reference (first 20)",
                ("reference", "answer"),
                [(m["reference"], m["answer"]) for m in report["misses"]],
            )
        )
    return tables


def evaluation_html(report: dict[str, Any]) -> str:
    """The evaluation as a section of a page in the report's style."""
    from hypertweaks.report import _table

    parts = [
        f"<h2>evaluation on {html.escape(report['data'])}</h2>",
        f"<p>model {html.escape(report['model'])}, {report['examples']} examples</p>",
    ]
    if report.get("notes"):
        notes = "".join(f"<li>{html.escape(note)}</li>" for note in report["notes"])
        parts.append(f"<ul>{notes}</ul>")
    for title, header, rows in report_tables(report):
        parts += [f"<h3>{html.escape(title)}</h3>", _table(rows, header)]
        if title.startswith("thresholds"):
            parts.append(threshold_plot(report["thresholds"]))
    return "".join(parts)


def threshold_plot(th: dict[str, Any]) -> str:
    """Precision, recall and the share flagged against the threshold; the chosen one marked."""
    from hypertweaks.report import _figure, _svg

    fig, axis = _figure(6.4, 3.2)
    cuts = [row["threshold"] for row in th["rows"]]
    for key in ("precision", "recall", "flagged"):
        axis.plot(cuts, [row[key] for row in th["rows"]], "o-", ms=3, label=key)
    if "chosen" in th:
        axis.axvline(th["chosen"]["threshold"], c="black", ls=":", label="target recall")
    axis.set(xlabel=f"threshold on P({th['positive_class']})", ylim=(0, 1.02))
    axis.legend(fontsize=8)
    return _svg(fig)


def write_report(report: dict[str, Any], json_path: str | Path) -> tuple[Path, Path]:
    """JSON at `json_path`, the HTML page beside it (same name, .html)."""
    from hypertweaks.report import page

    json_path = Path(json_path)
    html_path = json_path.with_suffix(".html")
    write_text(json_path, json.dumps(report, indent=2, default=str))
    write_text(html_path, page(f"evaluation of {report['model']}", [evaluation_html(report)]))
    return json_path, html_path


def default_report_path(directory: Path, data: str | Path) -> Path:
    """evaluation-DATA.json beside the model folder: in the study folder for runs/NAME/best."""
    return directory.parent / f"evaluation-{Path(data).stem}.json"
