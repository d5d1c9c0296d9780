"""Images: is the tuned model at least as good as the default recipe at a budget of k default
runs? On magnetic-tile (6 surface-defect classes, ../shared/data) and an ELPV cut (defective or
functional solar cells, PyPI `elpv-dataset`), EfficientNet-Lite0 at 128 px, seeds 0-2.

    python -m bench.images [--seeds 0,1,2] [--budget 3] [--train 600] [--test 500]

Per dataset and seed: a study of the default recipe alone (its wall time is the unit), then a
study with a timeout of `budget` units (hypertweaks as shipped: defaults first, then TPE). Both
see the same train and test rows; the study seed changes the validation carve-out and every
trial's seed. Writes bench/results/images.json and prints the table.
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path

import numpy as np
from sklearn.model_selection import train_test_split

from bench import RESULTS_DIR
from bench.run import machine
from bench.tasks import DATA_ROOT

METRICS = ("accuracy", "macro_f1", "roc_auc")


def magnetic_tile_tables(out: Path, train_size: int, test_size: int) -> dict[str, Path]:
    """The class folders -> stratified train / test CSVs of image paths (the same for every
    seed: the study seed varies, the held-out rows do not)."""
    from hypertweaks.data.images import read_image_folder

    table = read_image_folder(DATA_ROOT / "magnetic-tile", "magnetic-tile")
    train, rest = train_test_split(
        table, train_size=train_size, stratify=table["label"], random_state=0
    )
    test_size = min(test_size, len(rest))
    test = rest if test_size == len(rest) else train_test_split(
        rest, train_size=test_size, stratify=rest["label"], random_state=0
    )[0]  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    paths = {"train": out / "train.csv", "test": out / "test.csv"}
    train.to_csv(paths["train"], index=False)
    test.to_csv(paths["test"], index=False)
    return paths


def experiment(paths: dict[str, Path], seed: int, runs_dir: Path, name: str, **fields) -> dict:
    from hypertweaks.demo import image_experiment

    size = int(fields.pop("image_size", 128))
    return image_experiment(
        paths, size, seed=seed, runs_dir=str(runs_dir), name=name, quiet=True, **fields
    )


def default_alone(
    dataset: str, paths: dict[str, Path], seed: int, runs: Path, tag: str = "", **fields
):
    """A study of the default recipe alone, the model its trial trained (the budget unit of a
    `pair`: no refit); `tag` names a study of another variant than its fields say."""
    from hypertweaks import tune

    suffix = tag + "".join(f"-{v}" for v in fields.values() if isinstance(v, str | int | float))
    name = f"{dataset}-s{seed}-default{suffix}"
    return tune(experiment(paths, seed, runs, name, trials=1, final_model="kept", **fields))


def validation_trials(result) -> dict:
    """A study's finished trials as the selector saw them (number, start tag, validation value)
    and the validation examples behind them: what an offline replay of a selection rule needs."""
    saved = json.loads(Path(result.results_path).read_text())
    trials = [
        {"number": t["number"], "tag": t.get("tag"), "value": t["value"]}
        for t in saved.get("trials", [])
        if t.get("state") == "complete"
    ]
    return {"validation_examples": saved["data"]["validation"], "trials": trials}


def variant_default(
    dataset: str,
    paths: dict[str, Path],
    seed: int,
    runs: Path,
    field: str,
    value: str,
    **fields,
) -> dict:
    """The default recipe alone, plain and with `field: value`, on the same rows and seed in the
    same run (session 44 ran `augment: scans` so, an option since removed); `fields` go to both.
    Each study's validation value is kept, so that a choice between the two can be replayed."""
    plain = default_alone(dataset, paths, seed, runs, **fields)
    alone = default_alone(dataset, paths, seed, runs, **fields, **{field: value})
    return {
        **studies_row(dataset, seed, {"default": plain, value: alone}),
        "validation": {"default": plain.best_value, value: alone.best_value},
        "validation_examples": validation_trials(plain)["validation_examples"],
    }


def studies_row(dataset: str, seed: int, studies: dict) -> dict:
    """One row of a variant experiment: each study's wall time and test scores, by its name."""
    return {
        "dataset": dataset,
        "seed": seed,
        "seconds": {name: study.seconds for name, study in studies.items()},
        **{
            name: {k: study.test_metrics.get(k) for k in METRICS} for name, study in studies.items()
        },
    }


