"""A model run over images: P(malignant), the Grad-CAM maps' placement and the OOD score of each,
through `predict.predictions` (what predict, the API and the page return for the same images)."""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np

from .audit import thumbnail
from .data import read_samples
from .explain import infer
from .metrics import cam_placement
from .modelinfo import ModelInfo
from .preprocess import model_view

if TYPE_CHECKING:
    from .images import ImageError

LOG = logging.getLogger(__name__)


def score_views(model, info: ModelInfo, views: list[np.ndarray] | np.ndarray, batch_size: int = 64,
                cam: bool = True, keep: list | None = None) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """P(malignant), the Grad-CAM maps (with `cam`; None without) and the OOD scores (NaN where the
    model carries no fit) of model views (H x W x 3 uint8), a batch at a time; with `keep`, each
    view's whole `predict.Prediction` (verdict, differential) is appended to it."""
    from .predict import model_input, predictions

    probs, cams, oods = [], [], []
    for start in range(0, len(views), batch_size):
        out = infer(model, model_input(model, np.stack(views[start : start + batch_size]), info.preprocess), cam=cam)  # type: ignore[arg-type]  # an array stacks too
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
