"""One self-contained HTML report of a study (inline SVG plots, no scripts, opens offline), built
from runs/NAME/results.json and, for parameter importances, the study's storage."""

from __future__ import annotations

import html
import io
import math
import warnings
from pathlib import Path
from typing import Any

from hypertweaks.atomic import write_text
from hypertweaks.ledger import describe_ledger
from hypertweaks.noise import describe, describe_kept
from hypertweaks.objective import best_of, direction_of, is_better
from hypertweaks.strategies.finals import describe_refit, describe_soup

KNOB_SLICES = ("learning_rate", "batch_size", "dropout", "weight_decay", "freeze_layers")
# Optuna's importances mean little on fewer trials, and nothing for a knob that never varied.
MIN_IMPORTANCE_TRIALS = 4


def _figure(width: float = 6.4, height: float = 3.6, columns: int = 1, **kwargs):
    import matplotlib

    matplotlib.use("Agg")  # files only, no screen
    import matplotlib.pyplot as plt

    return plt.subplots(1, columns, figsize=(width, height), **kwargs)


def _svg(fig) -> str:
    import matplotlib.pyplot as plt

    buffer = io.StringIO()
    fig.tight_layout()
    fig.savefig(buffer, format="svg")
    plt.close(fig)
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def whole(results: dict, run_dir: Path) -> dict:
    """results.json with what a partial one lacks (a study whose first trial has not finished,
    a file written by an older version) filled in, so that every section can read it."""
    results = dict(results)
    results.setdefault("study", run_dir.name)
    metric = results.setdefault("metric", "value")
    results.setdefault("direction", direction_of(metric))
    for key in ("task", "model"):
        results.setdefault(key, "-")
    results["data"] = results.get("data") or {}
    results["budget"] = results.get("budget") or {}
    trial_defaults = {"value": None, "recipe": {}, "curve": [], "examples": 0, "error": None}
    results["trials"] = [
        {**trial_defaults, "state": "fail", "best_epoch": None, **t}
        for t in results.get("trials") or []
        if isinstance(t, dict) and "number" in t
    ]
    for trial in results["trials"]:
        trial["recipe"] = trial["recipe"] or {}
        trial["curve"] = trial["curve"] or []
    return results


def _finished(results: dict) -> list[dict]:
    return [t for t in results["trials"] if not t.get("interrupted")]


def _score(trial: dict, metric: str, direction: str) -> float | None:
    """The trial's best validation score: its result, or for a pruned trial the best it reached."""
    if trial["value"] is not None:
        return trial["value"]
    return best_of((row.get(metric) for row in trial["curve"] or []), direction)


def history_plot(results: dict) -> str:
    metric, direction = results["metric"], results["direction"]
    fig, (by_trial, by_compute) = _figure(10, 3.6, columns=2)
    trials = _finished(results)
    best, best_line, examples, compute = None, [], 0, []
    for trial in trials:
        examples += trial["examples"]
        compute.append(examples)
        if trial["value"] is not None and is_better(trial["value"], best, direction):
            best = trial["value"]
        best_line.append(best)
    styles = {"complete": ("o", "tab:blue"), "pruned": ("x", "tab:orange"), "fail": ("s", "red")}
    for state, (marker, color) in styles.items():
        chosen = [(i, t) for i, t in enumerate(trials) if t["state"] == state]
        if not chosen:
            continue
        scores = [_score(t, metric, direction) for _, t in chosen]
        ys = [math.nan if s is None else s for s in scores]
        by_trial.scatter([t["number"] for _, t in chosen], ys, marker=marker, c=color, label=state)
        by_compute.scatter([compute[i] for i, _ in chosen], ys, marker=marker, c=color)
    numbers = [t["number"] for t in trials]
    by_trial.step(numbers, best_line, where="post", c="black", label="best so far")
    by_compute.step(compute, best_line, where="post", c="black")
    by_trial.set(xlabel="trial", ylabel=f"validation {metric}", title="optimisation history")
    by_compute.set(xlabel="training examples processed (cumulative)", title="against compute")
    by_trial.legend(fontsize=8)
    return _svg(fig)


