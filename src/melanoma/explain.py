"""Grad-CAM on the model's last convolutional stage (captum), and the overlay as a pure function."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image


def grad_cam(model: torch.nn.Module, x: torch.Tensor, target: int = 1) -> np.ndarray:
    """B x H x W maps in [0, 1] of the regions that raise class `target`, at the input's size.

    captum registers its hooks on `model.features` only for the duration of the call and
    removes them in a `finally`, so nothing stays attached to the model.
    """
    from captum.attr import LayerAttribution, LayerGradCam

    model.eval()
    cam = LayerGradCam(model, model.features).attribute(x, target=target, relu_attributions=True)
    cam = LayerAttribution.interpolate(cam.detach(), tuple(x.shape[-2:]), interpolate_mode="bilinear")[:, 0]
    cam = cam.float().numpy()
    peak = cam.reshape(len(cam), -1).max(1).reshape(-1, 1, 1)
    return np.where(peak > 0, cam / np.maximum(peak, 1e-12), 0.0).astype(np.float32)


def overlay(image: np.ndarray, cam: np.ndarray, box: tuple[int, int, int, int] | None = None, alpha: float = 0.45) -> np.ndarray:
    """Heat map `cam` (values in [0, 1]) blended onto `image` (H x W x 3 uint8) inside `box`.

    `box` (left, top, right, bottom) is the part of the image the model saw, where the map is
    stretched to; the rest of the image, which the model did not see, is shown darkened.
    """
    from matplotlib import colormaps

    h, w = image.shape[:2]
    left, top, right, bottom = box or (0, 0, w, h)
    cam_im = Image.fromarray(np.asarray(cam, dtype=np.float32), mode="F").resize((right - left, bottom - top), Image.Resampling.BILINEAR)
    heat = colormaps["jet"](np.clip(np.asarray(cam_im), 0.0, 1.0))[..., :3] * 255.0
    out = image.astype(np.float32) * 0.45  # outside the model's view
    region = image[top:bottom, left:right].astype(np.float32)
    out[top:bottom, left:right] = (1.0 - alpha) * region + alpha * heat
    return np.clip(out + 0.5, 0, 255).astype(np.uint8)