def refit_default(
    dataset: str, paths: dict[str, Path], seed: int, runs: Path, schedule: str = "chosen", **fields
) -> dict:
    """The default recipe alone on train less a stratified validation carve-out (15%, the
    product's), then trained again on every training row, validation included, for the epochs
    its run chose on validation (issue 31, lever 1: refit): with a schedule of those epochs
    (`schedule` "chosen"), or with the recipe's whole schedule, stopped after them ("whole": the
    updates the chosen run made). The refit's validation rows are rows it trained on: its
    validation value means nothing, and its best epoch is near the last (`refit_best_epoch`)."""
    import pandas as pd

    from hypertweaks.config import Experiment
    from hypertweaks.data.splits import stratified_split

    table = pd.read_csv(paths["train"])
    fraction = Experiment.model_fields["validation_fraction"].default
    kept, held = stratified_split(table["label"].to_numpy(), fraction, seed)
    folder = runs.parent / f"{dataset}-refit-s{seed}"
    folder.mkdir(parents=True, exist_ok=True)
    split = {"train": folder / "train.csv", "validation": folder / "validation.csv"}
    table.iloc[kept].to_csv(split["train"], index=False)
    table.iloc[held].to_csv(split["validation"], index=False)
    alone = default_alone(dataset, {**paths, **split}, seed, runs, tag="-carved", **fields)
    saved = json.loads(Path(alone.results_path).read_text())
    epochs = saved["trials"][0]["best_epoch"]
    every_row = {**paths, "validation": split["validation"]}
    whole = schedule == "whole"
    space = {} if whole else {"space": {"epochs": epochs}}
    with validation_in_train(), stopped_after(epochs if whole else None):
        refit = default_alone(dataset, every_row, seed, runs, tag=f"-refit{epochs}{schedule}",
                              **space, **fields)  # fmt: skip
    refit_saved = json.loads(Path(refit.results_path).read_text())
    return {
        **studies_row(dataset, seed, {"default": alone, "refit": refit}),
        "epochs": epochs,
        "schedule": schedule,
        "refit_best_epoch": refit_saved["trials"][0]["best_epoch"],
        "rows": {"default": len(kept), "refit": len(table)},
    }


def refit_curve(dataset: str, paths: dict[str, Path], seed: int, runs: Path, **fields) -> dict:
    """The default alone (the 1x model), then the same study resumed with `final_model: refit`:
    the product's refit of the recipe's whole schedule, scored after every epoch on test and on
    the validation rows it trains on (`scored_refit`). One run replays every stopping rule: the
    epoch the default chose on validation (`chosen`), the first from it that passes the check,
    the last (shipped). The scoring draws random numbers between epochs, so the refit's
    augmentations after the first epoch differ from an unscored refit's: the same rule, not the
    same digits."""
    from hypertweaks import tune

    alone = default_alone(dataset, paths, seed, runs, **fields)
    saved = json.loads(Path(alone.results_path).read_text())
    curve: list[dict] = []
    with scored_refit(curve):
        refit = tune(
            experiment(paths, seed, runs, Path(alone.results_path).parent.name, trials=1,
                       final_model="refit", **fields)
        )  # fmt: skip
    return {
        **studies_row(dataset, seed, {"default": alone, "refit": refit}),
        "chosen": saved["trials"][0]["best_epoch"],
        "metric": saved["metric"],
        "trial_value": alone.best_value,  # the value the refit's check compares with
        "refit_summary": refit.refit,
        "curve": curve,
    }


