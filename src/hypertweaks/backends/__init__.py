"""Backends run a study's trials; the stage runner (search.py) calls them in its order. Each
runs every trial with `trial.run_trial` on the Strategy the experiment names: `embedded`
(Optuna's loop in this process, on SQLite or a PostgreSQL shared by workers) and `ray_tune`
(Ray Tune, written back as an Optuna study). The bench's replay of recorded curves
(bench/meta/simulate.py) runs the same Strategy."""

from __future__ import annotations

from typing import Protocol

import optuna

from hypertweaks.backends.embedded import EmbeddedBackend
from hypertweaks.trial import StudyContext


class Backend(Protocol):
    """Runs the study's trials (each with `trial.run_trial`) on the strategy the experiment
    names; the stage order is the runner's."""

    def open(self) -> None:
        """Open or create the study; refuse one that another experiment made."""

    def optimize(self) -> optuna.Study:
        """Run the trials the budget leaves; the study with every trial recorded."""


def make_backend(ctx: StudyContext) -> Backend:
    """The backend the experiment names."""
    if ctx.exp.backend == "ray":
        from hypertweaks.backends.ray_tune import RayBackend

        return RayBackend(ctx)
    return EmbeddedBackend(ctx)
