"""FER2013 as arrays: read the class-folder layout or the Kaggle CSV once, cache as ``.npz``.

Training wants the whole split in memory (28,709 faces of 48x48 are 66 MB as uint8), so the
``prepare`` stage decodes every JPEG once and later stages load one compressed array file.
Class order is :data:`emostream.training.fer2013.CLASSES` everywhere (the card's order).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from tqdm import tqdm

from emostream.training.fer2013 import CLASSES

#: FER2013 CSV label ids (``emotion`` column) -> class name, as the Kaggle release defines them
CSV_LABELS = ("angry", "disgust", "fear", "happy", "sad", "surprise", "neutral")
#: CSV ``Usage`` values -> our split names
CSV_SPLITS = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
SIZE = 48


class DataError(ValueError):
    """The data folder or file is not FER2013 in a layout we read; says what was expected."""


@dataclass(frozen=True)
class Split:
    """One split: ``images`` (N, 48, 48) uint8 and ``labels`` (N,) indices into CLASSES."""

    images: np.ndarray
    labels: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)

    def counts(self) -> dict[str, int]:
        found = np.bincount(self.labels, minlength=len(CLASSES))
        return {c: int(n) for c, n in zip(CLASSES, found, strict=True)}

    def take(self, index: np.ndarray) -> Split:
        return Split(self.images[index], self.labels[index])

    def limit(self, per_split: int | None, seed: int) -> Split:
        """A stratified-by-chance subset of at most ``per_split`` faces (tiny runs, tests)."""
        if per_split is None or per_split >= len(self):
            return self
        rng = np.random.default_rng(seed)
        return self.take(np.sort(rng.permutation(len(self))[:per_split]))


def _folder_root(path: Path) -> Path | None:
    """``path`` itself or ``path/fer2013`` when it holds ``train/`` and ``val/`` folders."""
    for base in (path, path / "fer2013"):
        if (base / "train").is_dir() and (base / "val").is_dir():
            return base
    return None


def read_folder(base: Path, progress: bool = True) -> Split:
    """``<base>/<class>/*.jpg`` (or png): every image, resized to 48x48 grayscale if needed."""
    files = [
        (p, i)
        for i, c in enumerate(CLASSES)
        for p in sorted((base / c).glob("*"))
        if p.suffix.lower() in (".jpg", ".jpeg", ".png")
    ]
    if not files:
        raise DataError(f"no images in class folders {', '.join(CLASSES)} under {base}")
    images = np.empty((len(files), SIZE, SIZE), dtype=np.uint8)
    for k, (p, _) in enumerate(tqdm(files, desc=f"reading {base.name}", disable=not progress)):
        img = cv2.imread(str(p), cv2.IMREAD_GRAYSCALE)
        if img is None:
            raise DataError(f"cannot decode {p}")
        if img.shape != (SIZE, SIZE):
            img = cv2.resize(img, (SIZE, SIZE), interpolation=cv2.INTER_AREA)
        images[k] = img
    return Split(images, np.array([i for _, i in files], dtype=np.int64))


def read_csv(path: Path, progress: bool = True) -> dict[str, Split]:
    """The Kaggle ``fer2013.csv`` (``emotion,pixels,Usage``): one split per Usage value."""
    rows: dict[str, tuple[list[np.ndarray], list[int]]] = {}
    with path.open(newline="") as f:
        reader = csv.DictReader(f)
        need = {"emotion", "pixels", "Usage"}
        if reader.fieldnames is None or not need <= set(reader.fieldnames):
            raise DataError(f"{path}: expected the columns emotion,pixels,Usage")
        for n, row in enumerate(tqdm(reader, desc=f"reading {path.name}", disable=not progress)):
            split = CSV_SPLITS.get(row["Usage"])
            try:
                label = CLASSES.index(CSV_LABELS[int(row["emotion"])])
                pixels = np.array(row["pixels"].split(), dtype=np.uint8)
            except (ValueError, IndexError) as exc:
                raise DataError(f"{path} row {n + 2}: {exc}") from None
            if split is None or pixels.size != SIZE * SIZE:
                raise DataError(f"{path} row {n + 2}: bad Usage or not {SIZE}x{SIZE} pixels")
            images, labels = rows.setdefault(split, ([], []))
            images.append(pixels.reshape(SIZE, SIZE))
            labels.append(label)
    return {
        s: Split(np.stack(imgs), np.array(labels, dtype=np.int64))
        for s, (imgs, labels) in rows.items()
    }


def read(path: Path, progress: bool = True) -> dict[str, Split]:
    """The ``train`` and ``val`` splits from a folder layout, a CSV or a prepared ``.npz``."""
    if path.is_file() and path.suffix == ".npz":
        return load_npz(path)
    if path.is_file() and path.suffix == ".csv":
        splits = read_csv(path, progress)
    elif (base := _folder_root(path)) is not None:
        splits = {s: read_folder(base / s, progress) for s in ("train", "val")}
    else:
        raise DataError(
            f"{path}: expected FER2013 as train/ and val/ class folders, fer2013.csv, or a "
            "prepared .npz (emostream train prepare)"
        )
    for need in ("train", "val"):
        if need not in splits:
            raise DataError(f"{path}: no {need} split")
    return splits


def save_npz(splits: dict[str, Split], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    arrays: dict[str, Any] = {}
    for name, s in splits.items():
        arrays[f"{name}_images"], arrays[f"{name}_labels"] = s.images, s.labels
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez_compressed(tmp, classes=np.array(CLASSES), **arrays)
    tmp.replace(path)


def load_npz(path: Path) -> dict[str, Split]:
    with np.load(path) as z:
        if tuple(str(c) for c in z["classes"]) != CLASSES:
            raise DataError(f"{path}: classes {list(z['classes'])} are not {list(CLASSES)}")
        names = {k.rsplit("_", 1)[0] for k in z.files if k.endswith("_images")}
        return {n: Split(z[f"{n}_images"], z[f"{n}_labels"]) for n in sorted(names)}
