"""Image data: a folder with one sub-folder per class, or a table of image paths and labels;
decoded and resized once per study into one uint8 tensor."""

from __future__ import annotations

import hashlib
from pathlib import Path

import pandas as pd
import torch

from hypertweaks.atomic import save_torch
from hypertweaks.data.tables import DataError, read_table, require_columns

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".webp", ".gif"}


def read_image_folder(path: Path, role: str) -> pd.DataFrame:
    """root/CLASS/*.png -> a table with `image` and `label` columns."""
    classes = sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not classes:
        raise DataError(
            f"{role} folder {str(path)!r} has no class sub-folders; lay it out as "
            f"{path}/CLASS_NAME/image.png, one sub-folder per class"
        )
    rows = []
    for folder in classes:
        images = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
        if not images:
            raise DataError(
                f"{role}: class folder {str(folder)!r} holds no images "
                f"({', '.join(sorted(IMAGE_SUFFIXES))}); add images or remove the folder"
            )
        rows.extend({"image": str(p), "label": folder.name} for p in images)
    return pd.DataFrame(rows)


def read_image_table(path: Path, image_column: str, label_column: str, role: str) -> pd.DataFrame:
    """A CSV/Parquet/JSONL table of image paths (relative to the table's folder) and labels."""
    table = read_table(path, role)
    require_columns(table, {"image_column": image_column, "label_column": label_column}, path)
    resolved = [str(p if Path(p).is_absolute() else path.parent / p) for p in table[image_column]]
    missing = [p for p in resolved if not Path(p).is_file()]
    if missing:
        raise DataError(
            f"{role} ({path}): {len(missing)} of {len(resolved)} image paths in column "
            f"{image_column!r} point to missing files, e.g. {missing[0]!r}; paths are relative "
            "to the table's folder"
        )
    return pd.DataFrame({"image": resolved, "label": table[label_column].tolist()})


def read_images_source(path: Path, image_column: str, label_column: str, role: str) -> pd.DataFrame:
    if not path.exists():
        raise DataError(f"{role} data {str(path)!r} does not exist")
    if path.is_dir():
        return read_image_folder(path, role)
    return read_image_table(path, image_column, label_column, role)


def to_8bit(image):
    """A high-bit-depth grayscale image (16-bit PNG/TIFF, 32-bit int, float) as 8-bit, scaled by
    its bit depth: PIL's own conversion clips every value above 255 to white."""
    import numpy as np
    from PIL import Image

    pixels = np.asarray(image).astype(np.float64)
    if image.mode.startswith("F"):
        top = 1.0 if pixels.size and np.nanmax(pixels) <= 1.0 else max(np.nanmax(pixels), 1.0)
    else:  # 16-bit containers (I;16*, and 16-bit PNGs that PIL opens as 32-bit "I")
        peak = float(pixels.max()) if pixels.size else 0.0
        top = 65535.0 if peak <= 65535 else peak
    scaled = np.clip(np.nan_to_num(pixels) / top * 255.0, 0, 255).round().astype(np.uint8)
    return Image.fromarray(scaled, mode="L")


def decode_image(path: str, size: int) -> tuple[torch.Tensor, bool]:
    """uint8 [C, size, size] (C = 1 for grayscale) and whether it is grayscale."""
    from PIL import Image, UnidentifiedImageError
    from torchvision.transforms.v2 import functional as F

    try:
        with Image.open(path) as image:
            image.load()
    except (UnidentifiedImageError, OSError) as error:
        raise DataError(f"cannot read image {path!r}: {error}; fix or remove the file") from None
    except Image.DecompressionBombError as error:
        raise DataError(
            f"image {path!r} is too large to decode safely ({error}); shrink it, or remove it"
        ) from None
    is_gray = image.mode in ("L", "LA", "1", "P;16") or image.mode[:1] in ("I", "F")
    if is_gray and image.mode not in ("L", "1", "LA"):
        image = to_8bit(image)  # 16-bit scans: scaled, not clipped at 255
    tensor = F.pil_to_tensor(image.convert("L" if is_gray else "RGB"))
    return F.resize(tensor, [size, size], antialias=True), is_gray


def decode_images(paths: list[str], size: int) -> torch.Tensor:
    """uint8 [N, C, size, size]; C is 1 when every image is grayscale, else 3."""
    decoded = [decode_image(path, size) for path in paths]
    images = [image for image, _ in decoded]
    if not all(gray for _, gray in decoded):
        images = [i.expand(3, -1, -1) if i.shape[0] == 1 else i for i in images]
    return torch.stack(images).contiguous()


def load_images_cached(paths: list[str], size: int, cache_dir: Path) -> torch.Tensor:
    """Decode once per study and image size; the cache is keyed by the files and their mtimes."""
    digest = hashlib.sha256(str(size).encode())
    for path in paths:
        stat = Path(path).stat()
        digest.update(f"{path}\0{stat.st_size}\0{stat.st_mtime_ns}\0".encode())
    cached = cache_dir / f"images-{digest.hexdigest()[:24]}.pt"
    if cached.exists():
        return torch.load(cached, weights_only=True)
    images = decode_images(paths, size)
    save_torch(images, cached)
    return images
