"""How far apart validation scores must be to mean something. A 200-example validation set
measures accuracy to about +-3 points (one standard error near 0.8): picking the best of a few
recipes within that band picks noise, and the user should be told so."""

from __future__ import annotations

import math
from typing import Any

from hypertweaks.objective import best_of

# Metrics with a binomial standard error: shares of validation examples, and macro-F1, which
# is not a share, but whose binomial error on the same rows was 0.87-1.42 times its
# bootstrap error on 14 of the meta-dataset's 15 sets (tweeteval-emoji, 20 classes: 4.5; NOISE.md
# in bench/results/meta): near enough to keep a study that selects on it from taking a lead
# inside the noise, where before it had no margin at all.
BINOMIAL_ERROR = ("accuracy", "exact_match", "macro_f1")
Z95 = 1.96


def standard_error(metric: str, value: float, examples: int) -> float | None:
    """The binomial standard error of a BINOMIAL_ERROR metric on `examples` examples; None for
    the others (loss, ROC AUC...)."""
    if metric not in BINOMIAL_ERROR or examples <= 0 or not 0.0 <= value <= 1.0:
        return None
    return math.sqrt(value * (1.0 - value) / examples)


def within_noise(
    rows: list[dict[str, Any]], metric: str, direction: str, examples: int
) -> dict[str, Any] | None:
    """The completed trials whose validation value is within the best one's 95% band (1.96
    standard errors): among those, validation cannot tell which recipe is better."""
    values = {r["number"]: r["value"] for r in rows if r.get("value") is not None}
    best = best_of(values.values(), direction)
    if best is None:
        return None
    error = standard_error(metric, best, examples)
    if error is None:
        return None
    band = Z95 * error
    tied = sorted(n for n, v in values.items() if abs(v - best) <= band)
    return {
        "metric": metric,
        "validation_examples": examples,
        "standard_error": round(error, 4),
        "band": round(band, 4),
        "trials": tied,
    }


def describe(noise: dict[str, Any] | None) -> str | None:
    """One sentence for the user, or None when the best trial stands alone."""
    if not noise or len(noise["trials"]) < 2:
        return None
    return (
        f"{len(noise['trials'])} trials (#{', #'.join(map(str, noise['trials']))}) are within "
        f"validation noise of the best: {noise['metric']} on {noise['validation_examples']} "
        f"validation examples is measured to +-{noise['band']:.3f} (95%), so the choice among "
        "them is not reliable; more validation data would separate them"
    )


# The recommended recipe is a prior that holds across tasks; a trial that beats it on validation
# by less than this many standard errors has not shown it is better (strategies.selectors).
# Simulated on the meta-dataset (bench/results/meta, 13 tasks at 3x): +0.3 points [-0.4, +1.0]
# against taking the best on validation, which is not significant; it gains where the lead was
# noise.
KEEP_DEFAULTS_ERRORS = 1.0


def chosen_among(trials: int) -> float:
    """How many times the margin widens for a lead that is the best of `trials` trials: the
    largest of k equally good trials' noisy scores lies about sqrt(2 ln k) standard errors above
    their mean, so the best of many leads by that much with nothing to show for it. Replayed
    over six image pairs at 3x (bench/results/IMAGES.md): +1.1 macro-F1 over the default, where
    one error lost 0.9 to leads of 1-2 errors after 5-16 trials; text moves by 0.1 point or
    less. One error for the first trial; 1.2 at 2, 1.8 at 5, 2.1 at 10, 2.6 at 30."""
    return max(1.0, math.sqrt(2.0 * math.log(max(trials, 1))))


def describe_kept(kept: dict[str, Any] | None) -> str | None:
    """One sentence when the recommended recipe was kept over a trial that led it in noise."""
    if not kept:
        return None
    trials = kept.get("trials") or 1
    why = "one standard error"
    if chosen_among(trials) > 1:
        why += f", widened {chosen_among(trials):.1f}x for the best of {trials} trials"
    return (
        f"trial {kept['trial']} led the recommended recipe by {kept['lead']:.4f} validation "
        f"{kept['metric']}, less than the noise margin of {kept['margin']:.4f} ({why}), so the "
        "recommended recipe was kept"
    )