def importance_plot(importances: dict[str, float]) -> str:
    fig, axis = _figure(6.4, 0.4 * len(importances) + 1)
    names = list(importances)[::-1]
    axis.barh(names, [importances[n] for n in names], color="tab:blue")
    axis.set(xlabel="importance (Optuna default evaluator)", title="which knobs mattered")
    return _svg(fig)


def slice_plots(results: dict) -> str:
    metric, direction = results["metric"], results["direction"]
    score = {t["number"]: _score(t, metric, direction) for t in _finished(results)}
    trials = [t for t in _finished(results) if score[t["number"]] is not None and t["recipe"]]
    fig, axes = _figure(14, 3, columns=len(KNOB_SLICES), sharey=True)
    for axis, knob in zip(axes, KNOB_SLICES, strict=True):
        shown = [t for t in trials if knob in t["recipe"]]
        colors = ["tab:orange" if t["state"] == "pruned" else "tab:blue" for t in shown]
        axis.scatter(
            [t["recipe"][knob] for t in shown], [score[t["number"]] for t in shown], c=colors, s=18
        )
        if knob == "learning_rate":
            axis.set_xscale("log")
        axis.set(xlabel=knob)
    axes[0].set_ylabel(f"validation {results['metric']}")
    return _svg(fig)


def curve_plots(results: dict) -> str:
    metric = results["metric"]
    fig, (every, best) = _figure(10, 3.6, columns=2)
    for trial in _finished(results):
        if not trial["curve"]:
            continue
        epochs = [row["epoch"] for row in trial["curve"]]
        style = {"pruned": ":", "fail": "--"}.get(trial["state"], "-")
        every.plot(epochs, [row.get(metric, math.nan) for row in trial["curve"]], style, alpha=0.7)
        if trial["state"] == "pruned" or trial.get("stopped") == "early_stopped":
            every.plot(epochs[-1], trial["curve"][-1].get(metric, math.nan), "kx")
    every.set(
        xlabel="epoch",
        ylabel=f"validation {metric}",
        title="every trial (x: stopped early or pruned)",
    )
    chosen = _best_trial(results)
    if chosen and chosen["curve"]:
        epochs = [row["epoch"] for row in chosen["curve"]]
        for key, label in (("train_loss", "train loss"), ("loss", "validation loss")):
            best.plot(
                epochs, [row.get(key, math.nan) for row in chosen["curve"]], "o-", label=label
            )
        if chosen["best_epoch"] is not None:
            best.axvline(chosen["best_epoch"], color="grey", ls=":", label="epoch kept")
        best.set(xlabel="epoch", title=f"best trial ({chosen['number']}): the overfitting gap")
        best.legend(fontsize=8)
    return _svg(fig)


def _best_trial(results: dict) -> dict | None:
    return next((t for t in results["trials"] if t["number"] == results.get("best_trial")), None)


def _default_trial(results: dict) -> dict | None:
    return next((t for t in results["trials"] if t.get("tag") == "defaults"), None)


def head_only_reading(results: dict) -> str | None:
    """What the head-only candidate measured: how far the frozen model's features already go."""
    head = next((t for t in results["trials"] if t.get("tag") == "head-only"), None)
    default = _default_trial(results)
    if not head or not default or head.get("value") is None or default.get("value") is None:
        return None
    metric = results["metric"]
    ahead = is_better(head["value"], default["value"], results.get("direction", "maximize"))
    verdict = (
        "the pretrained features already separate these classes better than fine-tuning did"
        if ahead
        else "fine-tuning the model adds to what its frozen features give"
    )
    return (
        f"A linear head on the frozen model's features (trial {head['number']}) reached "
        f"validation {metric} {head['value']:.4f} against {default['value']:.4f} for the "
        f"default recipe: {verdict}."
    )


