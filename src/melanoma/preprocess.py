"""Image -> tensor, defined once and carried by the model file (`Preprocess`).

Inference: resize so the shorter side is `image_size` (the lesion keeps its proportions, nothing
is squashed), take the centred square, scale to [0, 1], normalise with mean/std. Training draws
random crops, flips, rotations and mild colour changes (albumentations) around that same frame.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass

import numpy as np
import torch
from PIL import Image


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        return cls(int(d["image_size"]), tuple(map(float, d["mean"])), tuple(map(float, d["std"])))


def resize_shorter(im: Image.Image, size: int) -> Image.Image:
    w, h = im.size
    if min(w, h) == size:
        return im
    scale = size / min(w, h)
    return im.resize((max(size, round(w * scale)), max(size, round(h * scale))), Image.Resampling.BICUBIC, reducing_gap=3.0)


def crop_box(width: int, height: int) -> tuple[int, int, int, int]:
    """The centred square (left, top, right, bottom) of a width x height image: what the model sees."""
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return left, top, left + side, top + side


def normalize(batch_uint8: np.ndarray | torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float, normalised (channels_last memory: NHWC order
    underneath, which is what the uint8 input already is, so this is one conversion and one scaling)."""
    x = batch_uint8 if isinstance(batch_uint8, torch.Tensor) else torch.from_numpy(np.array(batch_uint8, copy=True))
    x = x.permute(0, 3, 1, 2).float()
    std = torch.tensor(pre.std, device=x.device)
    scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1)
    shift = (-torch.tensor(pre.mean, device=x.device) / std).view(1, 3, 1, 1)
    return x.mul_(scale).add_(shift).contiguous(memory_format=torch.channels_last)


def model_view(im: Image.Image, pre: Preprocess) -> np.ndarray:
    """The uint8 square (H x W x 3) the model sees of an RGB image."""
    square = im.crop(crop_box(*im.size))
    return np.asarray(resize_shorter(square, pre.image_size).convert("RGB"))


def to_batch(images: list[Image.Image], pre: Preprocess) -> torch.Tensor:
    return normalize(np.stack([model_view(im, pre) for im in images]), pre)


def _albumentations():
    """The albumentations module, imported without its check for a newer release (a request to PyPI
    at import time, up to 2 s, from every training run)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def train_augment(image_size: int, seed: int):
    """Augmentation for dermoscopy: any orientation is valid, colour and scale vary a little, and
    the round-dermoscope vignette is added at random (see `random_vignette`)."""
    A = _albumentations()

    return A.Compose(
        [
            A.RandomResizedCrop(size=(image_size, image_size), scale=(0.6, 1.0), ratio=(0.85, 1.18)),
            A.SquareSymmetry(),  # the 8 flips/rotations by 90 degrees
            A.Affine(rotate=(-30, 30), border_mode=0, p=0.5),
            A.ColorJitter(brightness=0.15, contrast=0.15, saturation=0.1, hue=0.02, p=0.8),
            random_vignette(p=0.2),
        ],
        seed=seed,  # albumentations keeps its own random state; the global seeds do not reach it
    )


def random_vignette(p: float):
    """Black outside a centred circle, as a round dermoscope leaves it. In the training data 24.5% of
    the melanomas have such dark corners against 0.2% of the benign images (measured on 400 of each),
    a cue that has nothing to do with the lesion; drawn at random on any image, it stops telling the
    classes apart. Hand-written because albumentations has no such transform (a few lines)."""
    A = _albumentations()

    class RandomVignette(A.ImageOnlyTransform):
        def get_params_dependent_on_data(self, params, data):
            return {"radius": self.py_random.uniform(0.5, 0.72)}  # of the side: 0.5 touches the edges

        def apply(self, img, radius=0.6, **params):
            h, w = img.shape[:2]
            yy, xx = np.ogrid[:h, :w]
            outside = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 > (radius * min(h, w)) ** 2
            out = img.copy()
            out[outside] = 0
            return out

    return RandomVignette(p=p)
