"""The data set on disk: finding its images, reading them, splitting train/validation, fingerprinting.

Layout (the Kaggle download): DATA/{train,test}/{Benign,Malignant}/*.jpg. File names repeat
across class folders, so an image is identified by its path relative to DATA. Evaluation also
takes any other labelled images (`labelled_set`): a folder with Benign/ and Malignant/ in it, or a
CSV of path,label rows.
"""

from __future__ import annotations

import csv
import hashlib
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from .errors import UsageError
from .images import IMAGE_SUFFIXES, ImageError, load_image

LOG = logging.getLogger(__name__)

CLASS_NAMES = ("Benign", "Malignant")
SPLITS = ("train", "test")
DATA_ENV = "MELANOMA_DATA"


@dataclass(frozen=True)
class Sample:
    path: Path
    rel: str  # path relative to the data folder: the image's identity
    split: str
    label: int  # index into CLASS_NAMES
    kind: str = ""  # a finer label from a labels CSV's column (evaluate --by-kind), e.g. the diagnosis


def check_outside(data: Path | None, *outputs: str | os.PathLike | None) -> None:
    """Refuse any output path inside the data folder (None: none given): the project never writes there."""
    if data is None:
        return
    for out in outputs:
        if out is not None and Path(out).resolve().is_relative_to(data.resolve()):
            raise UsageError(f"{out}: inside the data folder {data}; write outputs elsewhere")


def data_dir(data: str | os.PathLike | None) -> Path:
    """--data, else $MELANOMA_DATA, else ../shared/data/melanoma."""
    return Path(data or os.environ.get(DATA_ENV) or Path("..") / "shared" / "data" / "melanoma")


def resolve_data_dir(data: str | os.PathLike | None) -> Path:
    """`data_dir`, which must hold train/ or test/."""
    root = data_dir(data)
    if not any((root / s).is_dir() for s in SPLITS):
        raise UsageError(
            f"{root}: no train/ or test/ folder here; point --data or ${DATA_ENV} at the "
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
            LOG.warning(f"skipped {exc}")
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
        raise UsageError(
            f"too few training images for a {val_fraction:.0%} validation split "
            f"({len(labels)} images in {len(set(groups))} near-duplicate groups; both classes needed)"
        )
    folds = StratifiedGroupKFold(n_splits=n_splits, shuffle=True, random_state=seed)
    train_idx, val_idx = next(folds.split(np.zeros(len(labels)), labels, groups))
    if len(set(labels[val_idx])) < 2 or len(set(labels[train_idx])) < 2:
        raise UsageError("the validation split did not get both classes; use more images (--limit) or a larger --val-fraction")
    return train_idx, val_idx


@dataclass(frozen=True)
class LabelledSet:
    samples: list[Sample]
    layout: str  # "kaggle" (DATA/test/...), "folders" (DATA/Benign, DATA/Malignant) or "csv"
    source: Path  # the folder or CSV file
    train_dir: Path | None = None  # the Kaggle layout's train/ beside test/: the clean subset is measured against it
    others: frozenset = frozenset()  # rel of the CSV's images labelled Other: skin cancers that are not melanoma, scored as not melanoma


def labelled_set(data: str | os.PathLike | None, labels: str | os.PathLike | None = None, kind_column: str | None = None) -> LabelledSet:
    """The images `evaluate` scores, with their labels, from one of three layouts:
    `labels` (a CSV of path,label rows; `file` is accepted for `path`; relative paths are relative
    to the CSV's folder; labels Benign/Malignant in any case, or 0/1); else DATA/test/{Benign,Malignant}
    (the Kaggle download, whose train/ gives the clean subset); else DATA/{Benign,Malignant}. A CSV's
    label Other (skin cancers that are not melanoma, external-dev/other-cancers) counts as not melanoma,
    and `others` names those images.
    DATA defaults as for training (`data_dir`). `kind_column` names a column of the CSV whose value
    each sample keeps as its `kind`."""
    if labels is not None:
        return _csv_set(Path(labels), kind_column)
    if kind_column is not None:
        raise UsageError("--by-kind reads a column of the labels CSV: give --labels FILE.csv")
    root = data_dir(data)
    if (root / "test").is_dir():
        samples = scan(root, "test")
        if not samples:
            raise UsageError(f"{root / 'test'}: no images in test/Benign or test/Malignant")
        return LabelledSet(samples, "kaggle", root, root / "train" if (root / "train").is_dir() else None)
    if any((root / c).is_dir() for c in CLASS_NAMES):
        samples = scan(root, "")  # root/""/Benign is root/Benign
        if not samples:
            raise UsageError(f"{root}: no images in Benign/ or Malignant/")
        return LabelledSet(samples, "folders", root)
    raise UsageError(f"{root}: no labelled images found: give a folder with test/Benign and test/Malignant (the Kaggle "
                     "layout) or with Benign/ and Malignant/, or --labels FILE.csv with path,label rows")


def read_csv_rows(path: Path, what: str = "labels CSV") -> list[dict]:
    """The rows of a CSV file with a header line (the one reader of every labels CSV: evaluate's, a
    training source's, the selection rule's); a file that cannot be read is refused in one line naming it."""
    try:
        with open(path, newline="") as f:
            return list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise UsageError(f"{path}: cannot read the {what} ({getattr(exc, 'strerror', None) or exc})") from None


def csv_column(rows: list[dict], *names: str) -> str | None:
    """The header name of the first of `names` a CSV's rows have, matched without case or spaces (None: none)."""
    columns = {c.strip().lower(): c for c in (rows[0] if rows else {}) if c}
    return next((columns[n.strip().lower()] for n in names if n.strip().lower() in columns), None)


def _csv_set(path: Path, kind_column: str | None = None) -> LabelledSet:
    """The rows of a path,label CSV as samples; a missing file or an unknown label is refused in one line."""
    names = {c.lower(): i for i, c in enumerate(CLASS_NAMES)} | {str(i): i for i in range(len(CLASS_NAMES))}
    rows = read_csv_rows(path)
    column, label_column = csv_column(rows, "path", "file"), csv_column(rows, "label")
    if not rows or column is None or label_column is None:
        raise UsageError(f"{path}: a labels CSV needs a header with path (or file) and label, and at least one row")
    kind = csv_column(rows, kind_column) if kind_column else None
    if kind_column and kind is None:
        raise UsageError(f"{path}: no column {kind_column!r} for --by-kind (columns: {', '.join(c for c in rows[0] if c)})")
    samples, missing, others = [], [], set()
    for n, row in enumerate(rows, start=2):  # row 1 is the header
        rel, label = (row.get(column) or "").strip(), (row.get(label_column) or "").strip()
        if label.lower() == "other":
            others.add(rel)
            label = CLASS_NAMES[0]
        if label.lower() not in names:
            raise UsageError(f"{path}, row {n}: unknown label {label!r} (Benign, Malignant or Other, or 0 or 1)")
        file = Path(rel) if Path(rel).is_absolute() else path.parent / rel
        if not rel or not file.is_file():
            missing.append(f"row {n} {rel!r}")
            continue
        samples.append(Sample(file, rel, "", names[label.lower()], (row.get(kind) or "").strip() if kind else ""))
    if missing:
        raise UsageError(f"{path}: {len(missing)} listed image(s) not found (first: {missing[0]}); paths are relative to the CSV's folder")
    return LabelledSet(samples, "csv", path, others=frozenset(others))
