"""The data set on disk: finding its images, reading them, splitting train/validation, fingerprinting.

Layout (the Kaggle download): DATA/{train,test}/{Benign,Malignant}/*.jpg. File names repeat
across class folders, so an image is identified by its path relative to DATA.
"""

from __future__ import annotations

import hashlib
import os
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from PIL import Image

from .images import IMAGE_SUFFIXES, ImageError, load_image

CLASS_NAMES = ("Benign", "Malignant")
SPLITS = ("train", "test")
DATA_ENV = "MELANOMA_DATA"


@dataclass(frozen=True)
class Sample:
    path: Path
    rel: str  # path relative to the data folder: the image's identity
    split: str
    label: int  # index into CLASS_NAMES


def check_outside(data: Path, *outputs: str | os.PathLike | None) -> None:
    """Refuse any output path inside the data folder: the project never writes there."""
    for out in outputs:
        if out is not None and Path(out).resolve().is_relative_to(data.resolve()):
            raise SystemExit(f"error: {out}: inside the data folder {data}; write outputs elsewhere")


def resolve_data_dir(data: str | os.PathLike | None) -> Path:
    """--data, else $MELANOMA_DATA, else ../shared/data/melanoma; must hold train/ or test/."""
    root = Path(data or os.environ.get(DATA_ENV) or Path("..") / "shared" / "data" / "melanoma")
    if not any((root / s).is_dir() for s in SPLITS):
        raise SystemExit(
            f"error: {root}: no train/ or test/ folder here; point --data or ${DATA_ENV} at the "
            "unzipped Kaggle 'Melanoma Cancer Dataset' (train/ and test/, each with Benign/ and Malignant/)"
        )
    return root


def scan(root: Path, split: str) -> list[Sample]:
    """Every image-named file of one split, sorted by relative path (deterministic order)."""
    samples = []
    for label, cls in enumerate(CLASS_NAMES):
        folder = root / split / cls
        if not folder.is_dir():
            continue
        for f in sorted(folder.rglob("*")):
            if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir():
                samples.append(Sample(f, f.relative_to(root).as_posix(), split, label))
    return samples


def read_samples(samples: list[Sample], unreadable: list[ImageError]) -> Iterator[tuple[Sample, Image.Image]]:
    """Each readable sample with its image; an unreadable one is reported on stderr, added to
    `unreadable`, and skipped (the rest go on)."""
    for s in samples:
        try:
            image = load_image(s.path, name=s.rel)
        except ImageError as exc:
            print(f"skipped {exc}", file=sys.stderr)
            unreadable.append(exc)
            continue
        yield s, image


def fingerprint(samples: list[Sample]) -> str:
    """SHA-256 over every file's relative path and content: changes when any image does."""
    h = hashlib.sha256()
    for s in sorted(samples, key=lambda s: s.rel):
        h.update(s.rel.encode())
        h.update(hashlib.sha256(s.path.read_bytes()).digest())
    return h.hexdigest()


def split_train_val(labels: np.ndarray, groups: np.ndarray, val_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Stratified train/validation indices with each near-duplicate group wholly on one side."""
    from sklearn.model_selection import StratifiedGroupKFold

    n_splits = max(2, round(1 / val_fraction))
    if len(set(groups)) < n_splits or min(np.bincount(labels, minlength=2)) < 2:
        raise SystemExit(
            f"error: too few training images for a {val_fraction:.0%} validation split "
            f"({len(labels)} images in {len(set(groups))} near-duplicate groups; both classes needed)"
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(labels)), labels, groups))
    if len(set(labels[val_idx])) < 2 or len(set(labels[train_idx])) < 2:
        raise SystemExit("error: the validation split did not get both classes; use more images (--limit) or a larger --val-fraction")
    return train_idx, val_idx
