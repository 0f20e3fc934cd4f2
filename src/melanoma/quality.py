"""Warnings about a photo before anyone trusts a prediction on it.

Cheap image statistics (OpenCV, already installed with albumentations), computed on the square
the model sees. The limits are set from the training data: each warning fires on about 1.5% or fewer
of the Kaggle dermoscopy images (measured with `python -m melanoma.quality DATA`), so a warning
means "unlike what the model was trained on", not "bad photo" in general.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import cv2
import numpy as np
from PIL import Image

from .lesion import lesion_mask, lit_pixels

MIN_SIDE_OK = 224  # the model's input side: smaller photos are upscaled
MIN_SHARPNESS = 8.0  # variance of the Laplacian at 224 px; 1st percentile of the training images is 8.3
DARK, BRIGHT = 50.0, 225.0  # mean gray level; 0.5th and 99.5th percentiles are 53 and 223
MIN_SKIN = 0.25  # fraction of lit pixels in a skin colour range; 1st percentile is 0.27
MAX_OFFSET = 0.35  # lesion centre away from the image centre, as a fraction of the side; 99th percentile 0.37
MIN_LESION = 0.01  # lesion area as a fraction of the square: smaller means "not a close-up"


@dataclass
class Quality:
    sharpness: float
    brightness: float
    skin_fraction: float
    lesion_fraction: float
    lesion_offset: float
    warnings: list[str]


def assess(image: Image.Image, view: np.ndarray) -> Quality:
    """Statistics and plain-language warnings for an RGB image and its model view (square uint8)."""
    gray = cv2.cvtColor(view, cv2.COLOR_RGB2GRAY)
    sharpness = float(cv2.Laplacian(gray, cv2.CV_64F).var())
    brightness = float(gray.mean())
    ycc = cv2.cvtColor(view, cv2.COLOR_RGB2YCrCb)
    lit = lit_pixels(ycc)
    skin = lit & (ycc[..., 1] >= 130) & (ycc[..., 1] <= 180) & (ycc[..., 2] >= 70) & (ycc[..., 2] <= 135)
    skin_fraction = float(skin.sum() / max(lit.sum(), 1))
    lesion_fraction, lesion_offset = _lesion(gray, lit)

    warnings = []
    if skin_fraction < MIN_SKIN:
        warnings.append(
            "This does not look like a close-up of skin. The model was trained only on dermoscopy photos of "
            "skin spots and will give a number for any picture; this one is not meaningful."
        )
    if min(image.size) < MIN_SIDE_OK:
        warnings.append(f"The image is small ({image.width}x{image.height} px); use a photo at least {MIN_SIDE_OK} px on its shorter side.")
    if sharpness < MIN_SHARPNESS:
        warnings.append("The image looks blurred; hold the camera steady and focus on the spot.")
    if brightness < DARK:
        warnings.append("The image is very dark; take it in good, even light.")
    elif brightness > BRIGHT:
        warnings.append("The image is very bright or washed out; avoid flash and direct glare.")
    if skin_fraction >= MIN_SKIN:
        if lesion_fraction < MIN_LESION:
            warnings.append("No clear spot was found near the centre; take the photo closer, with the spot filling the middle of the frame.")
        elif lesion_offset > MAX_OFFSET:
            warnings.append("The spot is not centred; the model looks at the centre of the photo, so put the spot in the middle.")
    return Quality(sharpness, brightness, skin_fraction, lesion_fraction, lesion_offset, warnings)


def _lesion(gray: np.ndarray, lit: np.ndarray) -> tuple[float, float]:
    """Area fraction of the spot (`lesion_mask`), and how far its darkness-weighted centre lies
    from the image centre (a fraction of the side)."""
    dark, t = lesion_mask(gray, lit)
    weight = np.where(dark, t - gray.astype(np.float64), 0.0)
    if weight.sum() <= 0:
        return 0.0, 1.0
    h, w = gray.shape
    ys, xs = np.mgrid[0:h, 0:w]
    cx, cy = (weight * xs).sum() / weight.sum(), (weight * ys).sum() / weight.sum()
    return float(dark.mean()), float(np.hypot(cx / w - 0.5, cy / h - 0.5))


def main(argv: list[str]) -> None:  # pragma: no cover - a measuring aid, run by hand
    """Print how often each warning fires on a data folder (to set the limits above)."""
    from collections import Counter
    from pathlib import Path

    from .images import load_image
    from .preprocess import Preprocess, model_view

    pre = Preprocess(224, (0.5,) * 3, (0.5,) * 3)
    files = sorted(Path(argv[0]).rglob("*.jpg"))[:: max(1, int(argv[1]) if len(argv) > 1 else 10)]
    fired: Counter = Counter()
    for f in files:
        im = load_image(f)
        for w in assess(im, model_view(im, pre)).warnings:
            fired[w.split(";")[0].split(".")[0]] += 1
    print(f"{len(files)} images")
    for w, n in fired.most_common():
        print(f"{n / len(files):6.2%}  {w}")


if __name__ == "__main__":  # pragma: no cover
    main(sys.argv[1:])
