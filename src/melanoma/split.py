"""A training run's images and its validation split: scanned from the run's sources, decoded once,
grouped (near-duplicates across every source, joined by lesion id) and split so that each group stays
on one side. `model_split` draws a model's own split again from the settings its file records (for
`export --int8`'s calibration and `fit-ood`)."""

from __future__ import annotations

import json
import random
import sys
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .audit import near_duplicate_groups, thumbnail
from .data import CLASS_NAMES, fingerprint, read_samples, split_train_val
from .errors import UsageError
from .lineage import split_digest
from .preprocess import Preprocess, model_view
from .sources import Source, join_lesions, kaggle_source, read_sources_file, scan_sources

REPOSITORY = Path(__file__).resolve().parents[2]  # the repository's root, in an editable install (sources/ lives there)

if TYPE_CHECKING:
    from .images import ImageError
    from .modelinfo import ModelInfo


@dataclass
class Split:
    """The run's training images, decoded once, and its validation split (near-duplicate groups kept
    on one side). `views` is empty when the split was drawn without them (`keep_views=False`: a command
    that needs only some, e.g. the validation images); `views_of` then decodes those it is asked for."""

    samples: list
    views: list[np.ndarray]
    labels: np.ndarray
    groups: np.ndarray
    tr: np.ndarray
    va: np.ndarray
    unreadable: list[dict]
    fingerprint: str  # of the readable images (data.fingerprint: paths and contents)
    sources: list[Source]
    pre: Preprocess

    @property
    def digest(self) -> str:
        return split_digest([self.samples[i].rel for i in self.va])

    def views_of(self, idx: np.ndarray) -> list[np.ndarray]:
        if self.views:
            return [self.views[i] for i in idx]
        bad: list[ImageError] = []
        views = [model_view(im, self.pre) for _, im in read_samples(self.samples_of(idx), bad)]
        if bad:  # read before, with the same contents (the fingerprint): a file that broke since
            raise UsageError(f"{bad[0].name}: {bad[0].reason} (it was readable when the split was drawn)")
        return views

    def samples_of(self, idx: np.ndarray) -> list:
        return [self.samples[i] for i in idx]


def load_split(samples, pre: Preprocess, quiet: bool = False, keep_views: bool = True):
    """Decode once: the model's square view for training (unless `keep_views` is False), a thumbnail
    for near-duplicate groups."""
    from tqdm import tqdm

    views, thumbs, labels, kept = [], [], [], []
    bad: list[ImageError] = []
    bar = tqdm(samples, desc="reading images", unit="img", file=sys.stderr, mininterval=2, disable=quiet)
    for s, im in read_samples(bar, bad):
        if keep_views:
            views.append(model_view(im, pre))
        thumbs.append(thumbnail(im))
        labels.append(s.label)
        kept.append(s)
    return kept, views, np.stack(thumbs), np.array(labels), [{"file": e.name, "reason": e.reason} for e in bad]


def subsample(samples, limit: int | None, seed: int):
    if limit is None:
        return samples
    rng = random.Random(seed)
    out = []
    for label in range(len(CLASS_NAMES)):
        of_class = [s for s in samples if s.label == label]
        out += sorted(rng.sample(of_class, min(limit, len(of_class))), key=lambda s: s.rel)
    return out


def run_sources(config_sources: str | None, data_dir: Path | None) -> list[Source]:
    """A run's training sources: the sources file's (`locate_sources_file`), else the Kaggle data at
    `data_dir` alone (None only with a sources file)."""
    if config_sources:
        return read_sources_file(locate_sources_file(config_sources))
    assert data_dir is not None  # a run without a sources file is given its Kaggle folder (cli._train)
    return [kaggle_source(data_dir)]


def locate_sources_file(recorded: str) -> Path:
    """The sources file a model records, as it was typed when the model was trained (often relative to
    the repository, `sources/….toml`): from the working folder, else from the repository this package
    runs from (an editable install), so that calibrate, fit-ood and export work from any folder. Not
    found: refused in one line saying where it was looked for and how to name it (`--sources FILE`)."""
    path = Path(recorded)
    if path.is_file() or path.is_absolute():
        return path
    beside = REPOSITORY / path
    if beside.is_file():
        return beside
    raise UsageError(f"{recorded}: the sources file the model was trained from is not in the working folder or in {REPOSITORY}; "
                     "give it with --sources FILE (its source folders are read relative to it)")


