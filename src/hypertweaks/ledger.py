"""What the budget bought: the model the study's selector kept after each finished trial, with
the budget spent by then, in units of the default recipe's run. A user who gives more budget sees
whether it changed the model, and by how much on validation."""

from __future__ import annotations

from typing import Any

from hypertweaks.strategies.selectors import Candidate, Selector


def budget_ledger(
    rows: list[dict[str, Any]], selector: Selector, soup: dict[str, Any] | None = None
) -> dict[str, Any] | None:
    """From results.json rows: the steps where the kept model changed (`units` spent when it
    was kept, its trial, tag and validation value) and the units spent in all. Trials are taken
    in the order they finished, as the checkpoint store saw them; a soup the final-model stage
    kept (soup.py) is the last step, at the whole spend. None before any trial finished; units
    are None without a finished default-recipe trial (seconds are kept)."""
    finished = sorted(
        (r for r in rows if r["state"] in ("complete", "pruned", "fail") and r.get("finished")),
        key=lambda r: r["finished"],
    )
    if not finished:
        return None
    default = next((r for r in finished if r["tag"] == "defaults" and r["value"] is not None), None)
    unit = default["seconds"] if default and default["seconds"] else None

    def units(seconds: float) -> float | None:
        return None if unit is None else round(seconds / unit, 2)

    spent, kept, steps = 0.0, None, []
    for row in finished:
        spent += row["seconds"] or 0.0
        if row["state"] != "complete" or row["value"] is None:
            continue
        current = None if kept is None else Candidate(kept["value"], kept["tag"], kept["trial"])
        if selector.replaces(Candidate(row["value"], row["tag"], row["number"]), current):
            kept = {"trial": row["number"], "tag": row["tag"], "value": row["value"]}
            steps.append({**kept, "units": units(spent), "seconds": round(spent, 1)})
    if not steps:
        return None
    if soup is not None and soup["kept"]:
        step = {"trial": None, "tag": "soup", "value": soup["value"], "members": soup["members"]}
        steps.append({**step, "units": units(spent), "seconds": round(spent, 1)})
    return {"unit_seconds": unit, "units": units(spent), "seconds": round(spent, 1), "kept": steps}


def describe_ledger(ledger: dict[str, Any] | None, metric: str) -> str | None:
    """One line: 'what the budget bought: 0.05x head-only 0.8100 -> 1.1x defaults 0.8350 ->
    3.2x trial 4 0.8500 (+0.0150); 5x spent'."""
    if not ledger or ledger["units"] is None:
        return None
    steps = []
    for step in ledger["kept"]:
        name = step["tag"] or f"trial {step['trial']}"
        if step["tag"] == "soup":
            name = f"soup of {len(step['members'])} runs"
        steps.append(f"{step['units']:g}x {name} {step['value']:.4f}")
    gain = ""
    defaults = next((s for s in ledger["kept"] if s["tag"] == "defaults"), None)
    last = ledger["kept"][-1]
    if defaults and last is not defaults:
        gain = f" ({last['value'] - defaults['value']:+.4f} over the default recipe)"
    return (
        f"what the budget bought (validation {metric}, in units of the default recipe's run): "
        + " -> ".join(steps)
        + gain
        + f"; {ledger['units']:g}x spent in all"
    )
