"""Two photos of one spot, months apart: `melanoma compare`, the page's "Compare two photos" and
`POST /v1/compare`.

AFTER is aligned onto BEFORE on the skin around the spot (SIFT keypoints outside either spot, a
similarity transform by RANSAC, refined by ECC on the same skin), so the spot's own change is not
taken for a change of framing. The light is evened out by the skin too (AFTER's channels scaled so
its skin matches BEFORE's: the photos' white balance and exposure), the spot is outlined in both with
one threshold (spot.py; at a few levels around it, keeping the level of the median area ratio), and the
change of area, longest diameter, colour (CIE Delta E 2000), border and asymmetry is measured in
BEFORE's frame. When the photos do not show one spot (too few keypoints that agree on one transform, a
transform no photo of one spot needs, or outlines that do not overlap once aligned) no change is
reported: two spots must never read as one that changed.

Sizes are relative: without a ruler in both photos a change of framing and a change of the spot can
be told apart only by the skin around it, which is why a spot that fills the photo is flagged."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np
from PIL import Image

from .lesion import lit_pixels
from .spot import Shape, delta_e, joint_threshold, shape, spot_gray, spot_mask

WORK_SIDE = 512  # both photos are measured with their longer side at this many pixels
MIN_INLIERS = 7  # keypoint matches that must agree on one similarity transform (chosen on seeds 1 and 2: docs/compare.md)
MIN_SKIN_INLIERS = 8  # of them on the skin around the spot, for the transform to be the skin's
RATIO = 0.85  # Lowe's ratio test of the keypoint matches
CONTRAST = 0.02  # SIFT's contrast threshold (OpenCV's default 0.04): skin is faint
EDGE_MARGIN = 0.03  # keypoints are taken this share of the side inside the lit field and the frame
MIN_OVERLAP = 0.3  # intersection over union of the two outlines, once aligned, below which they are not one spot
SCALE_RANGE = (1 / 3, 3.0)  # a transform scaling outside this is not two photos of one spot
LEVELS = (-12.0, -6.0, 0.0, 6.0, 12.0)  # gray levels around the pair's threshold the outlines are drawn at (see outlines)
SKIN_MARGIN = 0.08  # keypoints and light are taken this share of the side away from either spot


@dataclass
class Alignment:
    matrix: np.ndarray | None  # 2 x 3: AFTER's work pixels -> BEFORE's; None when no transform was found
    inliers: int
    matches: int
    refined: bool = False  # ECC moved the keypoints' transform
    on_skin: bool = False  # the transform is the one the skin around the spot agrees on (see align)

    @property
    def scale(self) -> float:
        return float(np.sqrt(abs(np.linalg.det(self.matrix[:, :2])))) if self.matrix is not None else float("nan")

    @property
    def rotation(self) -> float:
        return float(np.degrees(np.arctan2(self.matrix[1, 0], self.matrix[0, 0]))) if self.matrix is not None else float("nan")


@dataclass
class Comparison:
    same_spot: bool
    reason: str | None  # why not the same spot; None when it is
    alignment: Alignment
    before: Shape | None = None
    after: Shape | None = None
    overlap: float | None = None  # intersection over union of the aligned outlines
    notes: list[str] = field(default_factory=list)  # limits of this pair's figures
    views: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray] | None = None  # before, aligned after, their masks (work frame)

    def change(self) -> dict:
        """The change figures (empty unless the same spot)."""
        if not self.same_spot or self.before is None or self.after is None:
            return {}
        b, a = self.before, self.after
        return {"area_change_pct": round(100 * (a.area / b.area - 1), 2), "diameter_change_pct": round(100 * (a.diameter / b.diameter - 1), 2),
                "delta_e": round(delta_e(b, a), 2), "border_change": round(a.border - b.border, 4),
                "asymmetry_change": round(a.asymmetry - b.asymmetry, 4)}


def work_copy(im: Image.Image) -> np.ndarray:
    """The photo as RGB uint8 with its longer side WORK_SIDE (up or down)."""
    scale = WORK_SIDE / max(im.size)
    return np.asarray(im.convert("RGB").resize((max(1, round(im.size[0] * scale)), max(1, round(im.size[1] * scale))),
                                               Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC))


def gray_of(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)


def lit_of(rgb: np.ndarray) -> np.ndarray:
    """The photo's lit pixels (lesion.lit_pixels: not the black field of a round dermoscope)."""
    return lit_pixels(cv2.cvtColor(rgb, cv2.COLOR_RGB2YCrCb))


