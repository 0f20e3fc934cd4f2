"""Figures computed from labels, probabilities and maps: no model, no files.

Metrics come from scikit-learn; only the expected calibration error is hand-written (scikit-learn
has no ECE; it is one histogram). Where the Grad-CAM maps fall (on the spot, on the black vignette)
is a few sums over the masks the photo checks use (lesion.py).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import cv2
import numpy as np

from .lesion import lesion_mask, lit_pixels
from .quality import MIN_LESION

if TYPE_CHECKING:
    from .modelinfo import ModelInfo


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
    out: dict[str, Any] = {
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


def kinds_report(y: np.ndarray, p: np.ndarray, kinds: list[str] | np.ndarray, threshold: float, class_names, bootstrap: int = 1000,
                 classes: list[str] | None = None) -> list[dict]:
    """Per kind of image within each class (`Sample.kind`, e.g. the diagnosis): how many, the share
    called right at the threshold (not melanoma, for a kind that is not), and the ROC AUC of that kind
    against all images of the other class (so "Benign / keratosis" is how well the melanomas are told
    from keratoses). `classes`, each image's class name where it may differ from `class_names[y]`
    (Other: cancers that are not melanoma, scored as not melanoma), names the rows."""
    from sklearn.metrics import roc_auc_score

    rows, kinds = [], np.array(kinds)
    for label in (0, 1):
        for kind in sorted(set(kinds[y == label])):
            this, other = (y == label) & (kinds == kind), y != label
            pair = this | other
            row = {"class": classes[int(np.flatnonzero(this)[0])] if classes else class_names[label], "kind": kind, "images": int(this.sum()),
                   "called_right": float(((p[this] >= threshold) == bool(label)).mean()), "roc_auc": None, "roc_auc_ci95": None}
            if other.any():
                row["roc_auc"] = float(roc_auc_score(y[pair], p[pair]))
                if bootstrap:
                    row["roc_auc_ci95"] = auc_interval(y[pair], p[pair], bootstrap)
            rows.append(row)
    return rows


def share_interval(k: int, n: int) -> list[float] | None:
    """95% interval of a share k/n (scipy's Wilson score interval); None for no images."""
    from scipy.stats import binomtest

    if not n:
        return None
    ci = binomtest(int(k), int(n)).proportion_ci(confidence_level=0.95, method="wilson")
    return [float(ci.low), float(ci.high)]


def verdict_report(classes: list[str], groups: list[str], verdicts: list[str]) -> list[dict]:
    """Per class (Benign, Malignant, Other: cancers that are not melanoma) and per group within it (a
    labels CSV's column; "all" first): how many images, and the share with each outcome of the verdict
    in words (kinds.py): sent to a doctor (either cancer verdict, with its 95% interval), named another
    skin cancer, suspected of melanoma."""
    from .kinds import MELANOMA_SUSPECTED, OTHER_SUSPECTED, SENT_TO_DOCTOR

    rows = []
    cls, grp, ver = np.array(classes), np.array(groups), np.array(verdicts)
    for c in dict.fromkeys(classes):
        for g in ["all", *sorted(set(grp[cls == c]) - {""})]:
            this = (cls == c) & ((grp == g) if g != "all" else True)
            n, sent = int(this.sum()), int(np.isin(ver[this], SENT_TO_DOCTOR).sum())
            rows.append({"class": c, "kind": g, "images": n, "sent_to_doctor": sent / n, "sent_to_doctor_ci95": share_interval(sent, n),
                         "named_other_cancer": float((ver[this] == OTHER_SUSPECTED).mean()),
                         "melanoma_suspected": float((ver[this] == MELANOMA_SUSPECTED).mean())})
    return rows


def seven_kinds(truth: list[str], top: list[str], kinds: list[str], bootstrap: int = 1000, seed: int = 0) -> dict:
    """The ISIC 2018 challenge's task (task 3) on images whose truth is one of `kinds`: balanced
    multi-class accuracy of the top kind (the challenge's metric: the mean recall over the kinds present)
    with a 95% bootstrap interval (images resampled within each kind), the recall of each kind, and the
    confusion matrix (rows: truth, columns: top kind, in `kinds`' order)."""
    from sklearn.metrics import balanced_accuracy_score, confusion_matrix

    t, k = np.array(truth), np.array(top)
    present = [c for c in kinds if (t == c).any()]
    score = float(balanced_accuracy_score(t, k))
    interval = None
    if bootstrap:
        rng = np.random.default_rng(seed)
        groups = [np.flatnonzero(t == c) for c in present]
        draws = []
        for _ in range(bootstrap):
            idx = np.concatenate([rng.choice(g, len(g)) for g in groups])
            draws.append(np.mean([(k[idx][t[idx] == c] == c).mean() for c in present]))
        interval = [float(np.percentile(draws, 2.5)), float(np.percentile(draws, 97.5))]
    return {"images": int(len(t)), "balanced_accuracy": score, "balanced_accuracy_ci95": interval,
            "recall": {c: float((k[t == c] == c).mean()) for c in present}, "kinds": list(kinds),
            "confusion_matrix": confusion_matrix(t, k, labels=list(kinds)).tolist()}


def cam_placement(view: np.ndarray, cam: np.ndarray) -> list[float]:
    """Where one image's Grad-CAM map falls: [share of the map on the spot, the spot's share of the
    image, 1 if the map's peak is on the spot, share of the map on the black vignette, the vignette's
    share of the image]. The spot and the vignette are found as the photo-quality checks find them
    (lesion.lesion_mask: darker than Otsu's threshold; lesion.lit_pixels). A map spread evenly
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
