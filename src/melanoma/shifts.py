"""The shift suite: the ways a real photo differs from a training image, each at two severities.

Every change is applied to the model's view (the square it sees, `preprocess.model_view`) by
albumentations with fixed parameters, seeded per image, so every run sees the same images:
`apply(shift, views)`. `evaluate --shifts` scores a set under each change (`experiments.shift_suite`).
The vignette is the project's own transform (albumentations has none).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial

import numpy as np

from .preprocess import _albumentations, random_vignette
from .seeding import derive_seed


@dataclass(frozen=True)
class Shift:
    name: str
    severity: str  # "mild" or "strong"
    params: dict  # what `_transforms` builds the change from

    @property
    def detail(self) -> str:
        """The parameters, in words."""
        return ", ".join(f"{k} {v}" for k, v in self.params.items())


# (name, mild parameters, strong parameters)
KINDS: list[tuple[str, dict, dict]] = [
    ("lower resolution", {"scale": 0.5}, {"scale": 0.3}),
    ("JPEG", {"quality": 60}, {"quality": 25}),
    ("blur", {"sigma": 1.0}, {"sigma": 2.0}),
    ("sensor noise", {"std": 0.03}, {"std": 0.08}),
    ("closer", {"crop": 0.8}, {"crop": 0.6}),
    ("farther", {"zoom": 0.75}, {"zoom": 0.5}),
    ("rotation", {"degrees": 20}, {"degrees": 45}),
    ("warm light", {"kelvin": 4500}, {"kelvin": 3500}),
    ("cool light", {"kelvin": 8000}, {"kelvin": 12000}),
    ("darker", {"brightness": -0.15}, {"brightness": -0.3}),
    ("gamma", {"gamma": 1.4}, {"gamma": 2.0}),
    ("dermoscope vignette", {"radius": 0.62}, {"radius": 0.5}),
    ("phone photo", {"scale": 0.5, "quality": 60, "kelvin": 4500}, {"scale": 0.3, "quality": 25, "kelvin": 3500, "std": 0.05}),
    ("phone photo, farther", {"zoom": 0.75, "scale": 0.5, "quality": 60}, {"zoom": 0.5, "scale": 0.3, "quality": 25}),
]

SHIFTS: list[Shift] = [
    Shift(name, severity, params) for name, mild, strong in KINDS for severity, params in (("mild", mild), ("strong", strong))
]


def _transforms(params: dict, size: int) -> list:
    """albumentations transforms for a parameter set, geometry first, then optics, light, sensor, file."""
    import cv2

    A = _albumentations()
    reflect = cv2.BORDER_REFLECT_101  # the corners a rotation opens: the skin around, mirrored (not black)
    out = []
    if "crop" in params:
        side = round(size * params["crop"])
        out += [A.CenterCrop(side, side), A.Resize(size, size, interpolation=cv2.INTER_CUBIC)]
    if "zoom" in params:
        out.append(A.Lambda(image=partial(_farther, zoom=params["zoom"]), p=1))
    if "degrees" in params:
        out.append(A.Affine(rotate=params["degrees"], border_mode=reflect, p=1))
    if "radius" in params:
        out.append(random_vignette(p=1, radius=(params["radius"], params["radius"])))
    if "sigma" in params:
        out.append(A.GaussianBlur(sigma_limit=(params["sigma"], params["sigma"]), p=1))
    if "scale" in params:
        s = params["scale"]
        out.append(A.Downscale(scale_range=(s, s), interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}, p=1))
    if "kelvin" in params:
        out.append(A.Lambda(image=partial(_light, kelvin=params["kelvin"]), p=1))
    if "brightness" in params:
        b = params["brightness"]
        out.append(A.RandomBrightnessContrast(brightness_limit=(b, b), contrast_limit=(0, 0), p=1))
    if "gamma" in params:
        g = params["gamma"] * 100
        out.append(A.RandomGamma(gamma_limit=(g, g), p=1))
    if "std" in params:
        out.append(A.GaussNoise(std_range=(params["std"], params["std"]), p=1))
    if "quality" in params:
        q = params["quality"]
        out.append(A.ImageCompression(quality_range=(q, q), p=1))
    return out


def _farther(img: np.ndarray, zoom: float, fade: float = 0.1, **_) -> np.ndarray:
    """The photo taken from farther away: shrunk to `zoom` of its side and centred on skin. Next to
    the photo the new border is the photo's own edge mirrored (skin texture, no seam), fading within
    `fade` of the side into the median colour of its outer ring: skin, not black, and not a mirror
    image of the whole photo (which would repeat the spot)."""
    import cv2

    h, w = img.shape[:2]
    small = cv2.resize(img, (max(1, round(w * zoom)), max(1, round(h * zoom))), interpolation=cv2.INTER_AREA)
    sh, sw = small.shape[:2]
    top, left = (h - sh) // 2, (w - sw) // 2
    mirrored = cv2.copyMakeBorder(small, top, h - sh - top, left, w - sw - left, cv2.BORDER_REFLECT_101)
    ring = np.concatenate([small[:2].reshape(-1, 3), small[-2:].reshape(-1, 3), small[:, :2].reshape(-1, 3), small[:, -2:].reshape(-1, 3)])
    ys, xs = np.mgrid[0:h, 0:w]
    outside = np.maximum(np.maximum(top - ys, ys - (top + sh - 1)), np.maximum(left - xs, xs - (left + sw - 1))).clip(min=0)
    alpha = np.clip(outside / max(1.0, fade * min(h, w)), 0.0, 1.0)[..., None]
    out = mirrored * (1 - alpha) + np.median(ring, axis=0) * alpha
    return np.clip(out + 0.5, 0, 255).astype(img.dtype)


def _light(img: np.ndarray, kelvin: int, **_) -> np.ndarray:
    """Light of a black body at `kelvin` (6000 K neutral): the function behind albumentations'
    PlanckianJitter, whose range must hold 6000 K and so cannot be fixed at one other temperature."""
    from albumentations.augmentations.pixel.functional import planckian_jitter

    return planckian_jitter(img, kelvin, "blackbody")


def apply(shift: Shift, views: list[np.ndarray] | np.ndarray, seed: int = 0) -> np.ndarray:
    """The views (N x S x S x 3 uint8) under `shift`; image i drawn with its own seed (seed, shift, i),
    so the result is the same on every run."""
    A = _albumentations()
    if not len(views):
        return np.zeros((0,), np.uint8)
    size = views[0].shape[0]
    pipeline = A.Compose(_transforms(shift.params, size), seed=seed)
    index = SHIFTS.index(shift)
    out = []
    for i, view in enumerate(views):
        pipeline.set_random_seed(derive_seed(seed, index, i))
        out.append(pipeline(image=np.ascontiguousarray(view))["image"])
    return np.stack(out)
