"""One spot's outline and shape, as `melanoma compare` measures it: the mask (the project's lesion
segmentation, lesion.lesion_mask, with a threshold shared by the two photos of a pair), its area,
longest diameter, border irregularity, asymmetry and mean colour (CIE Lab).

The shape measures are the usual ones of the dermoscopy literature, computed by scikit-image's
regionprops; only the asymmetry score is written here (a few lines: the mask folded over its two
principal axes)."""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from .lesion import centrality, otsu


@dataclass
class Shape:
    area: float  # pixels of the frame it was measured in
    diameter: float  # longest diameter (maximum Feret diameter), pixels
    border: float  # perimeter^2 / (4 pi area): 1 for a circle, more for a ragged or lobed border
    asymmetry: float  # 0-1: the share of the spot left uncovered when folded over its principal axes (mean of the two)
    lab: tuple[float, float, float]  # mean CIE Lab colour inside the spot

    def as_dict(self) -> dict:
        return {"area_px": round(self.area, 1), "diameter_px": round(self.diameter, 2), "border": round(self.border, 4),
                "asymmetry": round(self.asymmetry, 4), "lab": [round(v, 2) for v in self.lab]}


def spot_gray(rgb: np.ndarray) -> np.ndarray:
    """The gray photo the outline is drawn on, smoothed over about 1% of the side so that a spot of
    scattered dots or a faint lobe reads as one region in both photos. (Painting hairs out first, as
    DullRazor does, was tried and left out: on the check's pairs it also painted over the spot's own
    dark texture and moved the outline, see docs/compare.md.)"""
    gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
    return cv2.GaussianBlur(gray, (0, 0), max(1.0, max(gray.shape) / 100))


def joint_threshold(grays: list[np.ndarray], lits: list[np.ndarray]) -> float:
    """Otsu's threshold over the lit pixels of both photos at once, so that one edge contrast means
    one outline in both (a threshold of each photo's own would move with how much of it is spot)."""
    values = np.concatenate([g[lit] for g, lit in zip(grays, lits)])
    return otsu(values) if values.size >= 100 else 0.0


def spot_mask(gray: np.ndarray, lit: np.ndarray, threshold: float, near: np.ndarray | None = None) -> np.ndarray:
    """The spot on `spot_gray`: lit pixels darker than `threshold`, gaps closed, specks removed and holes filled; of its connected
    parts the one most overlapping `near` (another mask in the same frame), else the one that is
    largest for its distance from the centre (as preprocess.lesion_box chooses), passing over rings
    (the darker edge of a dermoscope's lit field, which filled would be the whole field). All False if none."""
    size = max(3, round(min(gray.shape) / 40)) | 1
    disc = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (size, size))
    dark = cv2.morphologyEx(cv2.morphologyEx(((gray < threshold) & lit).astype(np.uint8), cv2.MORPH_CLOSE, disc), cv2.MORPH_OPEN, disc)
    n, labels, stats, centres = cv2.connectedComponentsWithStats(dark)
    if n <= 1:
        return np.zeros(gray.shape, bool)
    if near is not None and near.any():
        score = np.bincount(labels[near], minlength=n)[1:].astype(np.float64)  # overlap with `near`
    else:
        score = centrality(stats, centres, gray.shape)
    for k in 1 + np.argsort(-score):
        if score[k - 1] <= 0 or stats[k, cv2.CC_STAT_AREA] < 0.002 * gray.size:
            break
        filled = fill_holes(labels == k)
        if filled.sum() <= 2 * stats[k, cv2.CC_STAT_AREA]:  # more: a ring around the lit field's darker edge, not a spot
            return filled
    return np.zeros(gray.shape, bool)


def fill_holes(mask: np.ndarray) -> np.ndarray:
    """`mask` with its enclosed holes filled (a regressing, paler centre is still the spot)."""
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    filled = np.zeros(mask.shape, np.uint8)
    cv2.drawContours(filled, contours, -1, 1, thickness=cv2.FILLED)
    return filled > 0


def asymmetry(mask: np.ndarray, centroid: tuple[float, float], orientation: float) -> float:
    """The mask turned so its major axis lies along x, about its centroid, then folded over each axis:
    the share of its area the fold leaves uncovered, the mean of the two folds (0 for an ellipse)."""
    cy, cx = centroid
    angle = -np.degrees(orientation) + 90  # regionprops' orientation: between the row axis and the major axis
    h, w = mask.shape
    side = int(np.ceil(2 * np.hypot(h, w)))
    m = np.array([[1, 0, side / 2 - cx], [0, 1, side / 2 - cy]], np.float64)
    centred = cv2.warpAffine(mask.astype(np.uint8), m, (side, side), flags=cv2.INTER_NEAREST)
    turned = cv2.warpAffine(centred, cv2.getRotationMatrix2D((side / 2, side / 2), angle, 1.0), (side, side), flags=cv2.INTER_NEAREST) > 0
    area = max(int(turned.sum()), 1)
    folds = [np.logical_xor(turned, turned[::-1, :]).sum() / (2 * area), np.logical_xor(turned, turned[:, ::-1]).sum() / (2 * area)]
    return float(np.mean(folds))


def shape(mask: np.ndarray, rgb: np.ndarray) -> Shape:
    """The measures of a non-empty spot mask on its photo (H x W x 3 uint8, the same frame)."""
    from skimage.color import rgb2lab
    from skimage.measure import regionprops

    props = regionprops(mask.astype(np.uint8))[0]
    lab = rgb2lab(rgb[mask][None].astype(np.float64) / 255.0)[0].mean(axis=0)
    return Shape(area=float(props.area), diameter=float(props.feret_diameter_max),
                 border=float(props.perimeter ** 2 / (4 * np.pi * props.area)),
                 asymmetry=asymmetry(mask, props.centroid, props.orientation), lab=(float(lab[0]), float(lab[1]), float(lab[2])))


def delta_e(a: Shape, b: Shape) -> float:
    """CIE Delta E 2000 between the two spots' mean colours (about 1: just noticeable; over 10: clearly another colour)."""
    from skimage.color import deltaE_ciede2000

    return float(deltaE_ciede2000(np.array(a.lab), np.array(b.lab)))
