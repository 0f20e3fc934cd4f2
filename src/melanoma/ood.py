"""How unlike the training images a photo is: the out-of-distribution (OOD) score.

The score is the squared Mahalanobis distance of the model's pooled last-stage features, scaled to
unit length, to the nearer of the two training classes (Lee et al. 2018), with one covariance shared
by the classes, shrunk by Ledoit-Wolf (scikit-learn) because 1,280 dimensions are many for ~10,000
images. It is fitted on the training images of the model's own split; the cut-off is the score that
`QUANTILE` of the validation images stay under. Both travel in the model file: the class means and
whitening matrix as tensors (`ood.*`), the cut-off in its metadata (`ModelInfo.ood_cutoff`). Chosen
against the same distance without the unit length (it let every photograph through), the energy of
the logits, the maximum softmax probability, k-nearest neighbours and fewer dimensions (README,
"Knowing when not to trust it"). Hand-written because it is a few lines around scikit-learn's
covariance estimate, and it has to run inside the model (torch and the ONNX graph).
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

QUANTILE = 0.99  # share of validation images under the cut-off


class FeatureDistance(nn.Module):
    """Feature maps (B x C x h x w) -> the OOD score of each image (B,): the squared Mahalanobis
    distance of the pooled features to the nearer class mean."""

    def __init__(self, means: torch.Tensor, whiten: torch.Tensor):
        super().__init__()
        self.register_buffer("means", means)  # classes x C
        self.register_buffer("whiten", whiten)  # C x k: features @ whiten has identity covariance

    def forward(self, maps: torch.Tensor) -> torch.Tensor:
        return self.distance(maps.float().mean((2, 3)))

    def distance(self, pooled: torch.Tensor) -> torch.Tensor:
        z = (unit(pooled.float())[:, None, :] - self.means[None]) @ self.whiten  # B x classes x k
        return (z**2).sum(-1).min(1).values


def unit(pooled: torch.Tensor) -> torch.Tensor:
    return pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-12)


def pooled_features(model: nn.Module, views: list[np.ndarray], pre, device=torch.device("cpu"), batch_size: int = 64) -> torch.Tensor:
    """N x C: each model view's last-stage feature maps, averaged over positions."""
    from .preprocess import normalize

    model.eval()
    with torch.no_grad():
        return torch.cat([model.features(normalize(np.stack(views[i : i + batch_size]), pre).to(device)).float().mean((2, 3)).cpu()
                          for i in range(0, len(views), batch_size)])


def fit(features: np.ndarray, labels: np.ndarray) -> FeatureDistance:
    """Class means and the whitening of the shared (Ledoit-Wolf shrunk) within-class covariance of
    the unit-length pooled features (`pooled_features`)."""
    from sklearn.covariance import LedoitWolf

    features = unit(torch.as_tensor(features, dtype=torch.float64)).numpy()
    labels = np.asarray(labels)
    means = np.stack([features[labels == c].mean(0) for c in (0, 1)])
    cov = LedoitWolf(assume_centered=True).fit(features - means[labels]).covariance_
    values, vectors = np.linalg.eigh(cov)
    whiten = vectors / np.sqrt(np.maximum(values, 1e-12))
    return FeatureDistance(torch.tensor(means, dtype=torch.float32), torch.tensor(whiten, dtype=torch.float32))


def attach(model: nn.Module, pre, train_views: list[np.ndarray], train_labels: np.ndarray, val_views: list[np.ndarray],
           device=torch.device("cpu")) -> float:
    """Fit the score on the training views, set it on `model` (model.ood) and return the cut-off:
    the QUANTILE of the validation views' scores."""
    distance = fit(pooled_features(model, train_views, pre, device).numpy(), train_labels)
    with torch.no_grad():
        val_scores = distance.distance(pooled_features(model, val_views, pre, device)).numpy()
    model.ood = distance.to(device)
    return float(np.quantile(val_scores, QUANTILE))