def reading(results: dict, importances: dict[str, float]) -> list[str]:
    """Plain-language observations, each computed from the numbers above."""
    lines = []
    trials = _finished(results)
    pruned = [t for t in trials if t["state"] == "pruned"]
    failed = [t for t in trials if t["state"] == "fail"]
    best, default = _best_trial(results), _default_trial(results)
    metric = results["metric"]
    if not trials:
        interrupted = ", ".join(str(t["number"]) for t in results["trials"] if t.get("interrupted"))
        lines.append(
            "No trial finished yet: "
            + (
                f"the study was interrupted (trial {interrupted}); run the same tune command to "
                "resume it."
                if interrupted
                else "the first may still be running; run report again when one has finished."
            )
        )
        return lines
    if best and default and best["number"] != default["number"] and default["value"] is not None:
        lines.append(
            f"The best recipe (trial {best['number']}) reached validation {metric} "
            f"{best['value']:.4f} against {default['value']:.4f} for the default recipe."
        )
    elif kept := describe_kept(results.get("defaults_kept")):
        lines.append(kept[0].upper() + kept[1:] + ".")
    elif best and default:
        lines.append("No searched recipe beat the default recipe on validation.")
    if line := describe(results.get("within_noise")):
        lines.append(line[0].upper() + line[1:] + ".")
    if line := results.get("stopped_early"):
        lines.append(line[0].upper() + line[1:] + ".")
    if soup := results.get("final_model"):
        line = describe_soup(soup, metric)
        lines.append(line[0].upper() + line[1:] + ".")
    if line := describe_refit(results.get("refit"), metric):
        lines.append(line[0].upper() + line[1:] + ".")
    if line := describe_ledger(results.get("budget_bought"), metric):
        lines.append(line[0].upper() + line[1:] + ".")
    if line := head_only_reading(results):
        lines.append(line)
    if pruned:
        epochs_run = sum(len(t["curve"]) for t in pruned)
        epochs_planned = sum(t["recipe"].get("epochs", len(t["curve"])) for t in pruned)
        timed_out = sum(t.get("stopped") == "timeout" for t in pruned)
        by_timeout = f" ({timed_out} stopped by the timeout)" if timed_out else ""
        lines.append(
            f"{len(pruned)} of {len(trials)} trials were pruned{by_timeout}, after {epochs_run} "
            f"of the {epochs_planned} epochs they asked for."
        )
    if failed:  # a trial killed early may lack some knobs
        lrs = sorted(t["recipe"]["learning_rate"] for t in failed if "learning_rate" in t["recipe"])
        span = f" (learning rates {lrs[0]:.1e} to {lrs[-1]:.1e})" if lrs else ""
        reasons = sorted({t["error"] or "interrupted or killed" for t in failed})
        lines.append(f"{len(failed)} trials failed{span}: " + "; ".join(reasons[:3]) + ".")
    if importances:
        top = next(iter(importances))
        lines.append(
            f"The knob that mattered most was {top} "
            f"({importances[top]:.0%} of the total importance)."
        )
    elif any(t["value"] is not None for t in trials):
        lines.append(
            "No knob is named as the one that mattered most: that needs at least "
            f"{MIN_IMPORTANCE_TRIALS} completed trials of the search in which the knob took "
            "different values."
        )
    ranked = sorted(
        (t for t in trials if t["value"] is not None),
        key=lambda t: t["value"],
        reverse=results["direction"] == "maximize",
    )[:3]
    if ranked and all({"freeze_layers", "learning_rate"} <= set(t["recipe"]) for t in ranked):
        freezes = sorted(t["recipe"]["freeze_layers"] for t in ranked)
        lrs = sorted(t["recipe"]["learning_rate"] for t in ranked)
        lines.append(
            f"The best {len(ranked)} trials froze {freezes[0]} to {freezes[-1]} layers "
            f"and used learning rates {lrs[0]:.1e} to {lrs[-1]:.1e}."
        )
    if best and best["curve"] and (best["best_epoch"] or len(best["curve"])) < len(best["curve"]):
        losses = [row["loss"] for row in best["curve"]]
        at_best = losses[best["best_epoch"] - 1]
        rose = losses[-1] > 1.05 * at_best
        lines.append(
            f"The best trial peaked at epoch {best['best_epoch']} of {len(losses)}; validation "
            f"loss went from {at_best:.3f} to {losses[-1]:.3f} after it"
            + (" (overfitting)" if rose else "")
            + ", so the weights of that epoch were kept."
        )
    return lines


