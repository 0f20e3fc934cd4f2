"""What one training epoch sees and how much each image counts: the augmented dataset, the seeded
batches, the per-epoch draw of capped diagnoses, the loss weights, mixup and distillation targets.
Everything is seeded by (seed, epoch, position), so a resumed or distributed run sees the same."""

from __future__ import annotations

import logging

import numpy as np
import torch
from torch import nn
from torch.utils.data import Dataset

from .seeding import derive_seed
from .sources import Source

LOG = logging.getLogger("melanoma.train")


class ArrayDataset(Dataset):
    """Decoded training views; sample i of epoch e is augmented with its own seed (seed, e, i), so the
    result does not depend on worker processes or on where a resumed run picked up."""

    def __init__(self, arrays: list[np.ndarray], labels: np.ndarray, augment, seed: int, targets: torch.Tensor | None = None):
        self.arrays, self.labels, self.augment, self.seed = arrays, labels, augment, seed
        self.targets = targets  # N x 2 class probabilities to learn instead of the labels (distillation)
        self.epoch = 1

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int):
        self.augment.set_random_seed(derive_seed(self.seed, self.epoch, i))
        return self.augment(image=self.arrays[i])["image"], int(self.labels[i])


def epoch_batches(n: int, batch_size: int, seed: int, epoch: int, pool: np.ndarray | None = None) -> list[list[int]]:
    """The shuffled batches of one epoch (a short last batch is dropped when there is more than one),
    over range(n), or over `pool` (the images this epoch sees, `epoch_pool`) when given."""
    if pool is not None:
        return [[int(pool[j]) for j in b] for b in epoch_batches(len(pool), batch_size, seed, epoch)]
    order = torch.randperm(n, generator=torch.Generator().manual_seed(derive_seed(seed, epoch))).tolist()
    batches = [order[i : i + batch_size] for i in range(0, n, batch_size)]
    if len(batches) > 1 and len(batches[-1]) < batch_size:
        batches.pop()
    return batches


def sampled_kinds(samples, sources: list[Source]) -> dict[tuple[str, str], tuple[np.ndarray, int]]:
    """(source, diagnosis) -> (the positions of its images in `samples`, how many an epoch sees), for
    every diagnosis a source caps with `per_epoch` (it has more images than that)."""
    out = {}
    for src in sources:
        for kind, cap in src.per_epoch.items():
            idx = np.array([i for i, s in enumerate(samples) if s.source == src.name and s.kind == kind], dtype=np.int64)
            if not len(idx):
                LOG.warning(f"note: source {src.name}: per_epoch names {kind!r}, a diagnosis none of its training images has")
            if len(idx) > cap:
                out[(src.name, kind)] = (idx, cap)
    return out


def epoch_pool(n: int, capped: dict, seed: int, epoch: int) -> np.ndarray | None:
    """The training positions one epoch sees: all, except that each capped diagnosis gives a fresh
    seeded draw of `cap` of its images (sampled, not repeated); None when nothing is capped."""
    if not capped:
        return None
    rng = np.random.default_rng(derive_seed(seed, epoch, 3))
    keep = np.ones(n, bool)
    for idx, cap in capped.values():
        keep[idx] = False
        keep[rng.choice(idx, cap, replace=False)] = True
    return np.nonzero(keep)[0]


def sample_weights(labels: np.ndarray, groups: np.ndarray, once: bool = False, scale: np.ndarray | None = None,
                   presence: np.ndarray | None = None) -> torch.Tensor:
    """Each training image's weight in the loss: the two classes weigh alike in all (as an epoch sees
    them: `presence` is the share of epochs an image is drawn in, `epoch_pool`); `scale` multiplies
    each image's weight first (its source's weight); with `once`, the images of a near-duplicate group
    (joined by lesion id where sources give one) share one image's weight (Kaggle train holds ~490 such
    groups, nearly all melanomas photographed several times, which otherwise teach those lesions
    several times over)."""
    _, group_of, group_size = np.unique(groups, return_inverse=True, return_counts=True)
    share = 1 / group_size[group_of] if once else np.ones(len(labels))
    share = share * (1 if scale is None else scale)
    seen = share * (1 if presence is None else presence)
    per_class = np.bincount(labels, weights=seen, minlength=2)
    return torch.tensor(share * (seen.sum() / (2 * np.maximum(per_class, 1e-12)))[labels], dtype=torch.float32)


def training_weights(samples, labels: np.ndarray, groups: np.ndarray, sources: list[Source], once: bool) -> tuple[torch.Tensor, np.ndarray, dict]:
    """A run's training images (`samples`, their labels and near-duplicate groups): each one's loss weight
    (`sample_weights`, its source's and diagnosis's weight applied), the share of epochs it is drawn in
    and the capped diagnoses (`sampled_kinds`)."""
    capped = sampled_kinds(samples, sources)
    presence = np.ones(len(samples))
    for idx, cap in capped.values():
        presence[idx] = cap / len(idx)
    source = {src.name: src for src in sources}
    weights = sample_weights(labels, groups, once=once, scale=np.array([source[s.source].weight_of(s.kind) for s in samples]), presence=presence)
    return weights, presence, capped


def mixup_batch(x: torch.Tensor, target: torch.Tensor, weight: torch.Tensor, alpha: float, seed: int):
    """mixup (Zhang et al. 2018): the batch blended with a seeded shuffle of itself, one Beta(alpha,
    alpha) share for the batch; targets (labels or probabilities) and sample weights blended alike."""
    rng = np.random.default_rng(seed)
    share = float(rng.beta(alpha, alpha))
    order = torch.from_numpy(rng.permutation(len(x))).to(x.device)
    if target.dim() == 1:
        target = nn.functional.one_hot(target, 2).float()
    blend = lambda t: share * t + (1 - share) * t[order]  # noqa: E731
    return blend(x), blend(target), blend(weight)


def mix_targets(labels: np.ndarray, p_malignant: np.ndarray, weight: float) -> torch.Tensor:
    """N x 2 (benign, malignant) probabilities: (1 - weight) * one-hot label + weight * teacher."""
    p = (1 - weight) * labels.astype(np.float64) + weight * np.asarray(p_malignant, np.float64)
    return torch.from_numpy(np.stack([1 - p, p], axis=1)).float()