def rough_spot(rgb: np.ndarray) -> np.ndarray:
    """The spot by the photo's own threshold (before the pair's shared one can be known), for where not to align."""
    gray, lit = spot_gray(rgb), lit_of(rgb)
    return spot_mask(gray, lit, joint_threshold([gray], [lit]))


def skin(rgb: np.ndarray, *spots: np.ndarray) -> np.ndarray:
    """Lit pixels at least SKIN_MARGIN of the side away from each of `spots` (uint8 0/255, a mask for OpenCV)."""
    k = max(3, round(SKIN_MARGIN * max(rgb.shape[:2]))) | 1
    near = np.zeros(rgb.shape[:2], bool)
    for s in spots:
        near |= s
    near = cv2.dilate(near.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (k, k)))
    return ((lit_of(rgb) & (near == 0)) * 255).astype(np.uint8)


def keypoints(rgb: np.ndarray, on_skin: np.ndarray):
    """SIFT keypoints and descriptors of the contrast-equalised gray photo, on lit pixels away from the
    edge of a dermoscope's black field (whose circle would match any other photo's), and for each
    whether it lies on the skin around the spot (`on_skin`, from `skin`)."""
    k = max(3, round(EDGE_MARGIN * max(rgb.shape[:2]))) | 1
    lit = cv2.erode(lit_of(rgb).astype(np.uint8), np.ones((k, k), np.uint8))
    lit[:k // 2 + 1], lit[-(k // 2 + 1):], lit[:, :k // 2 + 1], lit[:, -(k // 2 + 1):] = 0, 0, 0, 0
    gray = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8)).apply(gray_of(rgb))
    sift: Any = cv2.SIFT_create  # type: ignore[attr-defined]  # OpenCV's stubs lack it
    points, descriptors = sift(nfeatures=4000, contrastThreshold=CONTRAST).detectAndCompute(gray, lit * 255)
    return points, descriptors, np.array([on_skin[min(int(p.pt[1]), rgb.shape[0] - 1), min(int(p.pt[0]), rgb.shape[1] - 1)] > 0 for p in points], bool)


def similarity(pa: np.ndarray, pb: np.ndarray) -> tuple[np.ndarray | None, int]:
    """The similarity transform most of the matched points agree on (RANSAC) and how many agree."""
    if len(pa) < 3:
        return None, 0
    matrix, inlier = cv2.estimateAffinePartial2D(pa, pb, method=cv2.RANSAC, ransacReprojThreshold=0.01 * WORK_SIDE,
                                                 maxIters=10000, confidence=0.999)
    return (None, 0) if matrix is None else (matrix, int(inlier.sum()))


def align(before: np.ndarray, after: np.ndarray, sb: np.ndarray, sa: np.ndarray) -> Alignment:
    """AFTER onto BEFORE (`sb`, `sa`: each photo's `rough_spot`): SIFT keypoints (`keypoints`), Lowe's ratio test, a similarity transform by
    RANSAC (OpenCV's estimateAffinePartial2D) over all matches, whose agreeing count says whether the
    photos show the same skin. The transform the figures are measured with is the one the matches on
    the skin around the spot agree on, where at least MIN_SKIN_INLIERS do (else the spot's own points
    steer it, and a growth can read smaller: `Alignment.on_skin` is False), refined by ECC (affine) on
    the skin of both and kept only where it stays near the keypoints' transform."""
    mb, ma = skin(before, sb), skin(after, sa)
    kb, db, skin_b = keypoints(before, mb)
    ka, da, skin_a = keypoints(after, ma)
    if db is None or da is None or len(kb) < 2 or len(ka) < 2:
        return Alignment(None, 0, 0)
    pairs = cv2.BFMatcher(cv2.NORM_L2).knnMatch(da, db, k=2)
    good = one_to_one([p[0] for p in pairs if len(p) == 2 and p[0].distance < RATIO * p[1].distance], ka, kb)
    pa = np.array([ka[m.queryIdx].pt for m in good], np.float32).reshape(-1, 2)
    pb = np.array([kb[m.trainIdx].pt for m in good], np.float32).reshape(-1, 2)
    matrix, inliers = similarity(pa, pb)
    found = Alignment(matrix, inliers, len(good))
    if matrix is None or inliers < MIN_INLIERS:
        return found
    both = np.array([skin_a[m.queryIdx] and skin_b[m.trainIdx] for m in good], bool)
    on_skin, skin_inliers = similarity(pa[both], pb[both])
    if on_skin is not None and skin_inliers >= MIN_SKIN_INLIERS:
        found.matrix, found.on_skin = on_skin, True
    if SCALE_RANGE[0] <= found.scale <= SCALE_RANGE[1]:
        refine(found, before, after, mb, ma)
    return found


