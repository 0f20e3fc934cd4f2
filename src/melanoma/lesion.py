"""Where the spot is: the lit pixels (not the black vignette of a round dermoscope) and the spot's
mask (darker than Otsu's threshold over the lit pixels). Used by the photo checks (quality.py), the
lesion framing (preprocess.lesion_box) and where the maps fall (metrics.cam_placement)."""

from __future__ import annotations

import cv2
import numpy as np


def lit_pixels(ycc: np.ndarray) -> np.ndarray:
    """Pixels brighter than the black vignette of round dermoscopes (luma above 40)."""
    return ycc[..., 0] > 40


def lesion_mask(gray: np.ndarray, lit: np.ndarray) -> tuple[np.ndarray, float]:
    """The spot: lit pixels darker than Otsu's threshold over the lit ones, specks removed (5x5
    opening); and that threshold. All False when fewer than 100 pixels are lit."""
    values = gray[lit]
    if values.size < 100:
        return np.zeros(gray.shape, bool), 0.0
    t = otsu(values)
    return cv2.morphologyEx(((gray < t) & lit).astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)) > 0, t


def otsu(values: np.ndarray) -> float:
    """Otsu's threshold of a set of gray values (uint8)."""
    t, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return float(t)


def centrality(stats: np.ndarray, centres: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """Each connected part's (cv2.connectedComponentsWithStats, the background left out) area for its
    distance from the photo's centre: area / (1 + 4 x the distance as a share of the side), so the spot
    is the large part near the middle, not a dark corner."""
    h, w = shape[:2]
    return stats[1:, cv2.CC_STAT_AREA].astype(np.float64) / (1 + 4 * np.hypot(centres[1:, 0] / w - 0.5, centres[1:, 1] / h - 0.5))
