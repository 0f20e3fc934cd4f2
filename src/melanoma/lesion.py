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
    t, _ = cv2.threshold(values.reshape(-1, 1), 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
    return cv2.morphologyEx(((gray < t) & lit).astype(np.uint8), cv2.MORPH_OPEN, np.ones((5, 5), np.uint8)) > 0, float(t)
