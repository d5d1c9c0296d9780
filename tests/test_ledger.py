"""What the budget bought: the model the selector kept as the budget grew, said in units of the
default recipe's run, in results.json, on the command line and in the report."""

from __future__ import annotations

from hypertweaks.ledger import budget_ledger, describe_ledger
from hypertweaks.strategies.selectors import KeepDefaults

KEEP = KeepDefaults("maximize", "accuracy", 200)  # one standard error at 0.83: about 0.027


def row(number, tag, value, seconds, state="complete"):
    return {"number": number, "tag": tag, "value": value, "seconds": seconds, "state": state,
            "finished": f"2026-12-03T10:00:{number:02d}"}  # fmt: skip


def test_each_change_of_the_kept_model_is_a_step_with_the_budget_spent_by_then():
    rows = [
        row(0, "head-only", 0.80, 5.0),
        row(1, "defaults", 0.83, 100.0),
        row(2, "", 0.845, 80.0),  # leads the default inside the noise: the default stays
        row(3, "", None, 30.0, state="pruned"),  # spent, never kept
        row(4, "", 0.90, 60.0),
    ]
    ledger = budget_ledger(rows, KEEP)
    assert [(s["trial"], s["units"]) for s in ledger["kept"]] == [(0, 0.05), (1, 1.05), (4, 2.75)]
    assert ledger["units"] == 2.75 and ledger["unit_seconds"] == 100.0
    line = describe_ledger(ledger, "accuracy")
    assert "0.05x head-only 0.8000 -> 1.05x defaults 0.8300 -> 2.75x trial 4 0.9000" in line
    assert "(+0.0700 over the default recipe); 2.75x spent in all" in line


def test_trials_count_in_the_order_they_finished():
    rows = [row(1, "defaults", 0.83, 100.0), row(0, "", 0.95, 50.0)]
    rows[1]["finished"] = "2026-12-03T10:00:09"  # trial 0 finished after the default
    assert [s["trial"] for s in budget_ledger(rows, KEEP)["kept"]] == [1, 0]


def test_without_a_finished_default_there_are_no_units_and_no_line():
    ledger = budget_ledger([row(0, "", 0.8, 10.0)], KEEP)
    assert ledger["units"] is None and ledger["seconds"] == 10.0
    assert describe_ledger(ledger, "accuracy") is None
    assert budget_ledger([], KEEP) is None
