"""How unlike the training images a photo is: the out-of-distribution (OOD) score.

The score is the squared Mahalanobis distance of the model's pooled features to the nearer of the
two training classes (Lee et al. 2018), with one covariance shared by the classes, shrunk by
Ledoit-Wolf (scikit-learn). Which features: for EfficientNet-Lite the output of its last block
(`BLOCK`, 320 channels, before the 1x1 head convolution), as they are; for other networks (and model
files fitted before `BLOCK` existed: `ModelInfo.ood_block` None) the last stage's 1,280, scaled to
unit length. The last stage stopped telling pictures of anything else from lesions once the model
learned several archives; the last block still does, while earlier blocks also flag ordinary phone
photos and noisy copies (chosen on validation, the external development sets and the non-lesion
pictures; docs/ood.md). It is fitted on the training images of the
model's own split; the cut-off is the score that `QUANTILE` of the validation images stay under. Both
travel in the model file: the class means and whitening matrix as tensors (`ood.*`), the cut-off and
block in its metadata (`ModelInfo.ood_cutoff`, `ood_block`). Hand-written because it is a few lines
around scikit-learn's covariance estimate, and it has to run inside the model (torch and the ONNX graph).
What the model runs is here; fitting it to a model's training images is `ood_fit.py`.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

QUANTILE = 0.99  # share of validation images under the cut-off
BLOCK = 15  # EfficientNet-Lite block whose output the score reads: the last of its 16


class FeatureDistance(nn.Module):
    """Feature maps (B x C x h x w) -> the OOD score of each image (B,): the squared Mahalanobis
    distance of the pooled features to the nearer class mean."""

    means: torch.Tensor  # buffers (register_buffer)
    whiten: torch.Tensor

    def __init__(self, means: torch.Tensor, whiten: torch.Tensor, block: int | None = None):
        super().__init__()
        self.register_buffer("means", means)  # classes x C
        self.register_buffer("whiten", whiten)  # C x k: features @ whiten has identity covariance
        self.block = block  # the maps it reads: block `block`'s output (as they are), or the last stage's (unit length)

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.distance(maps.float().mean((2, 3)))

    def distance(self, pooled: torch.Tensor) -> torch.Tensor:
        z = (scaled(pooled.float(), self.block)[:, None, :] - self.means[None]) @ self.whiten  # B x classes x k
        return (z**2).sum(-1).min(1).values


def scaled(pooled: torch.Tensor, block: int | None) -> torch.Tensor:
    """A middle block's pooled features as they are; the last stage's scaled to unit length."""
    return pooled if block is not None else pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-12)


def cutoff_of(val_scores: np.ndarray) -> float:
    """The OOD cut-off: the score QUANTILE of the validation images stay under."""
    return float(np.quantile(val_scores, QUANTILE))