@contextmanager
def scored_refit(curve: list[dict]) -> Iterator[None]:
    """Refits inside it score the validation rows (which they train on) and the test rows after
    every epoch into `curve`, then keep the weights of the epoch the product keeps (its last, or
    `stop_after`), so the product's check and hand-over go on as shipped."""
    from hypertweaks import refit, train

    shipped = refit.fit

    def fit(task, model, layers, recipe, train_data, val_data, *, stop_after=None, **kwargs):
        validation = task.dataset(task.splits.validation, False)
        test = task.dataset(task.splits.test, False)
        kept_epoch, kept = stop_after or recipe.epochs, {}

        def record(report) -> bool:
            scores = train.evaluate(task, model, test, kwargs["device"])
            curve.append({"epoch": report.epoch, "trained_on": report.metrics, "test": scores})
            if report.epoch == kept_epoch:
                kept.update({k: v.detach().clone() for k, v in model.state_dict().items()})
            return report.epoch == kept_epoch  # the run ends where the product's would

        result = shipped(task, model, layers, recipe, train_data, validation, on_epoch=record,
                         patience=recipe.epochs + 1, **kwargs)  # fmt: skip
        model.load_state_dict(kept)  # not fit's best validation epoch: the product's epoch
        return result

    refit.fit = fit
    try:
        yield
    finally:
        refit.fit = shipped


def refit_rules_table(rows: list[dict], metric: str) -> str:
    """Each refit stopping rule's test `metric` against the default's, from the scored curves
    (a rule's epoch counts if it passes the check on the study's own metric)."""
    rules = {
        "chosen epoch, checked": lambda r, e: [e],
        "first epoch from the chosen one that passes the check": lambda r, e: range(
            e, len(r["curve"]) + 1
        ),
        "last epoch, checked (shipped)": lambda r, e: [len(r["curve"])],
    }
    lines = [f"| dataset | seed | chosen | default | {' | '.join(rules)} |"]
    lines.append("|---" * (4 + len(rules)) + "|")
    diffs: dict[str, list[float]] = {rule: [] for rule in rules}
    for r in rows:
        chosen = r["chosen"]
        cells = []
        for rule, epochs in rules.items():
            score = r["default"][metric]
            for e in epochs(r, chosen):
                point = r["curve"][e - 1]  # the check is on the metric the study chose on
                if point["trained_on"][r["metric"]] >= r["trial_value"]:
                    score = point["test"][metric]
                    break
            diffs[rule].append(score - r["default"][metric])
            cells.append(f"{score:.3f}")
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {chosen} | {r['default'][metric]:.3f} | "
            + " | ".join(cells) + " |"
        )  # fmt: skip
    for rule, diff in diffs.items():
        d = np.array(diff) * 100
        lines.append(
            f"\n{rule} minus the default, {metric} points: mean {d.mean():+.1f}, "
            f"{int((d > 1e-9).sum())} better, {int((d < -1e-9).sum())} worse of {len(d)}"
        )
    return "\n".join(lines)


@contextmanager
def stopped_after(epochs: int | None) -> Iterator[None]:
    """Studies started inside it train every trial on its recipe's whole schedule but stop it
    after `epochs` epochs (`train.fit`'s stop_after); None changes nothing."""
    from functools import partial

    from hypertweaks import train, trial

    fit = trial.fit
    if epochs is not None:
        trial.fit = partial(train.fit, stop_after=epochs)
    try:
        yield
    finally:
        trial.fit = fit


@contextmanager
def validation_in_train() -> Iterator[None]:
    """Studies started inside it accept validation images that are training images (the
    product refuses them: scores of memory), as a refit's are."""
    from hypertweaks.tasks import image

    check, image.check_not_in_train = image.check_not_in_train, lambda *args: None
    try:
        yield
    finally:
        image.check_not_in_train = check


@contextmanager
def fresh_heads() -> Iterator[None]:
    """Studies started inside it fine-tune from a fresh random head, as before LP-FT."""
    from hypertweaks.tasks.image import ImageClassification

    shipped, ImageClassification.probe_start = ImageClassification.probe_start, False
    try:
        yield
    finally:
        ImageClassification.probe_start = shipped


def lp_ft_default(dataset: str, paths: dict[str, Path], seed: int, runs: Path) -> dict:
    """The default recipe alone from a fresh head and from a linear probe (LP-FT), on the same
    rows and seed in the same run."""
    with fresh_heads():
        fresh = default_alone(dataset, paths, seed, runs, tag="-fresh-head")
    probed = default_alone(dataset, paths, seed, runs, tag="-lp-ft")
    return studies_row(dataset, seed, {"default": fresh, "lp-ft": probed})


