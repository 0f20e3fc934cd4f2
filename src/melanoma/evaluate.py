"""Evaluation on the test split and on its clean subset (test images with no near-duplicate in train).

Metrics come from scikit-learn and scipy; only the expected calibration error is hand-written
(scikit-learn has no ECE; it is one histogram). Where the Grad-CAM maps fall (on the spot, on the
black vignette) is a few sums over the masks that the photo checks (quality.py) already compute.
"""

from __future__ import annotations

import csv
import json
import logging
import sys
from pathlib import Path
from typing import NamedTuple

import cv2
import numpy as np

from .audit import read_thumbnails, test_duplicates_in_train, thumbnail
from .data import labelled_set, read_samples, scan
from .errors import UsageError
from .explain import infer
from .model import ModelInfo, file_sha256
from .onnx_model import load_model
from .preprocess import model_view, normalize
from .quality import MIN_LESION, lesion_mask, lit_pixels

LOG = logging.getLogger(__name__)


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int = 10) -> float:
    """ECE of P(malignant): bin-weighted |observed rate - mean predicted| over equal-width bins."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    idx = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    ece = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            ece += m.mean() * abs(y[m].mean() - p[m].mean())
    return float(ece)


def auc_interval(y: np.ndarray, p: np.ndarray, resamples: int, seed: int = 0) -> list[float]:
    """95% percentile bootstrap interval of the ROC AUC, resampling within each class.

    By hand rather than scipy.stats.bootstrap: resampling within each class keeps both classes in
    every resample (scipy's resamples can lose one on small sets and make the interval NaN).
    """
    from sklearn.metrics import roc_auc_score

    rng = np.random.default_rng(seed)
    pos, neg = np.flatnonzero(y == 1), np.flatnonzero(y == 0)
    aucs = []
    for _ in range(resamples):
        idx = np.concatenate([rng.choice(pos, len(pos)), rng.choice(neg, len(neg))])
        aucs.append(roc_auc_score(y[idx], p[idx]))
    return [float(np.percentile(aucs, 2.5)), float(np.percentile(aucs, 97.5))]


def binary_metrics(y: np.ndarray, p: np.ndarray, threshold: float, bootstrap: int = 1000, seed: int = 0) -> dict:
    from sklearn.metrics import balanced_accuracy_score, brier_score_loss, confusion_matrix, roc_auc_score

    pred = (p >= threshold).astype(int)
    tn, fp, fn, tp = confusion_matrix(y, pred, labels=[0, 1]).ravel()
    out = {
        "images": int(len(y)),
        "benign": int((y == 0).sum()),
        "malignant": int((y == 1).sum()),
        "threshold": float(threshold),
        "accuracy": float((tp + tn) / len(y)),
        "sensitivity": float(tp / (tp + fn)) if tp + fn else None,
        "specificity": float(tn / (tn + fp)) if tn + fp else None,
        "balanced_accuracy": float(balanced_accuracy_score(y, pred)) if len(set(y)) == 2 else None,
        "confusion_matrix": {"tn": int(tn), "fp": int(fp), "fn": int(fn), "tp": int(tp)},
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "roc_auc": None,
        "roc_auc_ci95": None,
    }
    if len(set(y)) == 2:
        out["roc_auc"] = float(roc_auc_score(y, p))
        if bootstrap:
            out["roc_auc_ci95"] = auc_interval(y, p, bootstrap, seed)
    return out


def kinds_report(y: np.ndarray, p: np.ndarray, kinds: list[str], threshold: float, class_names, bootstrap: int = 1000) -> list[dict]:
    """Per kind of image within each class (`Sample.kind`, e.g. the diagnosis): how many, the share
    called right at the threshold, and the ROC AUC of that kind against all images of the other
    class (so "Benign / keratosis" is how well the melanomas are told from keratoses)."""
    from sklearn.metrics import roc_auc_score

    rows, kinds = [], np.array(kinds)
    for label in (0, 1):
        for kind in sorted(set(kinds[y == label])):
            this, other = (y == label) & (kinds == kind), y != label
            pair = this | other
            row = {"class": class_names[label], "kind": kind, "images": int(this.sum()),
                   "called_right": float(((p[this] >= threshold) == bool(label)).mean()), "roc_auc": None, "roc_auc_ci95": None}
            if other.any():
                row["roc_auc"] = float(roc_auc_score(y[pair], p[pair]))
                if bootstrap:
                    row["roc_auc_ci95"] = auc_interval(y[pair], p[pair], bootstrap)
            rows.append(row)
    return rows


def cam_placement(view: np.ndarray, cam: np.ndarray) -> list[float]:
    """Where one image's Grad-CAM map falls: [share of the map on the spot, the spot's share of the
    image, 1 if the map's peak is on the spot, share of the map on the black vignette, the vignette's
    share of the image]. The spot and the vignette are found as the photo-quality checks find them
    (quality.lesion_mask: darker than Otsu's threshold; quality.lit_pixels). A map spread evenly
    would put on each region its share of the image."""
    lit = lit_pixels(cv2.cvtColor(view, cv2.COLOR_RGB2YCrCb))
    spot, _ = lesion_mask(cv2.cvtColor(view, cv2.COLOR_RGB2GRAY), lit)
    total = float(cam.sum())
    if total <= 0:
        return [float("nan")] * 5
    peak = np.unravel_index(int(np.argmax(cam)), cam.shape)
    return [float(cam[spot].sum()) / total, float(spot.mean()), float(spot[peak]), float(cam[~lit].sum()) / total, float((~lit).mean())]


def attention_summary(placements: np.ndarray, min_spot: float = MIN_LESION, min_vignette: float = 0.05) -> dict:
    """`cam_placement` rows of many images -> means over the images with a spot (at least
    `min_spot` of the image) and over those with a vignette (at least `min_vignette` of it). Images
    whose map is empty (nothing raises the malignant score: clear benign ones) are left out."""
    rows = placements[~np.isnan(placements).any(1)]
    spot = rows[rows[:, 1] >= min_spot]
    vig = rows[rows[:, 4] >= min_vignette]
    mean = lambda a: float(a.mean()) if len(a) else None  # noqa: E731
    return {
        "images_with_spot": int(len(spot)),
        "cam_on_spot": mean(spot[:, 0]),
        "spot_area": mean(spot[:, 1]),
        "cam_peak_on_spot": mean(spot[:, 2]),
        "images_with_vignette": int(len(vig)),
        "cam_on_vignette": mean(vig[:, 3]),
        "vignette_area": mean(vig[:, 4]),
    }


def score_views(model, info: ModelInfo, views: list[np.ndarray] | np.ndarray, batch_size: int = 64,
                cam: bool = True) -> tuple[np.ndarray, np.ndarray | None, np.ndarray]:
    """P(malignant), the Grad-CAM maps (with `cam`; None without) and the OOD scores (NaN where the
    model carries no fit) of model views (H x W x 3 uint8), a batch at a time."""
    from .predict import predictions

    probs, cams, oods = [], [], []
    for start in range(0, len(views), batch_size):
        out = infer(model, normalize(np.stack(views[start : start + batch_size]), info.preprocess), cam=cam)
        preds = predictions(out, info)  # what predict, the API and the page return for these images
        probs.append(np.array([r.p_malignant for r in preds]))
        cams.append(out.cam)
        oods.append(np.array([np.nan if r.ood_score is None else r.ood_score for r in preds]))
    if not probs:
        return np.zeros(0), np.zeros((0, info.preprocess.image_size, info.preprocess.image_size), np.float32), np.zeros(0)
    return np.concatenate(probs), np.concatenate(cams) if cam else None, np.concatenate(oods)


class Scored(NamedTuple):
    samples: list  # the readable ones
    p: np.ndarray  # P(malignant)
    views: list[np.ndarray]
    placements: np.ndarray  # N x 5, see cam_placement
    ood: np.ndarray  # OOD scores (NaN: the model carries no fit)


def score_images(model, info: ModelInfo, samples, batch_size: int = 64, thumbs: list | None = None) -> Scored:
    """P(malignant), `cam_placement` and the OOD score of each readable sample; unreadable ones are
    reported and left out. With `thumbs`, each image's near-duplicate thumbnail is appended to it in the same pass."""
    from tqdm import tqdm

    kept, probs, oods, views, placements, unreadable = [], [], [], [], [], []
    for start in tqdm(range(0, len(samples), batch_size), desc="scoring", unit="batch", file=sys.stderr, mininterval=2):
        batch_views = []
        for s, im in read_samples(samples[start : start + batch_size], unreadable):
            batch_views.append(model_view(im, info.preprocess))
            kept.append(s)
            if thumbs is not None:
                thumbs.append(thumbnail(im))
        if batch_views:
            p, cams, ood = score_views(model, info, batch_views, batch_size, cam=model.maps)
            probs.append(p)
            oods.append(ood)
            placements += [cam_placement(v, c) for v, c in zip(batch_views, cams)] if cams is not None else []
            views += batch_views
    join = lambda parts: np.concatenate(parts) if parts else np.zeros(0)  # noqa: E731
    return Scored(kept, join(probs), views, np.array(placements).reshape(-1, 5), join(oods))


def ood_report(y: np.ndarray, p: np.ndarray, ood: np.ndarray, info: ModelInfo, against: dict[str, np.ndarray] | None = None) -> dict | None:
    """How the OOD score (ood.py) sits on a labelled set: the share flagged, sensitivity, specificity
    and balanced accuracy on the images it does not flag against all, the coverage curve (balanced
    accuracy on the images kept when the highest-scoring share is set aside), and for each other
    set in `against` (name -> its OOD scores) the share flagged and the ROC AUC of telling it from
    this set. None when the model carries no OOD fit."""
    from sklearn.metrics import roc_auc_score

    if info.ood_cutoff is None:
        return None
    flagged = ood > info.ood_cutoff

    def kept_metrics(keep: np.ndarray) -> dict:
        m = binary_metrics(y[keep], p[keep], info.threshold, bootstrap=0) if keep.any() else None
        return {k: m[k] if m else None for k in ("images", "sensitivity", "specificity", "balanced_accuracy")}

    order = np.argsort(-ood, kind="stable")
    coverage = []
    for share in (0.0, 0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5):
        keep = np.ones(len(y), bool)
        keep[order[: int(round(share * len(y)))]] = False
        coverage.append({"set_aside": share} | kept_metrics(keep))
    others = {}
    for name, scores in (against or {}).items():
        both = np.r_[np.zeros(len(ood)), np.ones(len(scores))]
        others[name] = {"images": int(len(scores)), "flagged": float((scores > info.ood_cutoff).mean()) if len(scores) else None,
                        "roc_auc": float(roc_auc_score(both, np.r_[ood, scores])) if len(scores) and len(ood) else None}
    return {"cutoff": info.ood_cutoff, "images": int(len(y)), "flagged": float(flagged.mean()) if len(y) else None,
            "all": kept_metrics(np.ones(len(y), bool)), "not_flagged": kept_metrics(~flagged), "coverage": coverage, "against": others}


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

    from .explain import linear_head, margin_weights

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


def run(model_path: str | None, data_dir: Path | None, out: Path, bootstrap: int = 1000, labels: str | None = None,
        shifts: bool = False, ood_against: list[str] | None = None, faithfulness_images: int = 0, by_kind: str | None = None) -> dict:
    """Metrics and plots for a labelled set (`data.labelled_set`): the Kaggle test split with its
    clean subset, a Benign/Malignant folder or a CSV; with `shifts`, the shift suite on the clean
    subset (the whole set where there is no clean subset). The OOD report (`ood_report`) is on the
    clean subset too, compared with each folder of `ood_against`; the deletion test of the maps
    (`faithfulness`) on `faithfulness_images` of the clean subset; with `by_kind` (a column of the
    labels CSV), the figures per kind (`kinds_report`)."""
    from . import plots

    evalset = labelled_set(data_dir, labels, by_kind)
    out.mkdir(parents=True, exist_ok=True)
    model, info = load_model(model_path)
    thumbs: list[np.ndarray] = []
    samples, p, views, placements, ood = score_images(model, info, evalset.samples, thumbs=thumbs if evalset.train_dir else None)
    if not samples:
        raise UsageError(f"{evalset.source}: none of the images could be read")
    y = np.array([s.label for s in samples])
    notes = [] if model.maps else [f"{model_path}: this model file carries no Grad-CAM map: no map placement, no Grad-CAM examples"]
    if len(set(y)) < 2:
        notes.append(f"only {info.class_names[int(y[0])]} images: no ROC AUC, and only "
                     + ("specificity" if y[0] == 0 else "sensitivity") + " is measured")

    leaked = np.zeros(len(y), bool)
    if evalset.train_dir is not None:
        _, train_thumbs, _ = read_thumbnails(scan(evalset.train_dir.parent, evalset.train_dir.name))
        if len(train_thumbs):
            leaked, _, _ = test_duplicates_in_train(train_thumbs, np.stack(thumbs))
    clean = ~leaked
    has_clean = evalset.train_dir is not None

    metrics = {
        "model": str(model_path or "bundled"),
        "model_sha256": file_sha256(model_path),  # the page shows these figures only beside this exact file
        "arch": info.arch,
        "image_size": info.preprocess.image_size,
        "temperature": info.temperature,
        "data": str(evalset.source),
        "layout": evalset.layout,
        "notes": notes,
        "test": binary_metrics(y, p, info.threshold, bootstrap),
        "clean_test": binary_metrics(y[clean], p[clean], info.threshold, bootstrap) if has_clean else None,
        "near_duplicates_excluded": int(leaked.sum()) if has_clean else None,
        "attention_clean_test" if has_clean else "attention": attention_summary(placements[clean]) if model.maps else None,
        "validation": info.validation,
        "ood": ood_report(y[clean], p[clean], ood[clean], info,
                          {Path(f).name: folder_ood_scores(model, info, f) for f in ood_against or []}),
    }
    if by_kind:
        metrics["kinds"] = kinds_report(y, p, [s.kind for s in samples], info.threshold, info.class_names, bootstrap)
    if faithfulness_images:
        metrics["faithfulness"] = faithfulness(model, info, [v for v, c in zip(views, clean) if c], faithfulness_images)
        if metrics["faithfulness"] is None:
            notes.append("--faithfulness: not measured, this model's maps do not come from a head of pooling and one linear "
                         "layer in the same pass (seed_cnn, or an ONNX file)")
    if shifts:
        metrics["shifts"] = shift_suite(model, info, [v for v, c in zip(views, clean) if c], y[clean], p[clean], ood[clean])
    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "p_malignant", "ood_score"] + (["near_duplicate_in_train"] if has_clean else []))
        w.writerows([s.rel, info.class_names[s.label], f"{pi:.6f}", "" if np.isnan(oi) else f"{oi:.4f}"] + ([int(d)] if has_clean else [])
                    for s, pi, oi, d in zip(samples, p, ood, leaked))

    if info.history:
        plots.plot_history(info.history, out / "training_curves.png")
    plots.plot_confusion(metrics["test"], metrics["clean_test"], info.class_names, out / "confusion_matrix.png")
    if len(set(y)) == 2:
        plots.plot_roc(y, p, clean if has_clean else None, out / "roc_curve.png")
    plots.plot_reliability(y, p, out / "reliability.png")
    if model.maps:
        plots.plot_cam_grid(model, info, views, y, p, out / "gradcam_examples.png")
    if model.engine == "torch":  # drawn from the torch network's modules
        plots.plot_architecture(model, info, out / "architecture.png")
    if metrics["ood"]:
        plots.plot_coverage(metrics["ood"], out / "ood_coverage.png")
        (out / "ood.md").write_text(ood_table(metrics))
    if by_kind:
        (out / "kinds.md").write_text(kinds_table(metrics["kinds"]) + "\n")
    if shifts:
        plots.plot_shifts(metrics["shifts"], out / "shifts.png")
        (out / "shifts.md").write_text(shift_table(metrics["shifts"]))
    print(format_table(metrics))
    return metrics


