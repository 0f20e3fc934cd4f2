"""Image -> tensor, defined once and carried by the model file (`Preprocess`).

Inference: resize so the shorter side is `image_size` (the lesion keeps its proportions, nothing
is squashed), take the centred square, optionally match its colours to a reference look
(`colour_reference`, see `match_colour`), scale to [0, 1], normalise with mean/std. Training draws
random crops, flips, rotations and colour changes (albumentations) around that same frame.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any, cast

import numpy as np
from PIL import Image

from .lesion import centrality, lesion_mask

if TYPE_CHECKING:
    import torch

RGB = tuple[float, float, float]

# The mean and standard deviation of each channel over an image's lit pixels (those not in a black
# vignette), averaged over training images of both classes (in [0, 1] units), measured once by hand
# (no project command recomputes it; model files trained with `--colour matched` carry the values
# they used): the look every image is given under `colour_reference`. The colours of the two classes
# differ in the Kaggle data, a cue of the dataset, not of the lesion.
TRAINING_LOOK: tuple[RGB, RGB] = ((0.749, 0.579, 0.562), (0.106, 0.122, 0.134))


@dataclass(frozen=True)
class Preprocess:
    image_size: int
    mean: RGB
    std: RGB
    colour_reference: tuple[RGB, RGB] | None = None  # per-image colour matching (`match_colour`); None: off
    framing: str = "centre"  # the square the model sees: "centre" (the centred square) or "lesion" (`lesion_box`)

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "Preprocess":
        ref = d.get("colour_reference")  # absent in model files from before it existed
        return cls(int(d["image_size"]), cast(RGB, tuple(map(float, d["mean"]))), cast(RGB, tuple(map(float, d["std"]))),
                   None if ref is None else cast(tuple[RGB, RGB], tuple(tuple(map(float, r)) for r in ref)), d.get("framing", "centre"))


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


def lesion_box(im: Image.Image, margin: float = 1.5, min_share: float = 0.5) -> tuple[int, int, int, int]:
    """A square around the spot: `margin` times the spot's larger side, at least `min_share` and at
    most all of the image's shorter side, kept inside the image; the centred square when no spot is found.

    The spot is found as the photo checks find it (`lesion.lesion_mask`: darker than Otsu's
    threshold over the lit pixels) on a 128-px copy; of its connected parts, the one that is largest
    for its distance from the centre. So a spot photographed from farther away, or off-centre, is
    seen at about the size a training image shows it, and the field of view stops telling the
    classes apart."""
    import cv2

    w, h = im.size
    scale = 128 / max(w, h)
    gray = np.asarray(im.convert("L").resize((max(1, round(w * scale)), max(1, round(h * scale))), Image.Resampling.BILINEAR))
    mask, _ = lesion_mask(gray, gray > 40)
    n, _, stats, centres = cv2.connectedComponentsWithStats(mask.astype(np.uint8))
    sh, sw = gray.shape
    if n <= 1:
        return crop_box(w, h)
    k = 1 + int(np.argmax(centrality(stats, centres, gray.shape)))
    if stats[k, cv2.CC_STAT_AREA] < 0.005 * sh * sw:
        return crop_box(w, h)
    x, y, bw, bh = (stats[k, :4] / scale).tolist()
    side = int(round(np.clip(max(bw, bh) * margin, min_share * min(w, h), min(w, h))))
    left = int(np.clip(round(x + bw / 2 - side / 2), 0, w - side))
    top = int(np.clip(round(y + bh / 2 - side / 2), 0, h - side))
    return left, top, left + side, top + side


def view_box(im: Image.Image, pre: Preprocess) -> tuple[int, int, int, int]:
    """The square (left, top, right, bottom) of `im` that the model sees, by the model's framing."""
    return lesion_box(im) if pre.framing == "lesion" else crop_box(*im.size)


OVERLAY_SIDE = 1024  # the longest side of the copy of a photo kept for its overlay (API, page)


