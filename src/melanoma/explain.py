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
from typing import TYPE_CHECKING, cast

import numpy as np
from PIL import Image

from .inference import Engine, Inference, to_input_size
from .kinds import OTHER_TARGET

if TYPE_CHECKING:
    import torch

    from .model import Classifier

# captum's hooks sit on the model, which the page's sessions and the API's threads share: while they
# are on, no other forward pass may run through it (`infer` holds this for every pass of such a model)
_HOOKS = threading.RLock()


def margin(model: torch.nn.Module, target: int = 1):
    """x -> the logit of class `target` minus the other class's (two classes)."""
    def forward(x: torch.Tensor) -> torch.Tensor:
        logits = model(x)
        return logits[:, target] - logits[:, 1 - target]
    return forward


def grad_cam(model: torch.nn.Module, x: torch.Tensor, target: int = 1) -> np.ndarray:
    """B x H x W maps in [0, 1] of the regions that raise the margin of class `target`, at the
    input's size (captum's LayerGradCam on `model.features`; its hooks are removed when the call ends)."""
    from captum.attr import LayerGradCam

    model.eval()
    with _HOOKS:
        cam = LayerGradCam(margin(model, target), model.features).attribute(x, relu_attributions=True)
    return to_input_size(cam.detach().float().numpy(), (x.shape[-2], x.shape[-1]))


def infer(model: Classifier | Engine, x: torch.Tensor | np.ndarray, target: int = 1, cam: bool = True) -> Inference:
    """The one pass every entry point scores a normalised batch through: logits, the Grad-CAM maps
    of class `target`'s margin (in the same forward pass when the head allows it, see the module docstring;
    `OTHER_TARGET`: of the other-cancer margin, model.other_weights), the OOD score and the kinds head's
    logits. `model` is the torch Classifier (a `preprocess.normalize` batch), answered here, or a model
    of another engine (onnx_model.OnnxModel, a `preprocess.normalize_nhwc` batch), which answers itself;
    `predict.model_input` makes either batch."""
    if model.engine != "torch":  # the maps, the score and the kinds are outputs of its graph
        return cast("Engine", model).infer(cast(np.ndarray, x), target, cam)
    import torch

    from .model import linear_head, margin_weights, other_weights

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
                weights = other_weights(model.kinds, model.kind_codes) if model.kinds is not None and target == OTHER_TARGET \
                    else margin_weights(fc, target)
                margin_maps = torch.einsum("c,bchw->bhw", weights, maps).clamp(min=0)
                cams = to_input_size(margin_maps.float().numpy(), (x.shape[-2], x.shape[-1]))
        if cam and fc is None:
            cams = grad_cam(model, x, target)
    return Inference(logits, cams if cam else None, ood, kinds)


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
