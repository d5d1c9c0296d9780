"""results.json: every trial's recipe, curve, state and cost, rebuilt from the study."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hypertweaks.config import Experiment
from hypertweaks.recovery import read_json
from hypertweaks.study import counted, redact, storage_url, trial_seconds


def trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    attrs = trial.user_attrs
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        "tag": attrs.get("tag", ""),
        "value": trial.value if trial.state == TrialState.COMPLETE else None,
        "last_value": next(reversed(trial.intermediate_values.values()), None),
        "recipe": attrs.get("recipe", trial.params),
        "best_epoch": attrs.get("best_epoch"),
        "stopped": attrs.get("stopped"),
        "curve": attrs.get("curve", []),
        "seconds": trial_seconds(trial),
        "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "finished": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
        "attempts": attrs.get("attempts", 1),  # >1: retried after its worker died
        "examples": attrs.get("examples", 0),
        "train_seconds": attrs.get("train_seconds"),
        "seed": attrs.get("seed"),
        "error": attrs.get("error"),
        "test_metrics": attrs.get("test_metrics"),  # the default recipe's, for comparison
        "interrupted": attrs.get("interrupted", False),
    }


def write_results(
    path: Path, study: optuna.Study, *, exp: Experiment, task, summary: dict[str, Any] | None = None
) -> None:
    """Every trial's recipe, curve, state and cost; rewritten atomically after each trial."""
    # a corrupt or missing file is rebuilt: the study keeps a copy of everything but the trials
    previous = read_json(path) or study.user_attrs.get("results_header", {})
    rows = [trial_row(t) for t in study.get_trials(deepcopy=False) if t.state.is_finished()]
    data = {
        "study": exp.name,
        "task": exp.task,
        "model": exp.model,
        "metric": exp.metric,
        "direction": exp.direction,
        "storage": redact(storage_url(exp)),
        "classes": [str(c) for c in task.splits.classes],
        "data": {
            "train": len(task.splits.train),
            "validation": len(task.splits.validation),
            "test": len(task.splits.test) if task.splits.test else 0,
            "notes": task.splits.notes,
        },
        "budget": {
            "trials": exp.trials,
            "timeout_seconds": exp.timeout,
            "used_trials": sum(1 for t in study.get_trials(deepcopy=False) if counted(t)),
            "used_seconds": round(sum(r["seconds"] for r in rows), 1),
            "used_examples": sum(r["examples"] for r in rows),
        },
        **{k: previous.get(k) for k in ("best_trial", "best_value", "test_metrics")},
        **(summary or {}),
        "trials": rows,
    }
    study.set_user_attr("results_header", {k: v for k, v in data.items() if k != "trials"})
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str))
    os.replace(tmp, path)
