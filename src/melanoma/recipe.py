"""A training run's recipe (`TrainConfig`): every setting that changes what the run learns, checked
when it is made (a bad value is a UsageError naming the flag), plus `workers`, the one runtime
setting a resumed run may change."""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from .errors import UsageError


@dataclass
class TrainConfig:
    arch: str = "efficientnet_lite0"  # or efficientnet_lite1/2 (bigger, slower), or "seed_cnn", the original project's network
    epochs: int = 30  # upper bound; early stopping usually ends sooner
    patience: int = 4  # epochs without a better validation AUC before stopping
    img_size: int | None = None  # default: the architecture's own (224 / 100)
    batch_size: int = 32
    lr: float = 1e-3  # peak of the one-cycle schedule
    weight_decay: float = 1e-2
    freeze_blocks: int = 4  # efficientnet_lite*: keep the stem and first N blocks at ImageNet weights (2-3x faster on CPU)
    val_fraction: float = 0.1
    target_sensitivity: float = 0.95  # the threshold is picked on validation to reach this
    seed: int = 0  # the network's start, the order of the batches, augmentation, dropout
    split_seed: int | None = None  # the images held out for validation (and --limit's draw); default: --seed. Ensemble members share it
    limit: int | None = None  # at most this many training images per class (quick runs, tests)
    workers: int = 0  # DataLoader worker processes
    init: str | None = None  # start from this model file's weights (same data, seed and split) instead of ImageNet's
    teacher: list[str] | None = None  # model files (same data and split) whose mean probability is part of the target
    distill: float = 0.5  # with teachers: target = (1 - distill) * true label + distill * teachers' probability
    augment: str = "standard"  # or "robust": also the ways real photos differ (preprocess.train_augment)
    colour: str = "fixed"  # or "matched": each image's colours matched to the training look (preprocess.match_colour)
    framing: str = "centre"  # or "lesion": the model sees a square around the spot (preprocess.lesion_box)
    label_smoothing: float = 0.0  # cross-entropy label smoothing (tempers over-confidence)
    duplicates: str = "each"  # or "once": a near-duplicate group weighs as much as one image (sample_weights)
    mixup: float = 0.0  # Beta(a, a) mixing of each batch with itself shuffled (tempers over-confidence); 0: off
    sources: str | None = None  # a sources file (sources.py) naming every training source; default: the Kaggle data alone
    diagnosis: float = 0.0  # weight of the kinds head's loss (images whose source names a diagnosis; kinds.py); 0: no kinds head
    other_target_sensitivity: float = 0.9  # with diagnosis: validation sensitivity for other skin cancers of the other-cancer threshold
    unnamed_kinds: str = "ignore"  # with diagnosis: "label" also teaches the kinds head images whose source names no kind (kinds.kind_set)

    @property
    def data_seed(self) -> int:
        """The seed that draws the run's images and validation split."""
        return self.seed if self.split_seed is None else self.split_seed

    RUNTIME: ClassVar[tuple[str, ...]] = ("workers",)  # how this machine runs it, not the recipe: free to change on --resume

    def __post_init__(self):
        problem = self.problem()
        if problem:
            raise UsageError(problem)

    def problem(self) -> str | None:
        """What is wrong with these settings, as one line naming the flag; None when nothing is."""
        if not 1 <= self.epochs <= 30:
            return "--epochs must be between 1 and 30"
        if not 0 < self.val_fraction <= 0.5:
            return "--val-fraction must be in (0, 0.5]"
        parts = round(1 / self.val_fraction)  # the split is one of `parts` group-stratified folds (data.split_train_val)
        if abs(1 / parts - self.val_fraction) > 0.005:
            return (f"--val-fraction {self.val_fraction:g} cannot be honoured: validation is one of k equal parts, and the nearest, "
                    f"1/{parts}, is {1 / parts:.3f}; use 1/k (0.5, 0.333, 0.25, 0.2, ..., 0.1, ...)")
        if not 0 < self.target_sensitivity <= 1:
            return "--target-sensitivity is a fraction in (0, 1], e.g. 0.95"
        if self.batch_size < 1 or self.patience < 1 or (self.img_size is not None and self.img_size < 32):
            return "--batch-size and --patience must be at least 1, --img-size at least 32"
        if not 0 <= self.distill <= 1:
            return "--distill is a fraction in [0, 1], e.g. 0.5"
        if self.distill != type(self).distill and not self.teacher:
            return "--distill needs at least one --teacher"
        if not 0 <= self.label_smoothing <= 0.5:
            return "--label-smoothing is in [0, 0.5], e.g. 0.1"
        if not 0 <= self.mixup <= 10:
            return "--mixup is a Beta parameter in [0, 10] (0 turns it off), e.g. 0.2"
        if not 0 <= self.diagnosis <= 10:
            return "--diagnosis is a loss weight in [0, 10] (0 turns it off), e.g. 0.5"
        if not 0 < self.other_target_sensitivity <= 1:
            return "--other-target-sensitivity is a fraction in (0, 1], e.g. 0.9"
        if self.unnamed_kinds not in ("ignore", "label") or (self.unnamed_kinds == "label" and not self.diagnosis):
            return "--unnamed-kinds is ignore or label, and label needs --diagnosis"
        if self.diagnosis and self.mixup:
            return "--diagnosis and --mixup do not go together (a blend of two images has no one diagnosis)"
        if not 0 < self.lr < 1 or not 0 <= self.weight_decay < 1:
            return "--lr must be in (0, 1) and --weight-decay in [0, 1), e.g. 0.001 and 0.0001"
        if self.freeze_blocks < 0 or self.workers < 0:
            return "--freeze-blocks and --workers must be 0 or more"
        if self.limit is not None and self.limit < 2:
            return "--limit must be at least 2 images per class"
        return None
