"""Fitting the out-of-distribution score (ood.py) to a model's own training images: the pooled
features of the block it reads, the class means and whitening, the cut-off on the validation images.
Apart from ood.py, which the model file's loader needs, so that the network (model.py) and the
score it carries import downhill."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import torch

from .ood import BLOCK, FeatureDistance, cutoff_of, scaled

if TYPE_CHECKING:
    from .model import Classifier


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


