"""What one pass of a model over a normalised batch answers (`Inference`), whichever engine ran it:
the torch network (explain.infer) or ONNX Runtime (onnx_model.OnnxModel.infer); numpy and OpenCV only."""

from __future__ import annotations

from typing import TYPE_CHECKING, NamedTuple, Protocol

import numpy as np

if TYPE_CHECKING:
    import torch


class Inference(NamedTuple):
    logits: torch.Tensor | np.ndarray  # B x classes (numpy from an ONNX model)
    cam: np.ndarray | None  # B x H x W Grad-CAM maps in [0, 1] (with cam=True)
    ood: np.ndarray | None  # B out-of-distribution scores (when the model carries the fit, see ood.py)
    kinds: np.ndarray | None = None  # B x K logits of the kinds head (when the model carries one, see kinds.py)


def to_input_size(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """B x h x w (or B x 1 x h x w) non-negative maps -> B x H x W in [0, 1], bilinear to the input's
    size `size` (H, W): OpenCV's, which is torch's `interpolate(mode="bilinear", align_corners=False)` to 1e-6."""
    import cv2

    if len(cam) == 0:
        return np.zeros((0, *size), np.float32)
    cam = np.stack([cv2.resize(np.asarray(c, np.float32).reshape(c.shape[-2:]), size[::-1], interpolation=cv2.INTER_LINEAR) for c in cam])
    peak = cam.reshape(len(cam), -1).max(1).reshape(-1, 1, 1)
    return np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0).astype(np.float32)




class Engine(Protocol):
    """A model run by another engine than torch (onnx_model.OnnxModel): it declares what it can do, as
    model.Classifier does, and answers `infer` itself."""

    engine: str
    maps: bool
    lowering_maps: bool

    def infer(self, x: np.ndarray, target: int = 1, cam: bool = True) -> Inference: ...