def load_importances(run_dir: Path, results: dict, storage: str | None = None) -> dict[str, float]:
    """Importances of the searched knobs (Optuna's default evaluator), from the study, of the
    knobs that took at least two values over at least MIN_IMPORTANCE_TRIALS completed trials;
    empty when there are none (too few trials, nothing varied)."""
    import optuna
    from optuna.trial import TrialState

    from hypertweaks.study import normalise_storage, sqlite_url

    if storage is None and not (run_dir / "study.db").exists():
        return {}
    url = normalise_storage(storage) if storage else sqlite_url(run_dir / "study.db")
    try:
        study = optuna.load_study(study_name=results["study"], storage=url)
        seen: dict[str, list[Any]] = {}
        for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            for name, value in trial.params.items():
                seen.setdefault(name, []).append(value)
        varied = [
            name
            for name, values in seen.items()
            if len(values) >= MIN_IMPORTANCE_TRIALS and len(set(values)) >= 2
        ]
        if not varied:
            return {}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # "too few trials" style notices: a plot, not a gate
            return optuna.importance.get_param_importances(study, params=varied)
    except (RuntimeError, ValueError, KeyError):  # too few complete trials, or nothing varied
        return {}


def _table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows
    )
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return "-" if value is None else str(value)


def summary_html(results: dict) -> str:
    best, default = _best_trial(results), _default_trial(results)
    data, budget = results["data"], results["budget"]
    sizes = ", ".join(f"{role} {_fmt(data.get(role))}" for role in ("train", "validation", "test"))
    facts = [
        ("task", results["task"]),
        ("model", results["model"]),
        ("data", sizes),
        (
            "budget",
            f"{budget.get('used_trials', 0)} of {budget.get('trials') or '-'} trials, "
            f"{budget.get('used_seconds') or 0:.0f}s of trial time, "
            f"{budget.get('used_examples', 0)} training examples",
        ),
    ]
    knobs = list((best or default or {"recipe": {}})["recipe"])
    recipe_rows = [
        (
            k,
            _fmt(default["recipe"].get(k)) if default else "-",
            _fmt(best["recipe"].get(k)) if best else "-",
        )
        for k in knobs
    ]
    metric = results["metric"]
    test_default = (default or {}).get("test_metrics") or {}
    test_best = results.get("test_metrics") or {}
    recipe_rows += [
        (
            f"validation {metric}",
            _fmt((default or {}).get("value")),
            _fmt((best or {}).get("value")),
        ),
        *[
            (f"test {name}", _fmt(test_default.get(name)), _fmt(value))
            for name, value in test_best.items()
        ],
    ]
    return (
        _table(facts, ("", ""))
        + "<h3>best recipe beside the default</h3>"
        + _table(
            recipe_rows, ("", "default recipe", f"best (trial {_fmt(results.get('best_trial'))})")
        )
    )


STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:3px 8px;
text-align:left}svg{max-width:100%;height:auto}li{margin:.3em 0}"""


def render(run_dir: str | Path, storage: str | None = None) -> Path:
    """Write RUN_DIR/report.html from RUN_DIR/results.json and return its path."""
    from hypertweaks.recovery import load_results

    run_dir = Path(run_dir)
    # rebuilt from the study when missing or corrupt; keys a partial file lacks filled in
    results = whole(load_results(run_dir, storage), run_dir)
    importances = load_importances(run_dir, results, storage)
    sections = [
        f"<h1>hypertweaks study {html.escape(str(results['study']))}</h1>",
        "<h2>summary</h2>",
        summary_html(results),
        "<h2>what the numbers say</h2><ul>"
        + "".join(f"<li>{html.escape(line)}</li>" for line in reading(results, importances))
        + "</ul>",
    ]
    if _finished(results):  # nothing to plot before a trial has finished
        sections += ["<h2>optimisation history</h2>", history_plot(results)]
        if importances:
            sections += ["<h2>which knobs mattered</h2>", importance_plot(importances)]
        sections += [
            "<h2>score against each knob</h2>",
            slice_plots(results),
            "<h2>learning curves</h2>",
            curve_plots(results),
        ]
    out = run_dir / "report.html"
    write_text(out, page(str(results["study"]), sections))  # a reader never sees half a page
    return out


def page(title: str, sections: list[str]) -> str:
    """One self-contained HTML page in the report's style around the given sections."""
    return (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}"
        f"</title><style>{STYLE}</style></head><body>{''.join(sections)}</body></html>"
    )
