"""Grad-CAM on the model's last convolutional stage, and the overlay as a pure function.

The map is of the margin, the target class's logit minus the other's: the probability depends on
that difference alone, and much of what raises the malignant logit raises the benign one as well,
so a map of one logit shows regions that change nothing. Target 1 (malignant) shows what raised the
estimate of melanoma, target 0 what lowered it.

For a head of global average pooling followed by one linear layer (EfficientNet-Lite0 here),
Grad-CAM needs no backward pass: the gradient of a class score with respect to each feature map
is that class's linear weight divided by the map's area, the same at every position, so Grad-CAM
is the class activation map relu(sum_k w_k A_k) up to a constant that the normalisation removes.
`infer` uses that (one forward pass, no hooks); other heads (seed_cnn) go through captum's
LayerGradCam, the reference that tests/test_predict_explain.py compares the shortcut against.
An ONNX model's map is an output of its graph (onnx_model.py); that path needs no torch.
"""

from __future__ import annotations

import contextlib
import threading
from typing import TYPE_CHECKING, NamedTuple, cast

import numpy as np
from PIL import Image

from .kinds import MELANOMA, OTHER_CANCERS, OTHER_TARGET

if TYPE_CHECKING:
    import torch
    from torch import nn

    from .model import Classifier
    from .onnx_model import OnnxModel

# captum's hooks sit on the model, which the page's sessions and the API's threads share: while they
# are on, no other forward pass may run through it (`infer` holds this for every pass of such a model)
_HOOKS = threading.RLock()


def margin(model: torch.nn.Module, target: int = 1):
    """x -> the logit of class `target` minus the other class's (two classes)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return logits[:, target] - logits[:, 1 - target]
    return forward


def margin_weights(fc: nn.Linear, target: int = 1) -> torch.Tensor:
    """The weights of class `target`'s margin over a linear head's input (its map is the class
    activation map of the margin: explain's, the ONNX graph's and the deletion test's)."""
    return fc.weight[target] - fc.weight[1 - target]





def other_weights(kinds_fc: nn.Linear, kinds: list[str]) -> torch.Tensor:
    """The weights of the other-cancer margin over the pooled features: the kinds head's mean logit of
    the other skin cancers minus its mean logit of the harmless kinds (kinds.py), whose map shows what
    raised the estimate of another skin cancer against a harmless spot."""
    other = [i for i, k in enumerate(kinds) if k in OTHER_CANCERS]
    harmless = [i for i, k in enumerate(kinds) if k not in OTHER_CANCERS and k != MELANOMA]
    return kinds_fc.weight[other].mean(0) - kinds_fc.weight[harmless].mean(0)


def grad_cam(model: torch.nn.Module, x: torch.Tensor, target: int = 1) -> np.ndarray:
    """B x H x W maps in [0, 1] of the regions that raise the margin of class `target`, at the
    input's size (captum's LayerGradCam on `model.features`; its hooks are removed when the call ends)."""
    from captum.attr import LayerGradCam

    model.eval()
    with _HOOKS:
        cam = LayerGradCam(margin(model, target), model.features).attribute(x, relu_attributions=True)
    return _to_input_size(cam.detach().float().numpy(), (x.shape[-2], x.shape[-1]))


def linear_head(model: Classifier | OnnxModel) -> nn.Linear | None:
    """The head's linear layer when the head is global average pooling then (dropout and) one linear
    layer, the case where Grad-CAM equals the class activation map; otherwise None."""
    if model.engine != "torch":  # an onnx_model.OnnxModel: no modules to look at
        return None
    from torch import nn

    head = cast("nn.Sequential", cast("Classifier", model).head)  # model.py's heads are nn.Sequential; it declares nn.Module
    layers = [m for m in head if not isinstance(m, (nn.Flatten, nn.Dropout))]
    if (len(layers) == 2 and isinstance(layers[0], nn.AdaptiveAvgPool2d) and layers[0].output_size in (1, (1, 1))
            and isinstance(layers[1], nn.Linear)):
        return layers[1]
    return None


class Inference(NamedTuple):
    logits: torch.Tensor | np.ndarray  # B x classes (numpy from an ONNX model)
    cam: np.ndarray | None  # B x H x W Grad-CAM maps in [0, 1] (with cam=True)
    ood: np.ndarray | None  # B out-of-distribution scores (when the model carries the fit, see ood.py)
    kinds: np.ndarray | None = None  # B x K logits of the kinds head (when the model carries one, see kinds.py)


def infer(model: Classifier | OnnxModel, x: torch.Tensor | np.ndarray, target: int = 1, cam: bool = True) -> Inference:
    """The one pass every entry point scores a normalised batch through: logits, the Grad-CAM maps
    of class `target`'s margin (in the same forward pass when the head allows it, see the module docstring;
    `OTHER_TARGET`: of the other-cancer margin, `other_weights`), the OOD score and the kinds head's logits.
    `model` is the torch Classifier (a `preprocess.normalize` batch) or an onnx_model.OnnxModel (a
    `preprocess.normalize_nhwc` batch): `predict.model_input` makes either."""
    if model.engine == "onnx":  # the maps, the score and the kinds are outputs of its graph
        onnx = cast("OnnxModel", model)
        assert isinstance(x, np.ndarray)  # the ONNX engine's batch is preprocess.normalize_nhwc's
        logits, graph_maps, ood, kinds = onnx.outputs(x, target, cam)
        size = onnx.info.preprocess.image_size
        return Inference(logits, _to_input_size(cast(np.ndarray, graph_maps), (size, size)) if cam else None, ood, kinds)  # with cam, never None
    import torch

    model = cast("Classifier", model)  # engine "torch"
    assert isinstance(x, torch.Tensor)  # the torch engine's batch is preprocess.normalize's
    model.eval()
    fc = linear_head(model)
    if target == OTHER_TARGET and (fc is None or model.kinds is None):
        raise ValueError("the map of another skin cancer needs a kinds head over a pooling and linear head")
    with _HOOKS if fc is None else contextlib.nullcontext():  # a head that needs captum: its hooks may be on the model
        with torch.no_grad():
            maps, probe = model.features_and_probe(x)
            logits = model.head(maps)
            ood = model.ood(probe).numpy() if model.ood is not None else None
            kinds = model.kinds(maps.float().mean((2, 3))).numpy() if model.kinds is not None else None
            if cam and fc is not None:
                weights = other_weights(cast("nn.Linear", model.kinds), model.kind_codes) if target == OTHER_TARGET else margin_weights(fc, target)
                margin_maps = torch.einsum("c,bchw->bhw", weights, maps).clamp(min=0)
                cams = _to_input_size(margin_maps.float().numpy(), (x.shape[-2], x.shape[-1]))
        if cam and fc is None:
            cams = grad_cam(model, x, target)
    return Inference(logits, cams if cam else None, ood, kinds)


def _to_input_size(cam: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """B x h x w (or B x 1 x h x w) non-negative maps -> B x H x W in [0, 1], bilinear to the input's
    size `size` (H, W): OpenCV's, which is torch's `interpolate(mode="bilinear", align_corners=False)` to 1e-6."""
    import cv2

    if len(cam) == 0:
        return np.zeros((0, *size), np.float32)
    cam = np.stack([cv2.resize(np.asarray(c, np.float32).reshape(c.shape[-2:]), size[::-1], interpolation=cv2.INTER_LINEAR) for c in cam])
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
