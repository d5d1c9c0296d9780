"""The embedded backend: Optuna's optimize loop in this process, on the study's storage (SQLite,
or PostgreSQL shared by many workers). The budget is shared by every worker of the study."""

from __future__ import annotations

import time

import optuna
from optuna.trial import TrialState

from hypertweaks.refit import refit_reserve
from hypertweaks.results import trial_row, write_results
from hypertweaks.soup import soup_members
from hypertweaks.space import Recipe, fit_into, max_epochs, suggest
from hypertweaks.strategies import MIN_SOUP, strategy_of
from hypertweaks.study import (
    claim,
    counted,
    enqueue_interrupted,
    fail_stale_trials,
    no_time_for,
    open_study,
    same_experiment,
    seconds_used,
    timeout_passed,
)
from hypertweaks.trial import TRIAL_FAILURES, StudyContext, run_trial


class EmbeddedBackend:
    def __init__(self, ctx: StudyContext):
        self.ctx = ctx

    @property
    def exp(self):  # read at each use: the runner may lower the timeout before optimize
        return self.ctx.exp

    def open(self) -> None:
        ctx, exp = self.ctx, self.exp
        self.study, created = open_study(exp, max_epochs(ctx.space))
        same_experiment(self.study, exp)
        if created:
            # Only the worker that created the study enqueues the starting recipes: workers that
            # start together would otherwise all see an empty study and each enqueue them.
            self._enqueue_starts(self.study, resumed=False)
        self.finished = [t for t in self.study.get_trials(deepcopy=False) if counted(t)]
        if self.finished:
            ctx.display.message(f"resuming study {exp.name!r}: {len(self.finished)} trials done")

    def optimize(self) -> optuna.Study:
        ctx, exp, study, finished = self.ctx, self.exp, self.study, self.finished
        enqueue_interrupted(study)
        if finished and not self._budget_spent(study, count_waiting=True):
            # Workers resuming at the same moment may each add a start; only the first of a tag
            # runs (_ran_before).
            self._enqueue_starts(study, resumed=True)
        running = {t.number for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))}
        ctx.best.remove_orphans(running)
        if not self._budget_spent(study):
            time_left = None
            if exp.timeout is not None:
                time_left = exp.timeout - seconds_used(finished)
            study.optimize(
                self.objective,
                timeout=time_left,
                catch=TRIAL_FAILURES,
                callbacks=[self._after_trial],
                gc_after_trial=True,
            )
        return study

    def _enqueue_starts(self, study: optuna.Study, resumed: bool) -> None:
        """The starting recipes the study has not had yet (by tag). A resumed study adds those a
        larger budget now affords: the fixed (cheap) candidates, e.g. the head-only one that
        `trials: 1` skipped, and the soup's runs its first budget had no room for, as many as the
        trials left hold, and only if the soup then has MIN_SOUP runs."""
        ctx, exp = self.ctx, self.exp
        strategy = strategy_of(exp)
        trials = study.get_trials(deepcopy=False)
        tags = {t.user_attrs.get("tag") for t in trials if not t.user_attrs.get("surplus")}
        starts = strategy.starting_recipes(exp, ctx.defaults, ctx.task.num_layers)
        starts = [s for s in starts if s.tag not in tags]
        if resumed:
            fixed = [s for s in starts if s.fixed]
            soup = strategy.soup_tags(exp)
            runs = [s for s in starts if s.tag in soup and not s.fixed]
            if exp.trials is not None:
                used = [t for t in trials if counted(t) or t.state in _PENDING]
                runs = runs[: max(exp.trials - len(used) - len(fixed), 0)]
            if len(soup_members(study, exp)) + len(runs) < MIN_SOUP:
                runs = []
            starts = fixed + runs
        for start in starts:
            if start.fixed:  # no Optuna parameters: the sampler and pruner never see it
                study.enqueue_trial({}, {"tag": start.tag, "fixed_recipe": start.recipe})
            else:
                study.enqueue_trial(fit_into(ctx.space, start.recipe), {"tag": start.tag})

    def objective(self, trial: optuna.Trial) -> float:
        """One trial; records why it failed, or that Ctrl-C stopped it (so it is retried)."""
        claim(trial)  # which process runs it: a worker on this host can tell when it died
        try:
            return self._run_trial(trial)
        except TRIAL_FAILURES as error:
            trial.set_user_attr("error", f"{type(error).__name__}: {error}")
            raise
        except KeyboardInterrupt:
            trial.set_user_attr("interrupted", True)
            raise

    def _run_trial(self, trial: optuna.Trial) -> float:
        ctx, exp = self.ctx, self.exp
        if self._budget_spent(trial.study, before=trial.number):
            # Another worker took the last trial of the budget while this one was being created.
            trial.set_user_attr("surplus", True)
            trial.study.stop()
            raise optuna.TrialPruned("the study's budget is spent")
        fixed = trial.user_attrs.get("fixed_recipe")
        tag = trial.user_attrs.get("tag", "")
        soup_runs = strategy_of(exp).soup_tags(exp)[1:]
        if (fixed or tag in soup_runs) and (first := _ran_before(trial, tag)) is not None:
            # Workers that resumed together may each have enqueued this start: run it once.
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("duplicate_of", first)
            raise optuna.TrialPruned(f"trial {first} already ran the {tag} candidate")
        recipe = Recipe(**fixed) if fixed else suggest(trial, ctx.space)
        trials = trial.study.get_trials(deepcopy=False)
        if not fixed and (
            why := no_time_for(exp.timeout, trials, recipe.epochs, self._reserve(trials))
        ):
            # A trial the time left cannot hold would overrun the timeout (Optuna only stops
            # starting trials once it has passed), or be stopped there: not started, not counted.
            trial.set_user_attr("surplus", True)
            trial.set_user_attr("skipped", why)
            ctx.display.message(f"trial {trial.number} ({tag or 'search'}) not started: {why}")
            if tag not in soup_runs:  # the search ends here, though a shorter trial might fit
                trial.study.stop()
            raise optuna.TrialPruned(why)
        seed = exp.seed_of(trial.number)
        trial.set_user_attr("seed", seed)
        trial.set_user_attr("recipe", recipe.as_dict())
        ctx.display.trial_started(trial.number, recipe.as_dict(), tag)
        started, timed_out = time.monotonic(), False

        def on_epoch(report) -> bool:
            nonlocal timed_out
            ctx.display.epoch(trial.number, report.as_dict())
            if fixed:  # outside the search space: its curve must not set the pruner's bar
                return False
            trial.report(report.metrics[exp.metric], report.epoch)
            if tag in soup_runs:  # the default again, at another seed: the soup needs it whole
                return False
            if report.epoch >= recipe.epochs:  # pruning now would save nothing
                return False
            trials = trial.study.get_trials(deepcopy=False)
            running = time.monotonic() - started
            if not tag and timeout_passed(exp.timeout, trials, running, self._reserve(trials)):
                # a search trial ends at most an epoch past the timeout, as a soup run does (the
                # starting recipes run whole: the default is the one the study trusts most)
                timed_out = True
                return True
            return trial.should_prune()

        record = run_trial(
            exp,
            ctx.task,
            recipe,
            number=trial.number,
            seed=seed,
            device=ctx.device,
            best=ctx.best,
            tag=tag,
            on_epoch=on_epoch,
        )
        if record.stopped == "pruned" and timed_out:
            record.stopped = "timeout"
        for key, value in record.attrs().items():
            trial.set_user_attr(key, value)
        if record.stopped in ("pruned", "timeout"):
            raise optuna.TrialPruned(f"{record.stopped} at epoch {len(record.curve)}")
        return record.value

    def _reserve(self, trials: list) -> float:
        """The seconds kept back from the search for the final model's refit."""
        return refit_reserve(self.exp, self.ctx.task, trials, self.ctx.best)

    def _budget_spent(
        self, study: optuna.Study, before: int | None = None, count_waiting: bool = False
    ) -> bool:
        """Trials counted, plus trials that other workers are running (they will count), and
        with `count_waiting` the enqueued ones (retries included), against trials; trial time
        against timeout."""
        fail_stale_trials(study)  # a dead worker's trial stops counting (and is retried)
        trials = study.get_trials(deepcopy=False)
        if before is not None:
            trials = [t for t in trials if t.number < before]
        done = [t for t in trials if counted(t)]
        pending = _PENDING if count_waiting else (TrialState.RUNNING,)
        running = [t for t in trials if t.state in pending]
        if self.exp.trials is not None and len(done) + len(running) >= self.exp.trials:
            return True
        return self.exp.timeout is not None and seconds_used(done) >= self.exp.timeout

    def _after_trial(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> None:
        if not trial.user_attrs.get("surplus"):
            saved = self.ctx.best.meta()
            self.ctx.display.trial_finished(trial_row(trial), saved["trial"] if saved else None)
        write_results(self.ctx.run_dir / "results.json", study, exp=self.exp, task=self.ctx.task)
        if self._budget_spent(study):
            study.stop()


_PENDING = (TrialState.RUNNING, TrialState.WAITING)  # trials that will count


def _ran_before(trial: optuna.Trial, tag: str) -> int | None:
    """The earlier trial with this tag that ran or is running, if any."""
    for other in trial.study.get_trials(deepcopy=False):
        if other.number >= trial.number or other.user_attrs.get("tag") != tag:
            continue
        if counted(other) or other.state == TrialState.RUNNING:
            return other.number
    return None