def one_to_one(good: list, ka, kb) -> list:
    """The ratio test's matches (OpenCV DMatch, AFTER's keypoints `ka` the query, BEFORE's `kb` the train), best first, keeping
    at most one per point (rounded to the pixel) of either photo. SIFT puts several keypoints at one point (one per
    orientation), and many points of one photo can match one point of the other: RANSAC then finds a transform that
    collapses AFTER onto that point (scale near 0) and counts every repeat as agreeing (10-73 "agreeing" matches between
    photos of two lesions on the check's tuning draws, docs/compare.md), which also hides the true alignment of two photos of one spot."""
    seen_a: set[tuple[int, int]] = set()
    seen_b: set[tuple[int, int]] = set()
    kept = []
    for m in sorted(good, key=lambda m: m.distance):
        a = (round(ka[m.queryIdx].pt[0]), round(ka[m.queryIdx].pt[1]))
        b = (round(kb[m.trainIdx].pt[0]), round(kb[m.trainIdx].pt[1]))
        if a not in seen_a and b not in seen_b:
            seen_a.add(a)
            seen_b.add(b)
            kept.append(m)
    return kept


def refine(found: Alignment, before: np.ndarray, after: np.ndarray, mb: np.ndarray, ma: np.ndarray) -> None:
    """ECC (affine) from the keypoints' transform on the skin of both; kept when it converges and moves
    no corner of BEFORE's frame more than 2% of the side from where the keypoints put it."""
    assert found.matrix is not None
    gb, ga = gray_of(before), gray_of(after)
    inverse = cv2.invertAffineTransform(found.matrix).astype(np.float32)  # ECC warps BEFORE's pixels into AFTER's
    criteria = (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 100, 1e-5)
    try:
        if hasattr(cv2, "findTransformECCWithMask"):  # OpenCV 4.13 on: both photos' skin
            _, warp = cv2.findTransformECCWithMask(gb.astype(np.float32), ga.astype(np.float32), mb, ma, inverse.copy(),
                                                   cv2.MOTION_AFFINE, criteria, 5)
        else:  # older: AFTER's skin only
            _, warp = cv2.findTransformECC(gb.astype(np.float32), ga.astype(np.float32), inverse.copy(), cv2.MOTION_AFFINE, criteria, ma, 5)
    except cv2.error:  # did not converge: keep the keypoints' transform
        return
    h, w = gb.shape
    corners = np.array([[0, 0, 1], [w, 0, 1], [0, h, 1], [w, h, 1]], np.float32)
    if np.abs(corners @ warp.T - corners @ inverse.T).max() <= 0.02 * WORK_SIDE:
        found.matrix, found.refined = cv2.invertAffineTransform(warp).astype(np.float64), True


def even_light(before: np.ndarray, after: np.ndarray, skin_mask: np.ndarray) -> np.ndarray:
    """AFTER with each channel scaled so its skin's median matches BEFORE's (a white balance and
    exposure taken from the skin around the spot, von Kries' rule)."""
    on = skin_mask > 0
    if on.sum() < 100:
        return after
    gains = np.median(before[on].astype(np.float64), axis=0) / np.maximum(np.median(after[on].astype(np.float64), axis=0), 1.0)
    return np.clip(after.astype(np.float64) * gains, 0, 255).astype(np.uint8)


