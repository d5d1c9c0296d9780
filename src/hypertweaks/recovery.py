"""results.json is derived data: read it when it is whole, rebuild it from the study when it is
missing or corrupt (a crash while writing, a truncated copy)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from hypertweaks.atomic import write_text
from hypertweaks.results import read_json


def _study_name(url: str, run_dir: Path) -> str:
    import optuna

    names = optuna.study.get_all_study_names(url)
    if run_dir.name in names:
        return run_dir.name
    if len(names) == 1:
        return names[0]
    raise FileNotFoundError(
        f"{run_dir / 'results.json'} is missing or corrupt and the storage holds "
        f"{len(names)} studies ({', '.join(names) or 'none'}); name the study's folder after it"
    )


def rebuild_results(run_dir: Path, storage: str | None = None) -> dict[str, Any]:
    """results.json from the study: the header each write stored in the study, and every finished
    trial. Written back atomically once the study has stored its header (a partial file would
    outlive the first trial); FileNotFoundError when there is no study to rebuild from."""
    import optuna

    from hypertweaks.results import trial_row
    from hypertweaks.study import counted, normalise_storage, redact, sqlite_url

    if storage is None and not (run_dir / "study.db").is_file():
        raise FileNotFoundError(
            f"{run_dir} holds no study (no results.json, no study.db): is it a study folder, "
            "e.g. runs/NAME? If the study lives in a database, pass --storage URL"
        )
    from sqlalchemy.exc import SQLAlchemyError

    from hypertweaks.study import storage_error

    url = normalise_storage(storage) if storage else sqlite_url(run_dir / "study.db")
    try:
        study = optuna.load_study(study_name=_study_name(url, run_dir), storage=url)
    except SQLAlchemyError as error:
        raise storage_error(url, error) from None
    trials = study.get_trials(deepcopy=False)
    rows = [trial_row(t) for t in trials if t.state.is_finished()]
    header = dict(study.user_attrs.get("results_header") or {})
    header.setdefault("study", study.study_name)
    header.setdefault("metric", study.user_attrs.get("metric", "value"))
    header.setdefault("direction", study.direction.name.lower())
    header.setdefault("storage", redact(url))
    budget = dict(header.get("budget") or {})
    budget.update(
        used_trials=sum(1 for t in trials if counted(t)),
        used_seconds=round(sum(r["seconds"] for r in rows), 1),
        used_examples=sum(r["examples"] for r in rows),
    )
    data = {**header, "budget": budget, "rebuilt_from_study": True, "trials": rows}
    if study.user_attrs.get("results_header"):  # not before the study wrote its first whole one
        write_text(run_dir / "results.json", json.dumps(data, indent=2, default=str))
    return data


def load_results(run_dir: str | Path, storage: str | None = None) -> dict[str, Any]:
    """RUN_DIR/results.json, rebuilt from the study when missing or corrupt."""
    run_dir = Path(run_dir)
    return read_json(run_dir / "results.json") or rebuild_results(run_dir, storage)
