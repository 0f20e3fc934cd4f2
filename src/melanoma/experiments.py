"""Two experiments on a model: the deletion test of its maps (`faithfulness`) and its figures under
the shift suite's changed photos (`shift_suite`)."""

from __future__ import annotations

import sys

import cv2
import numpy as np

from .metrics import binary_metrics
from .modelinfo import ModelInfo
from .preprocess import normalize
from .scoring import score_views

FRACTIONS = (0.0, 0.05, 0.1, 0.2, 0.3, 0.5)


def faithfulness(model, info: ModelInfo, views: list[np.ndarray], n: int, seed: int = 0) -> dict | None:
    """Deletion test of the maps at the map's own resolution (Petsiuk et al. 2018; most- and
    least-relevant first as in ROAD, Rong et al. 2022). The view is cut into the cells of the last
    feature map (7x7 of 32 px at 224 px), where Grad-CAM has its values; FRACTIONS of the cells are
    replaced by a heavily blurred copy (sigma 8 px: colour kept, structure gone) and P(malignant) is
    scored again. Most relevant first (MoRF), a faithful map of what raised the estimate makes it fall
    fast: a low mean P(malignant) over the fractions (the deletion score). Least relevant first
    (LeRF), it should hold: a high mean. The gap LeRF - MoRF is the summary (higher = more faithful);
    deleting whole cells in both orders and for the random order makes every curve pay the same
    price for the blur itself. Compared: the map of the margin (malignant minus benign logit, what
    the page shows), of the malignant logit alone (the map before), and a random cell order. Needs a
    head of pooling + one linear layer (both maps from one pass); None otherwise. `n` images drawn
    with `seed`."""
    import torch

    from .model import linear_head, margin_weights

    fc = linear_head(model)
    if fc is None or not len(views) or n <= 0:
        return None
    rng = np.random.default_rng(seed)
    chosen = sorted(rng.choice(len(views), min(n, len(views)), replace=False).tolist())
    maps = {"margin": margin_weights(fc), "malignant_logit": fc.weight[1]}
    curves: dict[str, list] = {name: [] for name in ("margin", "margin_lerf", "malignant_logit", "malignant_logit_lerf", "random")}
    for start in range(0, len(chosen), 16):
        batch = np.stack([views[i] for i in chosen[start : start + 16]])
        with torch.no_grad():
            features = model.features(normalize(batch, info.preprocess))
            cells = {name: torch.einsum("c,bchw->bhw", w, features).numpy() for name, w in maps.items()}
        grid = features.shape[-2:]
        orders = {}  # cell indices, first deleted first; ties in a random order
        for name, m in cells.items():
            flat = m.reshape(len(batch), -1) + rng.random((len(batch), m[0].size)) * 1e-6
            orders[name] = np.argsort(-flat, axis=1, kind="stable")
            orders[name + "_lerf"] = orders[name][:, ::-1]
        orders["random"] = np.argsort(rng.random((len(batch), grid[0] * grid[1])), axis=1)
        for name, order in orders.items():
            deleted = []
            for view, o in zip(batch, order):
                blurred = cv2.GaussianBlur(view, (0, 0), 8)
                for f in FRACTIONS:
                    mask = np.zeros(grid[0] * grid[1], np.uint8)
                    mask[o[: int(round(f * mask.size))]] = 1
                    full = cv2.resize(mask.reshape(grid), view.shape[1::-1], interpolation=cv2.INTER_NEAREST).astype(bool)
                    deleted.append(np.where(full[..., None], blurred, view))
            p, _, _ = score_views(model, info, deleted, cam=False)
            curves[name] += p.reshape(len(batch), len(FRACTIONS)).tolist()
    c = {name: np.array(v) for name, v in curves.items()}
    above = c["margin"][:, 0] >= info.threshold
    result = {"images": len(chosen), "seed": seed, "fractions": list(FRACTIONS), "cells": int(grid[0] * grid[1]),
              "above_threshold": int(above.sum())}

    def summary(morf: np.ndarray, lerf: np.ndarray | None, rows) -> dict:
        out = {"deletion_score": float(morf[rows].mean()) if rows.any() else None}
        if lerf is not None and rows.any():
            out |= {"lerf_score": float(lerf[rows].mean()), "gap": float(lerf[rows].mean() - morf[rows].mean())}
        return out

    everyone = np.ones(len(chosen), bool)
    for name in ("margin", "malignant_logit", "random"):
        lerf = c.get(name + "_lerf")
        result[name] = {"mean_curve": c[name].mean(0).tolist(), **({"lerf_mean_curve": lerf.mean(0).tolist()} if lerf is not None else {}),
                        **summary(c[name], lerf, everyone), "above_threshold": summary(c[name], lerf, above)}
    m, old = c["margin"].mean(1), c["malignant_logit"].mean(1)
    result["margin_lower_share"] = float((m < old).mean())  # images where the margin map's deletion score is lower
    result["margin_below_random_share"] = float((m < c["random"].mean(1)).mean())
    return result


def shift_suite(model, info: ModelInfo, views: list[np.ndarray], y: np.ndarray, p: np.ndarray, ood: np.ndarray, seed: int = 0) -> dict:
    """The images under every change of the shift suite (shifts.SHIFTS): ROC AUC, sensitivity and
    specificity at the model's threshold, and the share of verdicts that flip against the unchanged image."""
    from tqdm import tqdm

    from .shifts import SHIFTS, apply

    def row(q: np.ndarray, shifted_ood: np.ndarray) -> dict:
        from sklearn.metrics import roc_auc_score

        m = binary_metrics(y, q, info.threshold, bootstrap=0)
        flipped = float(((q >= info.threshold) != (p >= info.threshold)).mean()) if len(q) else None
        fit = info.ood_cutoff is not None and len(q)
        return {k: m[k] for k in ("roc_auc", "sensitivity", "specificity")} | {"flipped": flipped} | {
            "ood_flagged": float((shifted_ood > info.ood_cutoff).mean()) if fit else None,
            # how well the OOD score tells the changed images from the unchanged ones
            "ood_roc_auc": float(roc_auc_score(np.r_[np.zeros(len(ood)), np.ones(len(q))], np.r_[ood, shifted_ood])) if fit else None}

    rows = []
    for shift in tqdm(SHIFTS, desc="shift suite", unit="shift", file=sys.stderr, mininterval=2):
        q, _, shifted_ood = score_views(model, info, apply(shift, views, seed), cam=False)
        rows.append({"shift": shift.name, "severity": shift.severity, "detail": shift.detail} | row(q, shifted_ood))
    return {"images": int(len(y)), "benign": int((y == 0).sum()), "malignant": int((y == 1).sum()), "seed": seed,
            "threshold": info.threshold, "unchanged": row(p, ood), "shifts": rows}