def compare(before_image: Image.Image, after_image: Image.Image) -> Comparison:
    """Align, outline and measure (see the module's docstring); no model involved."""
    before, after = work_copy(before_image), work_copy(after_image)
    rough_b = rough_spot(before)
    found = align(before, after, rough_b, rough_spot(after))
    if found.matrix is None or found.inliers < MIN_INLIERS:
        return Comparison(False, f"too few keypoints agree on one alignment ({found.inliers}, at least {MIN_INLIERS} needed): "
                                 "the photos do not show the same skin", found)
    if not SCALE_RANGE[0] <= found.scale <= SCALE_RANGE[1]:
        return Comparison(False, f"the alignment scales one photo {found.scale:.2f} times: not two photos of one spot", found)
    h, w = before.shape[:2]
    aligned = cv2.warpAffine(after, found.matrix, (w, h), flags=cv2.INTER_LINEAR, borderValue=(0, 0, 0))
    seen = cv2.warpAffine(np.ones(after.shape[:2], np.uint8), found.matrix, (w, h), flags=cv2.INTER_NEAREST) > 0
    seen = cv2.erode(seen.astype(np.uint8), np.ones((5, 5), np.uint8)) > 0  # the resampled edge is not skin
    rough_a = rough_spot(aligned) & seen
    aligned = even_light(before, aligned, skin(before, rough_b, rough_a) & (seen * 255).astype(np.uint8))
    grays = [spot_gray(before), spot_gray(aligned)]
    lits = [lit_of(before) & seen, lit_of(aligned) & seen]
    mb, ma = outlines(grays, lits, joint_threshold(grays, lits))
    if not mb.any() or not ma.any():
        return Comparison(False, f"no spot found in the {'before' if not mb.any() else 'after'} photo", found)
    overlap = float((mb & ma).sum() / (mb | ma).sum())
    if overlap < MIN_OVERLAP:
        return Comparison(False, f"once aligned, the two spots hardly overlap (intersection over union {overlap:.2f}, "
                                 f"at least {MIN_OVERLAP} needed)", found, overlap=overlap)
    result = Comparison(True, None, found, shape(mb, before), shape(ma, aligned), overlap, views=(before, aligned, mb, ma))
    result.notes = limits(mb, ma, seen, found)
    return result


def outlines(grays: list[np.ndarray], lits: list[np.ndarray], t: float) -> tuple[np.ndarray, np.ndarray]:
    """The spot in BEFORE and in AFTER (`spot_mask`, AFTER's the part most overlapping BEFORE's), drawn at each of LEVELS
    around the pair's threshold `t`; the pair of outlines whose area ratio is the median of those levels' (the lower
    one of an even count) is kept. A spot that grew grows at every level, while a faint edge falling under one level or a
    neighbour joining at one moves that level's ratio alone. Where no level finds the spot in both photos, the outlines at
    `t` itself (one of them empty)."""
    found = []
    for d in LEVELS:
        mb = spot_mask(grays[0], lits[0], t + d)
        ma = spot_mask(grays[1], lits[1], t + d, near=mb)
        if mb.any() and ma.any():
            found.append((ma.sum() / mb.sum(), mb, ma))
    if not found:
        mb = spot_mask(grays[0], lits[0], t)
        return mb, spot_mask(grays[1], lits[1], t, near=mb)  # at least one of them empty: compare says which
    found.sort(key=lambda f: f[0])
    _, mb, ma = found[(len(found) - 1) // 2]
    return mb, ma


def limits(mb: np.ndarray, ma: np.ndarray, seen: np.ndarray, found: Alignment) -> list[str]:
    """What limits this pair's figures, in words."""
    notes = []
    edge = np.zeros(mb.shape, bool)
    edge[:3, :], edge[-3:, :], edge[:, :3], edge[:, -3:] = True, True, True, True
    edge |= cv2.dilate((~seen).astype(np.uint8), np.ones((3, 3), np.uint8)) > 0
    if (mb & edge).any() or (ma & edge).any():
        notes.append("the spot reaches the edge of a photo: its size there is a lower bound")
    if max(mb.mean(), ma.mean()) > 0.4:
        notes.append("the spot fills much of the photo: with little skin around it, a closer photo and a bigger spot are hard to tell apart")
    if not found.on_skin:
        notes.append("too little skin around the spot to align on: the spot itself steered the alignment, so a growth can read smaller")
    if abs(np.log(found.scale)) > np.log(1.5):
        notes.append(f"the photos were taken at quite different distances (scale {found.scale:.2f}): detail differs")
    notes.append("sizes are relative to the skin around the spot (no ruler is read); hair, a dermoscope against a phone, "
                 "or a different light can still move the outline")
    return notes
