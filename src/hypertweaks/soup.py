"""The final-model stage's soup: the weights of the recommended recipe's runs (trials tagged
defaults, defaults-2, ...; strategies/finals.py) averaged into one model of the same size, scored
on validation, and made the study's best model unless the model on disk leads it by more than
the selector's margin. Resumable and safe with many workers: a soup of the same runs is never
made twice, and the swap only happens if the model on disk is still the one it was compared with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from optuna.trial import TrialState
from torch import nn

from hypertweaks.checkpoints import BestCheckpoint
from hypertweaks.config import Experiment
from hypertweaks.strategies import strategy_of
from hypertweaks.strategies.selectors import trials_chosen_among
from hypertweaks.train import evaluate, release_memory
from hypertweaks.trial import members_dir, write_refit_yaml


def average_weights(states: list[dict[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """The uniform average of the floating-point weights; other buffers (ids, counters) are the
    first state's."""
    return {
        key: torch.stack([s[key].float() for s in states]).mean(0).to(value.dtype)
        if value.is_floating_point()
        else value
        for key, value in states[0].items()
    }


def averaged_model(
    task,
    run_dir: Path,
    numbers: list[int],
    device: torch.device | str = "cpu",
    norm_statistics: bool = True,
):
    """The soup: the kept models of trials `numbers` (members_dir), their weights averaged, on
    `device`. Batch-norm statistics that differ between the runs are computed again over the
    training rows (as SWA does; `norm_statistics=False`: averaged too): the average of the
    runs' statistics is not the statistics of their averaged weights (IMAGES.md)."""
    folders = [members_dir(run_dir) / f"trial-{n}" for n in numbers]
    model = task.load(folders[0])
    states = [model.state_dict()] + [task.load(f).state_dict() for f in folders[1:]]
    model.load_state_dict(average_weights(states))
    moved = [
        name
        for name, module in model.named_modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm)
        and module.running_mean is not None
        and any(not torch.equal(s[f"{name}.running_mean"], states[0][f"{name}.running_mean"])
                for s in states[1:])
    ]  # fmt: skip
    model.to(device)
    if moved and norm_statistics:
        task.recompute_norm_statistics(model, moved, device)
    return model


def soup_members(study, exp: Experiment) -> list[int]:
    """The finished runs of the recommended recipe whose models were kept for the soup."""
    tags = strategy_of(exp).soup_tags(exp)
    folder = members_dir(exp.run_dir)
    return sorted(
        t.number
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))
        if t.user_attrs.get("tag") in tags and (folder / f"trial-{t.number}").is_dir()
    )


def soup_stage(study, exp: Experiment, task, best: BestCheckpoint, device) -> dict[str, Any] | None:
    """Make the soup of the finished runs (two or more) and keep it unless the model on disk
    leads it by more than the margin. Returns what was decided (None: no soup to make)."""
    numbers = soup_members(study, exp)
    current = best.meta()
    if len(numbers) < 2 or current is None:
        return None
    if current.get("tag") == "soup" and current.get("members") == numbers:
        return current["soup"]  # made before (a resumed study, another worker)
    model = averaged_model(task, exp.run_dir, numbers, device)
    validation = task.dataset(task.splits.validation, False)
    metrics = evaluate(task, model, validation, device)
    value = float(metrics[exp.metric])
    selector = best.selector
    final = strategy_of(exp).make_final(exp.task)  # soups: soup_members found its runs
    among = trials_chosen_among(current.get("tag") or "", current["trial"])
    summary = {
        "members": numbers,
        "value": value,
        "metrics": metrics,
        "rival": {k: current.get(k) for k in ("trial", "tag", "value")},
        "margin": round(selector.margin(value, among), 6),
        "kept": final.keeps_soup(selector, exp.direction, value, current["value"], among),
    }
    if summary["kept"]:

        def write(folder: Path) -> None:
            task.save(model, folder)
            write_soup_yaml(exp, folder, study.trials[numbers[0]].user_attrs["recipe"], summary)

        meta = {"trial": numbers[0], "value": value, "tag": "soup", "members": numbers}
        if not best.replace(
            f"soup-{'-'.join(map(str, numbers))}",
            {**meta, "soup": summary},
            write,
            expected=current,
        ):
            # another worker changed the best model meanwhile: its soup, if it made one
            now = best.meta() or {}
            summary = now.get("soup") if now.get("tag") == "soup" else None
    model = None  # the last reference: its memory goes back
    release_memory(device)
    return summary


def write_soup_yaml(exp: Experiment, folder: Path, recipe: dict[str, Any], summary: dict) -> None:
    """best.yaml of a soup: the recipe its runs share (run alone, it trains one of them)."""
    header = (
        f"# final model of study {exp.name!r}: the weights of trials "
        f"{', '.join(map(str, summary['members']))} (the recommended recipe at "
        f"{len(summary['members'])} seeds) averaged, val {exp.metric} {summary['value']:.4f}.\n"
        "# This recipe, run alone, trains one of those runs, not the average.\n"
    )
    write_refit_yaml(exp, folder, recipe, header)
