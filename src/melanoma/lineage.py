"""Which run a model file came from: the checks that let one run build on another's model file.

`--init` and `--teacher` take a trained model into a new run. If that model had trained on images
this run holds out for validation, the validation figures (early stopping, the threshold, the
calibration) would be flattered by a leak; so the model must come from the same data and the same
validation split, recorded as a digest of the held-out file names (`split_digest`).
"""

from __future__ import annotations

import hashlib
from dataclasses import replace

from .errors import UsageError
from .modelinfo import ModelInfo
from .preprocess import Preprocess


def split_digest(validation_files: list[str]) -> str:
    return hashlib.sha256("\n".join(sorted(validation_files)).encode()).hexdigest()


def check_same_run(path: str, info: ModelInfo, config, pre: Preprocess, data_fingerprint: str, split: str,
                   weights_only: bool = False) -> None:
    """Refuse a model file (--init, --teacher) whose training images could be validation images of
    this run (other data, another validation split) or whose architecture or preprocessing differ
    (`weights_only`: for --init, where only the weights are taken, the colour matching and framing
    may differ, so a --colour matched or --framing lesion run can start from a model without them).
    Models from before the split digest was stored are compared by the settings that draw the split.
    `config` is the run's recipe.TrainConfig."""
    recipe = info.train_config
    same_split = info.data_fingerprint == data_fingerprint and (
        info.validation.get("split_sha256") == split if "split_sha256" in info.validation
        else (recipe.get("seed"), recipe.get("val_fraction"), recipe.get("limit")) == (config.data_seed, config.val_fraction, config.limit))
    theirs = replace(info.preprocess, colour_reference=pre.colour_reference, framing=pre.framing) if weights_only else info.preprocess
    if info.arch != config.arch or theirs != pre:
        raise UsageError(f"{path}: a {info.arch} model at {info.preprocess.image_size} px; "
                         f"this run is {config.arch} at {pre.image_size} px (give the same --arch and --img-size)")
    if not same_split:
        raise UsageError(f"{path}: trained on other data or with another validation split (other images, "
                         "--seed or --split-seed, --val-fraction or --limit); its training images would leak into this run's validation")