def kinds_table(rows: list[dict]) -> str:
    """`kinds_report` as a Markdown table."""
    lines = ["| class | kind | images | called right | ROC AUC against the other class (95% CI) |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        auc = "n/a" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}" + (
            f" ({r['roc_auc_ci95'][0]:.3f}-{r['roc_auc_ci95'][1]:.3f})" if r["roc_auc_ci95"] else "")
        lines.append(f"| {r['class']} | {r['kind'] or '(none)'} | {r['images']} | {r['called_right']:.1%} | {auc} |")
    return "\n".join(lines)


def shift_table(suite: dict) -> str:
    """The shift suite as a Markdown table: one row per change, mild and strong side by side."""
    f = lambda v, fmt: fmt.format(v) if v is not None else "n/a"  # noqa: E731
    u = suite["unchanged"]
    lines = [f"{suite['images']} images ({suite['benign']} benign, {suite['malignant']} malignant), threshold {suite['threshold']:.3f}; "
             f"unchanged: ROC AUC {f(u['roc_auc'], '{:.3f}')}, sensitivity {f(u['sensitivity'], '{:.1%}')}, "
             f"specificity {f(u['specificity'], '{:.1%}')}", "",
             "| change | mild | ROC AUC | sensitivity | specificity | flipped | strong | ROC AUC | sensitivity | specificity | flipped |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = suite["shifts"]
    for mild, strong in zip(rows[::2], rows[1::2]):
        cells = [mild["shift"]]
        for r in (mild, strong):
            cells += [r["detail"], f(r["roc_auc"], "{:.3f}"), f(r["sensitivity"], "{:.1%}"), f(r["specificity"], "{:.1%}"), f(r["flipped"], "{:.1%}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ood_table(m: dict) -> str:
    """The OOD report as Markdown: the flagged share of each set beside this one and how well the
    score tells it from this one (the other folders, then the shift suite's changes)."""
    o = m["ood"]
    pct = lambda v: f"{v:.1%}" if v is not None else "n/a"  # noqa: E731
    na, nf = o["all"], o["not_flagged"]
    lines = [f"cut-off {o['cutoff']:.4g}: {pct(o['flagged'])} of these {o['images']} images flagged; balanced accuracy "
             f"{pct(nf['balanced_accuracy'])} on the {nf['images']} not flagged against {pct(na['balanced_accuracy'])} on all", "",
             "| images | count | flagged | ROC AUC against these |", "| --- | --- | --- | --- |"]
    rows = [(name, a["images"], a["flagged"], a["roc_auc"]) for name, a in o["against"].items()]
    if "shifts" in m:
        rows += [(f"{r['shift']} ({r['severity']}: {r['detail']})", m["shifts"]["images"], r["ood_flagged"], r["ood_roc_auc"])
                 for r in m["shifts"]["shifts"]]
    lines += [f"| {name} | {n} | {pct(f)} | {a:.3f} |" if a is not None else f"| {name} | {n} | {pct(f)} | n/a |" for name, n, f, a in rows]
    return "\n".join(lines if rows else lines[:1]) + "\n"


def format_table(m: dict) -> str:
    rows = [("accuracy", "{:.2%}"), ("sensitivity", "{:.2%}"), ("specificity", "{:.2%}"), ("balanced_accuracy", "{:.2%}"),
            ("roc_auc", "{:.4f}"), ("ece", "{:.4f}"), ("brier", "{:.4f}")]
    columns = [("test" if m["layout"] == "kaggle" else "images", m["test"])] + ([("clean test", m["clean_test"])] if m["clean_test"] else [])
    t = m["test"]
    lines = [f"{m['arch']} on {m['data']} ({m['layout']}) at threshold {t['threshold']:.3f} (temperature {m['temperature']:.3f})",
             f"{'metric':<18}" + "".join(f" {name + ' (' + str(d['images']) + ')':>20}" for name, d in columns)]
    for key, fmt in rows:
        f = lambda v: fmt.format(v) if v is not None else "n/a"  # noqa: E731
        lines.append(f"{key:<18}" + "".join(f" {f(d[key]):>20}" for _, d in columns))
    for name, d in columns:
        if d["roc_auc_ci95"]:
            lines.append(f"ROC AUC 95% CI ({name}): {d['roc_auc_ci95'][0]:.4f}-{d['roc_auc_ci95'][1]:.4f}")
    lines += [f"note: {n}" for n in m["notes"]]
    a = m.get("attention_clean_test") or m.get("attention")
    where = "clean test" if "attention_clean_test" in m else "all images"
    if a and a["images_with_spot"]:
        lines.append(f"Grad-CAM on the spot ({where}, {a['images_with_spot']} images with a spot and a map): {a['cam_on_spot']:.1%} of the map "
                     f"on {a['spot_area']:.1%} of the image; peak on the spot in {a['cam_peak_on_spot']:.1%}")
    if a and a["images_with_vignette"]:
        lines.append(f"Grad-CAM on the black vignette ({a['images_with_vignette']} with a vignette and a map): {a['cam_on_vignette']:.1%} "
                     f"of the map on {a['vignette_area']:.1%} of the image")
    if m.get("kinds"):
        lines += ["", kinds_table(m["kinds"])]
    if "shifts" in m:
        lines += ["", "Shift suite (" + ("clean test" if m["clean_test"] else "all images") + "):", shift_table(m["shifts"])]
    if m.get("faithfulness"):
        f = m["faithfulness"]
        lines.append(f"Deletion test of the maps ({f['images']} images, {f['cells']} cells; mean P(malignant) as 0-50% of the cells are "
                     "blurred away, most relevant first (lower = more faithful) / least relevant first (higher)): "
                     + ", ".join(f"{k} {f[k]['deletion_score']:.3f}" + (f" / {f[k]['lerf_score']:.3f}" if "lerf_score" in f[k] else "")
                                 for k in ("margin", "malignant_logit", "random"))
                     + f"; margin lower than the malignant logit's on {f['margin_lower_share']:.0%} of images, than random on "
                     f"{f['margin_below_random_share']:.0%}")
    if m.get("ood"):
        lines += ["", "Out-of-distribution score (" + ("clean test" if m["clean_test"] else "all images") + "):", ood_table(m)]
    return "\n".join(lines)