def overlay_copy(im: Image.Image, pre: Preprocess) -> tuple[Image.Image, tuple[int, int, int, int]]:
    """A copy of `im` at most OVERLAY_SIDE on its longest side (`im` itself when it is no larger) and
    the model's square (`view_box`, found on `im`) scaled onto it: what an overlay needs, so that the
    full-resolution photo need not be kept once the model's view is taken."""
    box = view_box(im, pre)
    scale = OVERLAY_SIDE / max(im.size)
    if scale >= 1:
        return im, box
    small = im.resize((max(1, round(im.width * scale)), max(1, round(im.height * scale))), Image.Resampling.BILINEAR, reducing_gap=2.0)
    fx, fy = small.width / im.width, small.height / im.height
    return small, (round(box[0] * fx), round(box[1] * fy), round(box[2] * fx), round(box[3] * fy))


def normalize(batch_uint8: np.ndarray | torch.Tensor, pre: Preprocess) -> torch.Tensor:
    """N x H x W x 3 uint8 -> N x 3 x H x W float, normalised (channels_last memory: NHWC order
    underneath, which is what the uint8 input already is, so this is one conversion and one scaling).
    The torch model's input (training, on any device); `normalize_nhwc` gives the same values in numpy."""
    import torch

    x = batch_uint8 if isinstance(batch_uint8, torch.Tensor) else torch.from_numpy(np.array(batch_uint8, copy=True))
    x = x.permute(0, 3, 1, 2).float()
    if pre.colour_reference is not None:
        x = match_colour(x, *pre.colour_reference)
    std = torch.tensor(pre.std, device=x.device)
    scale = (1.0 / (255.0 * std)).view(1, 3, 1, 1)
    shift = (-torch.tensor(pre.mean, device=x.device) / std).view(1, 3, 1, 1)
    return x.mul_(scale).add_(shift).contiguous(memory_format=torch.channels_last)


def normalize_nhwc(batch_uint8: np.ndarray, pre: Preprocess) -> np.ndarray:
    """`normalize` in numpy, N x H x W x 3 float32 (the ONNX graph's input, no torch needed): the same
    operations in the same float32 order, so the same values (tests/test_preprocess.py)."""
    x = np.asarray(batch_uint8).astype(np.float32)
    if pre.colour_reference is not None:
        x = match_colour_nhwc(x, *pre.colour_reference)
    std = np.array(pre.std, np.float32)
    rows = x.reshape(-1, x.shape[2] * 3)  # a view: one row of pixels a line, the 3 channels' factors repeated along it
    rows *= np.tile(np.float32(1.0) / (np.float32(255.0) * std), x.shape[2])  # (a long inner loop: faster than broadcasting 3)
    rows += np.tile(-np.array(pre.mean, np.float32) / std, x.shape[2])
    return x


def match_colour(x: torch.Tensor, mean: RGB, std: RGB, dark: float = 20.0, min_std: float = 4.0) -> torch.Tensor:
    """Give each image of a N x 3 x H x W batch (0-255 floats) the reference per-channel mean and
    standard deviation (`mean`, `std` in [0, 1] units) over its lit pixels, clipped to 0-255.

    A per-image colour transfer (Reinhard et al. 2001, in RGB): the exposure, contrast and colour
    cast of the camera and its light are taken out, so the model cannot tell a photo's source by
    them. Pixels whose brightest channel is `dark` or less (a dermoscope's black vignette) are left
    out of the statistics and as they are. Hand-written: a few tensor lines, applied where the model
    input is made (`normalize`, and `match_colour_nhwc` for `normalize_nhwc`), so training, evaluate,
    predict, ONNX and the page all share it."""
    import torch

    lit = x.amax(1, keepdim=True) > dark
    w = lit.float()
    n = w.sum((2, 3), keepdim=True).clamp(min=1.0)
    m = (x * w).sum((2, 3), keepdim=True) / n
    s = (((x - m) ** 2 * w).sum((2, 3), keepdim=True) / n).sqrt().clamp(min=min_std)
    ref_m = torch.tensor(mean, device=x.device).view(1, 3, 1, 1) * 255.0
    ref_s = torch.tensor(std, device=x.device).view(1, 3, 1, 1) * 255.0
    return torch.where(lit, ((x - m) / s * ref_s + ref_m).clamp(0.0, 255.0), x)