def prepare_data(sources: list[Source], pre: Preprocess, limit: int | None, val_fraction: float, seed: int, quiet: bool = False,
                 keep_views: bool = True) -> Split:
    """Scan, decode and split the training images as a run with these settings does."""
    samples = subsample(scan_sources(sources), limit, seed)
    names = ", ".join(s.name for s in sources)
    samples, views, thumbs, labels, unreadable = load_split(samples, pre, quiet=quiet, keep_views=keep_views)
    if not samples:
        raise UsageError(f"{names}: none of the training images could be read")
    groups, tr, va = group_and_split(samples, thumbs, labels, val_fraction, seed)
    return Split(samples, views, labels, groups, tr, va, unreadable, fingerprint(samples), sources, pre)


def group_and_split(samples, thumbs: np.ndarray, labels: np.ndarray, val_fraction: float, seed: int):
    """Near-duplicate groups (the audit's, across every source) joined by lesion id, and the
    stratified train/validation split that keeps each group on one side."""
    groups = near_duplicate_groups(thumbs)
    if any(s.lesion for s in samples):  # a Kaggle-only run keeps the audit's groups as they are
        groups = join_lesions(groups, samples)
    tr, va = split_train_val(labels, groups, val_fraction, seed)
    return groups, tr, va


def split_seed_of(recipe: dict) -> int:
    """The seed that drew a recorded run's split: its split_seed, else its seed (runs from before split_seed)."""
    split_seed = recipe.get("split_seed")
    return recipe.get("seed", 0) if split_seed is None else split_seed


def with_sources(info: ModelInfo, sources: str | None) -> ModelInfo:
    """`info` whose recorded sources file is `sources` (a command's --sources: the same file elsewhere),
    when given; the data's fingerprint still has to match (`model_split`)."""
    if not sources:
        return info
    if not info.train_config.get("sources"):
        raise UsageError("--sources: this model was trained on the Kaggle data alone (--data names it), not from a sources file")
    return replace(info, train_config={**info.train_config, "sources": sources})


def model_data_dir(info: ModelInfo, data: str | None) -> Path | None:
    """The Kaggle folder a model's split is drawn again from (`--data`, else $MELANOMA_DATA or the default);
    None for a model trained from a sources file, whose folders the file names (`--sources` names another
    copy of it), so that the commands work from any folder. `--data` given for such a model is refused,
    not ignored."""
    from .data import resolve_data_dir

    recorded = info.train_config.get("sources")
    if recorded:
        if data:
            raise UsageError(f"--data {data}: this model was trained from a sources file ({recorded}), which names its training "
                             "folders; give another copy of that file with --sources FILE instead")
        return None
    return resolve_data_dir(data)


def model_split(info: ModelInfo, data_dir: Path | None, keep_views: bool = True) -> Split:
    """The training images and validation split the run that made a model drew, drawn again from its
    recorded settings and checked against the digests it carries; with `keep_views=False` no view is
    kept (`views_of` decodes the ones asked for: 21,221 views are 3.2 GB)."""
    recipe = info.train_config
    split = prepare_data(run_sources(recipe.get("sources"), data_dir), info.preprocess, recipe.get("limit"),
                         recipe.get("val_fraction", 0.1), split_seed_of(recipe), keep_views=keep_views)
    digest = info.validation.get("split_sha256")  # models from before the digest: the split is drawn by the same settings
    if split.fingerprint != info.data_fingerprint or digest not in (None, split.digest):
        where = data_dir if data_dir is not None else f"the sources file {recipe.get('sources')}"
        raise UsageError(f"{where}: not the training images and validation split the model was trained with")
    return split


def validation_views(info: ModelInfo, data_dir: Path | None) -> tuple[np.ndarray, np.ndarray]:
    """A model's own validation images (`model_split`) as model views, shuffled with seed 0, and
    their labels: `export --int8` measures activation ranges on the first `--calibration-images`
    and refits the int8 model's temperature, threshold and OOD cut-off on all of them."""
    split = model_split(info, data_dir, keep_views=False)
    order = np.random.default_rng(0).permutation(split.va)
    return np.stack(split.views_of(order)), split.labels[order]


def data_changed_message(out_dir: Path, data_dir: str | Path | None, samples) -> str:
    """Which files differ from the ones the run started with (split.json lists them)."""
    try:
        split = json.loads((out_dir / "split.json").read_text())
        before = set(split["train"]) | set(split["validation"])
    except (OSError, ValueError, KeyError):
        before = None
    now = {s.rel for s in samples}
    if before is None:
        detail = "its file list (split.json) is missing"
    elif before == now:
        detail = "the same files, but some contents changed"
    else:
        detail = f"{len(now - before)} images added, {len(before - now)} removed"
    return (f"{data_dir}: the training data changed since {out_dir} was started ({detail}; "
            "the data fingerprint differs); resuming would mix two data sets: start a new run with a new --out")