def variant_table(rows: list[dict], value: str) -> str:
    """The variant against the plain default, per dataset and seed, and its mean change."""
    lines = [
        f"| dataset | seed | accuracy | {value} | macro-F1 | {value} |",
        "|---|---|---|---|---|---|",
    ]
    for r in rows:
        d, b = r["default"], r[value]
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {d['accuracy']:.3f} | {b['accuracy']:.3f} | "
            f"{d['macro_f1']:.3f} | {b['macro_f1']:.3f} |"
        )
    for metric in ("accuracy", "macro_f1"):
        diff = np.array([r[value][metric] - r["default"][metric] for r in rows])
        better, worse = int((diff > 0).sum()), int((diff < 0).sum())
        lines.append(
            f"\n{value} - default, {metric}: mean {diff.mean():+.4f}, pairs better {better}, "
            f"equal {len(diff) - better - worse}, worse {worse}"
        )
    return "\n".join(lines)


def pair(
    dataset: str, paths: dict[str, Path], seed: int, budget: float, runs: Path, **fields
) -> dict:
    """The default alone (the unit) and the product at `budget` units; `fields` go to both
    studies (e.g. the metric they select and stop on)."""
    from hypertweaks import tune

    alone = default_alone(dataset, paths, seed, runs, **fields)
    tuned = tune(
        experiment(paths, seed, runs, f"{dataset}-s{seed}-{budget:g}x", trials=100,
                   timeout=budget * alone.seconds, **fields)
    )  # fmt: skip
    return {
        "dataset": dataset,
        "seed": seed,
        "unit_seconds": alone.seconds,
        "tuned_seconds": tuned.seconds,
        "trials": tuned.trials,
        "default": {k: alone.test_metrics.get(k) for k in METRICS},
        "tuned": {k: tuned.test_metrics.get(k) for k in METRICS},
        "tuned_recipe": tuned.best_params,
        "kept_default": tuned.best_params == alone.best_params,
        "tuned_validation": validation_trials(tuned),
        "tuned_refit": tuned.refit,  # the final model's refit (refit.py), or why it did not run
    }


@contextmanager
def image_soups() -> Iterator[None]:
    """Studies started inside it treat images as text: final_model soup averages the default's
    runs (the image kind does not, its soup unmeasured until `--soup` measures it)."""
    from hypertweaks import kinds

    kind = kinds.KINDS["image-classification"]
    kinds.KINDS[kind.name] = replace(kind, finals=("soup", "kept"))
    try:
        yield
    finally:
        kinds.KINDS[kind.name] = kind


def soup_pair(dataset: str, paths: dict[str, Path], seed: int, budget: float, runs: Path) -> dict:
    """The default alone (the unit), the product at `budget` units, and the product at the same
    budget with the image soup, on the same rows and seed in the same run."""
    from hypertweaks import tune

    row = pair(dataset, paths, seed, budget, runs)
    fields = experiment(paths, seed, runs, f"{dataset}-s{seed}-{budget:g}x-soup", trials=100,
                        timeout=budget * row["unit_seconds"])  # fmt: skip
    with image_soups():
        souped = tune(fields)
    final = souped.final_model or {}
    row["soup"] = {k: souped.test_metrics.get(k) for k in METRICS}
    row["soup_seconds"] = souped.seconds
    row["soup_final"] = {k: final.get(k) for k in ("members", "value", "kept", "margin")}
    if final.get("members"):
        row["soup_alone"] = soup_on_test(fields, souped.best_model_dir.parent, final["members"])
    return row


def soup_on_test(fields: dict, run_dir: Path, members: list[int]) -> dict:
    """The soup of the study's default runs on test whatever the final-model rule kept: as
    averaged (batch-norm statistics averaged too), and with its batch-norm statistics computed
    again over the training images (as the product's soup does since session 46)."""
    from hypertweaks.config import Experiment
    from hypertweaks.soup import averaged_model
    from hypertweaks.tasks import make_task
    from hypertweaks.train import evaluate

    task = make_task(Experiment(**fields), run_dir / "cache")
    task.prepare()
    test = task.dataset(task.splits.test, False)
    scores = {}
    for name, recompute in (("averaged", False), ("bn_recomputed", True)):
        model = averaged_model(task, run_dir, members, norm_statistics=recompute)
        scores[name] = evaluate(task, model, test, "cpu")
    return {name: {k: m.get(k) for k in METRICS} for name, m in scores.items()}


