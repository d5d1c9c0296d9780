"""The image part of the meta-dataset (issue 15): EfficientNet-Lite0 at 128 px on magnetic-tile
(../shared/data) and an ELPV cut (PyPI `elpv-dataset`), in the text design's cell format, under
bench/results/meta/<IMAGE_CUT>/. The simulator replays it like the text table
(`python -m bench meta simulate ... --images`).

The cut: 400 training rows, 100 validation and 400 test, stratified with a fixed seed, so the
rows never change with the run seed; the committed image bench (bench/images.py) trains on 400
rows too. The design: the product's image default (recipes.IMAGE_CLASSIFICATION) as the
reference, three recipes practitioners start from, then a scrambled Sobol sample of a space wider
than the product's image space (lr 5e-5..1e-2, every freezing depth, gradual unfreezing on and
off, 1-8 epochs).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd
from sklearn.model_selection import train_test_split

from bench.meta.design import SOBOL_SEED, WIDE_SPACE, sobol_recipe

IMAGE_TASKS = ("magnetic-tile", "elpv")
IMAGE_SIZE = 128
ROWS = {"train": 400, "validation": 100, "test": 400}
IMAGE_CUT = f"img{IMAGE_SIZE}-n{ROWS['train']}-v{ROWS['validation']}-t{ROWS['test']}"
CUT_SEED = 0  # the rows of the cut, whatever the run seed

IMAGE_WIDE_SPACE: dict[str, Any] = {
    **WIDE_SPACE,
    "learning_rate": (5e-5, 1e-2),  # CNNs fine-tune at about ten times transformers' lr
    "batch_size": (16, 32, 64),
}

# Recipe changes to the image default that practitioners start from.
IMAGE_LITERATURE: list[tuple[str, dict[str, Any]]] = [
    # A linear probe: the frozen backbone (its features cached), only the head trains.
    ("linear-probe", {"learning_rate": 3e-3, "epochs": 8, "warmup_ratio": 0.0, "freeze": "all"}),
    # A careful fine-tune: a tenth of the default's lr, longer.
    ("low-lr-longer", {"learning_rate": 1e-4, "epochs": 8}),
    # ULMFiT-style gradual unfreezing from the head down.
    ("gradual-unfreeze", {"epochs": 6, "freeze": "all", "gradual_unfreeze": True}),
]


def image_design(size: int, num_layers: int, dropout: float) -> list[dict[str, Any]]:
    """The first `size` image recipes, each {"name", "source", "recipe"}; `num_layers` is the
    backbone's number of freezable blocks, `dropout` its pretrained head dropout."""
    from scipy.stats import qmc

    from hypertweaks.kinds import default_recipe

    reference = default_recipe("image-classification", dropout)
    recipes = [{"name": "reference", "source": "recipes.IMAGE_CLASSIFICATION", "recipe": reference}]
    for name, change in IMAGE_LITERATURE:
        change = dict(change)
        if change.pop("freeze", None) == "all":
            change["freeze_layers"] = num_layers
        recipes.append({"name": name, "source": "literature", "recipe": reference | change})
    space = {**IMAGE_WIDE_SPACE, "freeze_layers": (0, num_layers)}
    sobol = qmc.Sobol(d=len(space), scramble=True, seed=SOBOL_SEED + 1)
    for i, u in enumerate(sobol.random(64)):
        recipe = sobol_recipe(u, space)
        recipes.append({"name": f"sobol-{i:02d}", "source": "sobol", "recipe": recipe})
    return recipes[:size]


def _tables(task: str) -> pd.DataFrame:
    from hypertweaks.data.images import read_image_folder

    if task == "magnetic-tile":
        from bench.tasks import DATA_ROOT

        return read_image_folder(DATA_ROOT / "magnetic-tile", "magnetic-tile")
    if task == "elpv":
        from hypertweaks.demo import elpv_table

        return elpv_table()
    raise ValueError(f"unknown image task {task!r}: choose from {', '.join(IMAGE_TASKS)}")


def write_cut(task: str, folder: Path) -> dict[str, Path]:
    """Stratified train / validation / test CSVs of image paths, the same on every call."""
    table = _tables(task)
    rest, parts = table, {}
    for role in ("train", "validation", "test"):
        part, rest = train_test_split(
            rest, train_size=ROWS[role], stratify=rest["label"], random_state=CUT_SEED
        )
        parts[role] = part
    folder.mkdir(parents=True, exist_ok=True)
    paths = {role: folder / f"{role}.csv" for role in parts}
    for role, part in parts.items():
        part.to_csv(paths[role], index=False)
    return paths


def load_image_task(task: str, device: str, work: Path):
    """hypertweaks' ImageClassification on the cut, prepared (images decoded and cached)."""
    from hypertweaks.config import make_experiment
    from hypertweaks.demo import image_experiment
    from hypertweaks.tasks.image import ImageClassification

    paths = write_cut(task, work / "cuts" / IMAGE_CUT / task)
    fields = {"validation": str(paths["validation"]), "trials": 1, "device": device}
    exp = make_experiment(image_experiment(paths, IMAGE_SIZE, name=f"meta-{task}", **fields))
    image = ImageClassification(exp, work / "cache" / IMAGE_CUT / task)
    image.prepare()
    return image