def match_colour_nhwc(x: np.ndarray, mean: RGB, std: RGB, dark: float = 20.0, min_std: float = 4.0) -> np.ndarray:
    """`match_colour` on a N x H x W x 3 float32 numpy batch, line for line."""
    lit = x.max(3, keepdims=True) > dark
    w = lit.astype(np.float32)
    n = np.maximum(_pixel_sums(w), np.float32(1.0))
    m = _pixel_sums(x * w) / n
    s = np.maximum(np.sqrt(_pixel_sums((x - m) ** 2 * w) / n), np.float32(min_std))
    ref_m = np.array(mean, np.float32) * np.float32(255.0)
    ref_s = np.array(std, np.float32) * np.float32(255.0)
    return np.where(lit, np.clip((x - m) / s * ref_s + ref_m, 0.0, 255.0), x)


def _pixel_sums(a: np.ndarray) -> np.ndarray:
    """N x H x W x C -> N x 1 x 1 x C sums over each image's pixels, each channel's summed over its
    contiguous values as torch sums them (numpy's sum over the outer axes of NHWC adds row by row and
    strays from torch's by 1e-4 after normalising)."""
    per_channel = np.ascontiguousarray(a.reshape(len(a), -1, a.shape[-1]).transpose(0, 2, 1))
    return per_channel.sum(2)[:, None, None, :]


def model_view(im: Image.Image, pre: Preprocess) -> np.ndarray:
    """The uint8 square (H x W x 3) the model sees of an RGB image."""
    square = im.crop(view_box(im, pre))
    return np.asarray(resize_shorter(square, pre.image_size).convert("RGB"))


def _albumentations():
    """The albumentations module, imported without its check for a newer release (a request to PyPI
    at import time, up to 2 s, from every training run)."""
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    import albumentations

    return albumentations


def train_augment(image_size: int, seed: int, robust: bool = False):
    """Augmentation for dermoscopy: any orientation is valid, colour and scale vary a little, and
    the round-dermoscope vignette is added at random (see `random_vignette`).

    `robust` widens it to the ways real photos differ from the training images (the kinds of
    change `shifts.SHIFTS` measures, at the strengths a real photo has), drawn on both classes alike:
    closer (crops to 35%) and farther (zoomed out to 50% with a reflected skin border), lower
    resolution, blur, JPEG, sensor noise, another illuminant (Planckian), gamma and stronger colour
    jitter."""
    A = _albumentations()
    import cv2

    if not robust:
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
    return A.Compose(
        [
            A.RandomResizedCrop(size=(image_size, image_size), scale=(0.35, 1.0), ratio=(0.8, 1.25)),
            A.SquareSymmetry(),
            A.Affine(scale=(0.5, 1.0), rotate=(-45, 45), border_mode=cv2.BORDER_REFLECT_101, p=0.6),
            A.OneOf([A.Downscale(scale_range=(0.25, 0.9), interpolation_pair={"downscale": cv2.INTER_AREA, "upscale": cv2.INTER_LINEAR}),
                     A.GaussianBlur(sigma_limit=(0.3, 2.0))], p=0.7),
            A.GaussNoise(std_range=(0.01, 0.06), p=0.25),
            A.PlanckianJitter(mode="blackbody", p=0.4),
            A.RandomGamma(gamma_limit=(70, 150), p=0.3),
            A.ColorJitter(brightness=0.25, contrast=0.25, saturation=0.2, hue=0.03, p=0.8),
            random_vignette(p=0.2),
            A.ImageCompression(quality_range=(20, 95), p=0.5),
        ],
        seed=seed,
    )


def random_vignette(p: float, radius: tuple[float, float] = (0.5, 0.72)):
    """Black outside a centred circle, as a round dermoscope leaves it. In the Kaggle training data
    such dark corners are far more common among the melanomas than among the benign images (a count
    by hand, not kept), a cue that has nothing to do with the lesion; drawn at random on any image, it
    stops telling the classes apart. `radius` is the circle's radius as a share of the side (0.5 touches the edges).
    Hand-written because albumentations has no such transform (a few lines)."""
    A: Any = _albumentations()  # the module (no type information), so its classes can be bases

    class RandomVignette(A.ImageOnlyTransform):
        def get_params_dependent_on_data(self, params, data):
            return {"radius": self.py_random.uniform(*radius)}

        def apply(self, img, radius=0.6, **params):
            h, w = img.shape[:2]
            yy, xx = np.ogrid[:h, :w]
            outside = (yy - (h - 1) / 2) ** 2 + (xx - (w - 1) / 2) ** 2 > (radius * min(h, w)) ** 2
            out = img.copy()
            out[outside] = 0
            return out

    return RandomVignette(p=p)
