"""results.json: every trial's recipe, curve, state and cost, rebuilt from the study."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from hypertweaks.atomic import write_text
from hypertweaks.config import Experiment
from hypertweaks.study import counted, redact, storage_url, trial_seconds
from hypertweaks.train import computes_bfloat16, resolve_device
from hypertweaks.trial import RECORD_VERSION, TrialRecord


def read_json(path: Path) -> dict[str, Any] | None:
    """The mapping in a results file, or None when it is missing or not a whole results file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # missing, truncated, not UTF-8
        return None
    if not isinstance(data, dict) or not isinstance(data.get("trials"), list):
        return None
    return data


def trial_row(trial: optuna.trial.FrozenTrial) -> dict[str, Any]:
    """A row of results.json: the trial's record (trial.TrialRecord) and what the study knows of
    the trial: its number, state, value (complete trials only) and timing."""
    record = TrialRecord.from_attrs(trial.user_attrs, trial.params).as_dict()
    return {
        "number": trial.number,
        "state": trial.state.name.lower(),
        **record,
        "value": trial.value if trial.state == TrialState.COMPLETE else None,
        "last_value": next(reversed(trial.intermediate_values.values()), None),
        "seconds": trial_seconds(trial),
        "started": trial.datetime_start.isoformat() if trial.datetime_start else None,
        "finished": trial.datetime_complete.isoformat() if trial.datetime_complete else None,
    }


def finished_rows(study: optuna.Study) -> list[dict[str, Any]]:
    """The rows of results.json: every finished trial but the surplus ones, which never ran
    (the budget was spent, or they duplicated a candidate)."""
    return [
        trial_row(t)
        for t in study.get_trials(deepcopy=False)
        if t.state.is_finished() and not t.user_attrs.get("surplus")
    ]


def write_results(
    path: Path, study: optuna.Study, *, exp: Experiment, task, summary: dict[str, Any] | None = None
) -> None:
    """Every trial's recipe, curve, state and cost; rewritten atomically after each trial."""
    # a corrupt or missing file is rebuilt: the study keeps a copy of everything but the trials
    previous = read_json(path) or study.user_attrs.get("results_header", {})
    rows = finished_rows(study)
    data = {
        "record_version": RECORD_VERSION,  # of each row's trial record (trial.TrialRecord)
        "study": exp.name,
        "task": exp.task,
        "model": exp.model,
        "metric": exp.metric,
        "direction": exp.direction,
        "storage": redact(storage_url(exp)),
        # what `precision` came to on this process's device (auto: by task and hardware)
        "precision": "bfloat16"
        if computes_bfloat16(task, resolve_device(exp.device))
        else "float32",
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
    write_text(path, json.dumps(data, indent=2, default=str))
