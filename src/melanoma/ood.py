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
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

if TYPE_CHECKING:
    from .model import Classifier

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


def pooled_features(model: Classifier, views: list[np.ndarray], pre, device=torch.device("cpu"), block: int | None = None,
                    batch_size: int = 64) -> torch.Tensor:
    """N x C: each model view's feature maps after block `block` (or the last stage), averaged over positions."""
    from .preprocess import normalize

    model.eval()
    with torch.no_grad():
        return torch.cat([model.features_at(normalize(np.stack(views[i : i + batch_size]), pre).to(device), block)[1].float().mean((2, 3)).cpu()
                          for i in range(0, len(views), batch_size)])


def fit(features: np.ndarray, labels: np.ndarray, block: int | None = None) -> FeatureDistance:
    """Class means and the whitening of the shared (Ledoit-Wolf shrunk) within-class covariance of
    the pooled features (`pooled_features` of `block`)."""
    from sklearn.covariance import LedoitWolf

    features = scaled(torch.as_tensor(features, dtype=torch.float64), block).numpy()
    labels = np.asarray(labels)
    means = np.stack([features[labels == c].mean(0) for c in (0, 1)])
    cov = LedoitWolf(assume_centered=True).fit(features - means[labels]).covariance_
    values, vectors = np.linalg.eigh(cov)
    whiten = vectors / np.sqrt(np.maximum(values, 1e-12))
    return FeatureDistance(torch.tensor(means, dtype=torch.float32), torch.tensor(whiten, dtype=torch.float32), block)


def attach(model: Classifier, pre, train_views: list[np.ndarray], train_labels: np.ndarray, val_views: list[np.ndarray],
           device=torch.device("cpu")) -> float:
    """Fit the score on the training views, set it on `model` (model.ood; its `block` is what the
    model file records) and return the cut-off: the QUANTILE of the validation views' scores."""
    block = BLOCK if getattr(model.features, "taps_blocks", False) else None
    distance = fit(pooled_features(model, train_views, pre, device, block).numpy(), train_labels, block)
    with torch.no_grad():
        val_scores = distance.distance(pooled_features(model, val_views, pre, device, block)).numpy()
    model.ood = distance.to(device)
    return cutoff_of(val_scores)


def cutoff_of(val_scores: np.ndarray) -> float:
    """The OOD cut-off: the score QUANTILE of the validation images stay under."""
    return float(np.quantile(val_scores, QUANTILE))
