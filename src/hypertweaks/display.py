"""What the user sees while a study runs: a live rich table, or plain log lines with --quiet."""

from __future__ import annotations

import logging
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.table import Table
from rich.text import Text

from hypertweaks.objective import best_of, direction_of

log = logging.getLogger("hypertweaks")

SHORT = {
    "learning_rate": "lr",
    "batch_size": "batch",
    "epochs": "ep",
    "dropout": "drop",
    "weight_decay": "wd",
    "schedule": "sched",
    "warmup_ratio": "warm",
    "freeze_layers": "freeze",
    "gradual_unfreeze": "gradual",
}


def format_value(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:.2e}" if 0 < abs(value) < 1e-3 else f"{value:.3g}"
    return str(value)


def format_recipe(recipe: dict[str, Any]) -> str:
    return " ".join(f"{SHORT.get(k, k)}={format_value(v)}" for k, v in recipe.items())


class LogDisplay:
    """Plain log lines (for --quiet, CI and files)."""

    def __init__(self, metric: str):
        self.metric = metric
        self.direction = direction_of(metric)

    def __enter__(self) -> LogDisplay:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def message(self, text: str) -> None:
        log.info(text)

    def trial_started(self, number: int, recipe: dict[str, Any], tag: str) -> None:
        log.info("trial %d%s: %s", number, f" ({tag})" if tag else "", format_recipe(recipe))

    def epoch(self, number: int, report: dict[str, Any]) -> None:
        log.info(
            "trial %d epoch %d: val %s=%.4f train_loss=%.4f (%.0fs)",
            number,
            report["epoch"],
            self.metric,
            report[self.metric],
            report["train_loss"],
            report["seconds"],
        )

    def trial_finished(self, row: dict[str, Any], best: int | None = None) -> None:
        """`best`: the number of the study's best model on disk (the keep-the-defaults rule
        may hold it against a higher value), when known."""
        if row["state"] == "complete":
            shown = f"best val {self.metric}={row['value']:.4f}"
        elif row["state"] == "pruned":
            shown = f"at epoch {len(row['curve'])}, val {self.metric}={row['last_value']:.4f}"
            if row.get("stopped") == "timeout":
                shown = f"stopped by the timeout {shown}"
        else:
            shown = row.get("error") or ("interrupted" if row.get("interrupted") else "")
        log.info("trial %d %s: %s", row["number"], row["state"], shown)


class LiveDisplay(LogDisplay):
    """A live table of finished trials with the trial in progress beneath it."""

    def __init__(self, metric: str, console: Console | None = None):
        super().__init__(metric)
        self.console = console or Console()
        self.rows: list[dict[str, Any]] = []
        self.best: int | None = None  # the trial whose model is the best on disk
        self.current = Text()
        self.live = Live(self._render(), console=self.console, refresh_per_second=4)

    def __enter__(self) -> LiveDisplay:
        self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if not self.rows:  # no trial ran (e.g. bad input): no empty table above the message
            self.live.transient = True
        self.live.__exit__(*exc)

    def message(self, text: str) -> None:
        self.live.console.print(text, markup=False, highlight=False)  # paths may hold [brackets]

    def _render(self) -> Group:
        table = Table(title="trials", title_justify="left", expand=False)
        for column in ("#", "state", f"val {self.metric}", "epoch", "seconds", "recipe"):
            table.add_column(column)
        best = best_of((r.get("value") for r in self.rows), self.direction)
        for row in self.rows[-15:]:
            value = row.get("value")
            if self.best is not None:
                chosen = row["number"] == self.best
            else:
                chosen = value is not None and value == best
            style = "bold green" if chosen else None
            cells = (
                str(row["number"]),
                "timeout" if row.get("stopped") == "timeout" else row["state"],
                "-" if value is None else f"{value:.4f}",
                str(row.get("best_epoch", "-")),
                f"{row.get('seconds', 0):.0f}",
                format_recipe(row["recipe"]),
            )
            table.add_row(*(Text(cell) for cell in cells), style=style)  # text, not markup
        return Group(table, self.current)

    def trial_started(self, number: int, recipe: dict[str, Any], tag: str) -> None:
        tagged = f" ({tag})" if tag else ""
        self.current = Text.assemble(
            (f"trial {number}", "bold"), f"{tagged} started: {format_recipe(recipe)}"
        )
        self.live.update(self._render())

    def epoch(self, number: int, report: dict[str, Any]) -> None:
        self.current = Text.assemble(
            (f"trial {number}", "bold"),
            f" epoch {report['epoch']}: val {self.metric} {report[self.metric]:.4f}, "
            f"train loss {report['train_loss']:.4f}, {report['seconds']:.0f}s",
        )
        self.live.update(self._render())

    def trial_finished(self, row: dict[str, Any], best: int | None = None) -> None:
        self.rows.append(row)
        self.best = best
        self.current = Text()
        self.live.update(self._render())
