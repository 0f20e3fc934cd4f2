"""A model run over images: P(malignant), the Grad-CAM maps' placement and the OOD score of each,
through `predict.predictions` (what predict, the API and the page return for the same images); the
logits of a model's validation images and the figures its file records of them (training, calibrate,
`melanoma ensemble`)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np

from .audit import thumbnail
from .data import read_samples
from .explain import infer
from .metrics import cam_placement
from .modelinfo import ModelInfo
from .preprocess import model_view

if TYPE_CHECKING:
    import torch

    from .images import ImageError
    from .inference import Inference
    from .preprocess import Preprocess
    from .split import Split

LOG = logging.getLogger(__name__)


def inferences(model, views: list[np.ndarray] | np.ndarray, pre: Preprocess, batch_size: int = 64, cam: bool = False,
               device=None) -> Iterator[Inference]:
    """`explain.infer` over model views (H x W x 3 uint8), a batch at a time, each batch normalised
    for the model's engine (`predict.model_input`) and, for the torch network, moved to `device`: the
    one loop every batch pass goes through."""
    from .predict import model_input

    for start in range(0, len(views), batch_size):
        x = model_input(model, np.stack(list(views[start : start + batch_size])), pre)
        yield infer(model, x.to(device) if device is not None else x, cam=cam)


def score_views(model, info: ModelInfo, views: list[np.ndarray] | np.ndarray, batch_size: int = 64,
                cam: bool = True, keep: list | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """P(malignant), the Grad-CAM maps (with `cam`; None without) and the OOD scores (NaN where the
    model carries no fit) of model views (H x W x 3 uint8), a batch at a time; with `keep`, each
    view's whole `predict.Prediction` (verdict, differential) is appended to it."""
    from .predict import predictions

    probs, cams, oods = [], [], []
    for out in inferences(model, views, info.preprocess, batch_size, cam):
        preds = predictions(out, info)  # what predict, the API and the page return for these images
        if keep is not None:
            keep += preds
        probs.append(np.array([r.p_malignant for r in preds]))
        cams.append(out.cam)
        oods.append(np.array([np.nan if r.ood_score is None else r.ood_score for r in preds]))
    if not probs:
        return np.zeros(0), np.zeros((0, info.preprocess.image_size, info.preprocess.image_size), np.float32), np.zeros(0)
    return np.concatenate(probs), np.concatenate(cast("list[np.ndarray]", cams)) if cam else None, np.concatenate(oods)  # with cam, no map is None


class Scored(NamedTuple):
    samples: list  # the readable ones
    p: np.ndarray  # P(malignant)
    views: list[np.ndarray]
    placements: np.ndarray  # N x 5, see cam_placement
    ood: np.ndarray  # OOD scores (NaN: the model carries no fit)
    predictions: list  # each one's predict.Prediction (the verdict in words, the differential)


def score_images(model, info: ModelInfo, samples, batch_size: int = 64, thumbs: list | None = None) -> Scored:
    """P(malignant), `cam_placement` and the OOD score of each readable sample; unreadable ones are
    reported and left out. With `thumbs`, each image's near-duplicate thumbnail is appended to it in the same pass."""
    from tqdm import tqdm

    kept, probs, oods, views, placements = [], [], [], [], []
    preds: list = []
    unreadable: list[ImageError] = []
    for start in tqdm(range(0, len(samples), batch_size), desc="scoring", unit="batch", file=sys.stderr, mininterval=2):
        batch_views = []
        for s, im in read_samples(samples[start : start + batch_size], unreadable):
            batch_views.append(model_view(im, info.preprocess))
            kept.append(s)
            if thumbs is not None:
                thumbs.append(thumbnail(im))
        if batch_views:
            p, cams, ood = score_views(model, info, batch_views, batch_size, cam=model.maps, keep=preds)
            probs.append(p)
            oods.append(ood)
            placements += [cam_placement(v, c) for v, c in zip(batch_views, cams)] if cams is not None else []
            views += batch_views
    join = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    return Scored(kept, join(probs), views, np.array(placements).reshape(-1, 5), join(oods), preds)


def folder_ood_scores(model, info: ModelInfo, folder: str) -> np.ndarray:
    """OOD scores of every readable image under `folder` (no labels needed); unreadable ones are skipped with a line."""
    from .images import ImageError, find_images, load_image

    files, _ = find_images([folder])
    views = []
    for f in files:
        try:
            views.append(model_view(load_image(f), info.preprocess))
        except ImageError as exc:
            LOG.warning(f"warning: {exc}: left out of the OOD comparison")
    return score_views(model, info, views, cam=False)[2]


def predict_logits(model, arrays: list[np.ndarray], pre: Preprocess, device=None, batch_size: int = 64) -> np.ndarray:
    """Logits of model views (validation, teachers) from the torch network, a batch at a time through
    `explain.infer`, on `device` (the CPU by default)."""
    import torch

    out = [cast("torch.Tensor", o.logits).float().cpu() for o in inferences(model, arrays, pre, batch_size, device=device)]
    return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)


def validation_record(data: Split, p_val: np.ndarray, threshold: float) -> dict:
    """The validation figures a model file records at its threshold (`p_val`: the calibrated
    probabilities of `data`'s validation images): overall, and per source for a run of several."""
    from .metrics import binary_metrics

    labels = data.labels[data.va]
    m = binary_metrics(labels, p_val, threshold, bootstrap=0)
    record = {"images": int(len(data.va)), "auc": m["roc_auc"], "sensitivity": m["sensitivity"], "specificity": m["specificity"]}
    if len(data.sources) > 1:
        record["by_source"] = by_source(data.samples_of(data.va), labels, p_val, threshold)
    return record


def by_source(samples, labels: np.ndarray, p: np.ndarray, threshold: float) -> dict:
    """Validation figures of each source's images at the run's threshold: ROC AUC where it has both
    classes, and the share of each class called right."""
    from .metrics import binary_metrics

    out = {}
    for name in dict.fromkeys(s.source for s in samples):
        mine = np.array([s.source == name for s in samples])
        y, q = labels[mine], p[mine]
        called = q >= threshold
        out[name] = {"images": int(mine.sum()), "melanomas": int(y.sum()),
                     "auc": binary_metrics(y, q, threshold, bootstrap=0)["roc_auc"] if len(set(y)) == 2 else None,
                     "sensitivity": float(called[y == 1].mean()) if y.any() else None,
                     "specificity": float((~called[y == 0]).mean()) if (y == 0).any() else None}
    return out