def soup_table(rows: list[dict], budget: float) -> str:
    """Macro-F1 of the default alone, the product and the product with the soup at `budget`,
    the soup's own test score (as averaged, and with batch-norm statistics recomputed), and the
    paired differences."""
    lines = [
        f"| dataset | seed | default | {budget:g}x | {budget:g}x with the soup | soup runs "
        "(kept) | the soup alone | with batch-norm statistics recomputed |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        f, alone = r["soup_final"], r.get("soup_alone", {})
        runs = (
            f"{len(f['members'])} ({'kept' if f['kept'] else 'not kept'})"
            if f.get("members")
            else "none"
        )
        scores = [r["default"], r["tuned"], r["soup"]]
        cells = [f"{m['macro_f1']:.3f}" for m in scores] + [runs]
        cells += [
            f"{alone[k]['macro_f1']:.3f}" if k in alone else ""
            for k in ("averaged", "bn_recomputed")
        ]
        lines.append(f"| {r['dataset']} | {r['seed']} | " + " | ".join(cells) + " |")
    pairs = {
        "the product with the soup": lambda r: r["soup"],
        "the soup alone": lambda r: r.get("soup_alone", {}).get("averaged"),
        "the soup alone, batch-norm statistics recomputed": lambda r: r.get("soup_alone", {}).get(
            "bn_recomputed"
        ),
    }
    lines.append("")
    for name, of in pairs.items():
        kept = [r for r in rows if of(r)]
        diff = np.array([of(r)["macro_f1"] - r["default"]["macro_f1"] for r in kept]) * 100
        better, worse = int((diff > 1e-9).sum()), int((diff < -1e-9).sum())
        lines.append(
            f"- {name} minus the default, macro-F1 points: mean {diff.mean():+.1f}, "
            f"{better} better and {worse} worse of {len(kept)} pairs"
        )
    return "\n".join(lines)


def table(rows: list[dict], budget: float) -> str:
    lines = [
        f"| dataset | seed | default acc | tuned acc ({budget:g}x) | default macro-F1 | tuned "
        "macro-F1 | trials | kept the default |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        d, t = r["default"], r["tuned"]
        lines.append(
            f"| {r['dataset']} | {r['seed']} | {d['accuracy']:.3f} | {t['accuracy']:.3f} | "
            f"{d['macro_f1']:.3f} | {t['macro_f1']:.3f} | {r['trials']} | {r['kept_default']} |"
        )
    for metric in ("accuracy", "macro_f1"):
        diff = np.array([r["tuned"][metric] - r["default"][metric] for r in rows])
        better, worse = int((diff > 0).sum()), int((diff < 0).sum())
        lines.append(
            f"\ntuned - default, {metric}: mean {diff.mean():+.4f}, pairs better {better}, "
            f"equal {len(diff) - better - worse}, worse {worse}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    from hypertweaks.demo import elpv_tables

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--budget", type=float, default=3.0)
    parser.add_argument("--train", type=int, default=600)
    parser.add_argument("--test", type=int, default=500)
    parser.add_argument("--datasets", default="magnetic-tile,elpv")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR / "images.json")
    parser.add_argument(
        "--class-weights",
        action="store_true",
        help="only the default recipe, plain and with class_weights: balanced (same rows and "
        "seeds); writes images_class_weights.json beside --out",
    )
    parser.add_argument(
        "--soup",
        action="store_true",
        help="beside each pair, the product at the same budget with the soup of the default's "
        "runs as its final model (as text studies); writes images_soup.json beside --out",
    )
    parser.add_argument(
        "--lp-ft",
        action="store_true",
        help="only the default recipe, from a fresh head and from a linear probe (same rows and "
        "seeds); writes images_lp_ft.json beside --out",
    )
    parser.add_argument(
        "--image-size",
        type=int,
        help="only the default recipe, at 128 px and at this size (same rows and seeds); "
        "writes images_image_size.json beside --out",
    )
    parser.add_argument(
        "--refit",
        nargs="?",
        const="chosen",
        choices=("chosen", "whole"),
        help="only the default recipe, and that recipe trained again on train + validation for "
        "the epochs its run chose (same rows and seeds), on a schedule of those epochs (chosen, "
        "the default) or on the recipe's whole schedule stopped after them (whole); writes "
        "images_refit.json (images_refit_whole.json) beside --out",
    )
    parser.add_argument(
        "--refit-curve",
        action="store_true",
        help="only the default recipe and its refit (final_model: refit) over the whole "
        "schedule, scored on test after every epoch: every stopping rule of the refit from one "
        "run; writes images_refit_curve.json beside --out",
    )
    parser.add_argument(
        "--metric",
        choices=("accuracy", "macro_f1", "roc_auc", "defect_recall", "loss"),
        help="the metric both studies of a pair select and stop on (default: the image "
        "kind's, accuracy)",
    )
    args = parser.parse_args(argv)
    experiments = (
        args.class_weights, args.soup, args.lp_ft, args.image_size, args.refit, args.refit_curve
    )  # fmt: skip
    if sum(map(bool, experiments)) > 1:
        parser.error(
            "--class-weights, --soup, --lp-ft, --image-size, --refit and --refit-curve are one "
            "experiment each"
        )
    variant = ("class_weights", "balanced") if args.class_weights else None
    if args.image_size:
        variant = ("image_size", str(args.image_size))
    fields = {"metric": args.metric} if args.metric else {}
    args.out.parent.mkdir(parents=True, exist_ok=True)  # before the studies, not after them
    work = Path(tempfile.mkdtemp(prefix="bench-images-"))
    rows = []
    try:
        for dataset in args.datasets.split(","):
            data = work / dataset
            if dataset == "elpv":
                paths = elpv_tables(data, args.train, args.test, 0)
            else:
                paths = magnetic_tile_tables(data, args.train, args.test)
            for seed in (int(s) for s in args.seeds.split(",")):
                if args.lp_ft:
                    rows.append(lp_ft_default(dataset, paths, seed, work / "runs"))
                elif args.refit_curve:
                    rows.append(refit_curve(dataset, paths, seed, work / "runs", **fields))
                elif args.refit:
                    rows.append(
                        refit_default(dataset, paths, seed, work / "runs", args.refit, **fields)
                    )
                elif variant:
                    field, value = variant
                    rows.append(
                        variant_default(dataset, paths, seed, work / "runs", field, value, **fields)
                    )
                elif args.soup:
                    rows.append(soup_pair(dataset, paths, seed, args.budget, work / "runs"))
                else:
                    rows.append(pair(dataset, paths, seed, args.budget, work / "runs", **fields))
                print(json.dumps(rows[-1]), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    if args.refit_curve:
        out = args.out.with_name("images_refit_curve.json")
        run = {"train": args.train, "test": args.test, "metric": args.metric or "accuracy"}
        out.write_text(json.dumps({"machine": machine("cpu"), **run, "rows": rows}, indent=1))
        print(refit_rules_table(rows, args.metric or "accuracy"))
        return 0
    if args.lp_ft:
        variant = ("lp_ft", "lp-ft")
    if args.refit:
        variant = ("refit" if args.refit == "chosen" else "refit_whole", "refit")
    if variant:
        out = args.out.with_name(f"images_{variant[0]}.json")
        run = {"train": args.train, "test": args.test, "metric": args.metric or "accuracy"}
        out.write_text(json.dumps({"machine": machine("cpu"), **run, "rows": rows}, indent=1))
        print(variant_table(rows, variant[1]))
        return 0
    if args.soup:
        out = args.out.with_name("images_soup.json")
        run = {"budget": args.budget, "train": args.train, "test": args.test}
        out.write_text(json.dumps({"machine": machine("cpu"), **run, "rows": rows}, indent=1))
        print(soup_table(rows, args.budget))
        return 0
    args.out.write_text(
        json.dumps(
            {
                "machine": machine("cpu"),
                "budget": args.budget,
                "metric": args.metric or "accuracy",
                "train": args.train,
                "test": args.test,
                "rows": rows,
            },
            indent=1,
        )  # fmt: skip
    )
    print(table(rows, args.budget))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
