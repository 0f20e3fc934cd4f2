"""The model as ONNX: `melanoma export --onnx FILE`, and prediction through ONNX Runtime.

The exported graph takes the normalised image batch and returns the logits, for a head of
pooling + one linear layer the class activation map of the positive class's margin (= Grad-CAM, see
explain.py), so `predict --model FILE.onnx --cam` needs no torch model, and the out-of-distribution
score when the model carries one (ood.py). The model's ModelInfo (threshold,
temperature, preprocessing, ...) travels in the ONNX file's metadata, so the file stands alone.
Running a file (`OnnxModel`) needs numpy and ONNX Runtime, not torch; exporting one needs torch.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .inference import Inference, to_input_size
from .kinds import OTHER_TARGET
from .modelinfo import METADATA_KEY, ModelFileError, ModelInfo, error_summary

if TYPE_CHECKING:
    import torch

    from .model import Classifier

DIGEST_KEY = "melanoma_sha256"
SOURCE_KEY = "melanoma_exported_from"  # a float graph's: the SHA-256 of the model file it was exported from


def digest(graph_proto, info_json: str, exported_from: str = "") -> str:
    """SHA-256 over the graph (weights included), the ModelInfo it carries and the file it was exported
    from: what `OnnxModel` checks before trusting a file, as `model.load` checks a safetensors file's checksum."""
    import hashlib

    return hashlib.sha256(graph_proto.SerializeToString(deterministic=True) + info_json.encode() + exported_from.encode()).hexdigest()


def _graph(model: Classifier, target: int) -> torch.nn.Module:
    """The module `export` traces: normalised NHWC batch -> logits, map (with a linear head), OOD
    score, and with a kinds head its logits and the map of the other-cancer margin (kinds.py)."""
    import torch
    from torch import nn

    from .model import linear_head, margin_weights, other_weights

    class Graph(nn.Module):
        def __init__(self):
            super().__init__()
            self.model, self.fc, self.target = model, linear_head(model), target
            self.has_kinds = model.kinds is not None and self.fc is not None

        def outputs(self) -> list[str]:
            return (["logits"] + ["cam"] * (self.fc is not None) + ["ood"] * (self.model.ood is not None)
                    + ["kinds", "cam_other"] * self.has_kinds)

        def forward(self, image_nhwc: torch.Tensor):
            # The input is the normalised batch in NHWC order, the memory order of our channels_last
            # tensors, so handing it over needs no copy.
            maps, probe = self.model.features_and_probe(image_nhwc.permute(0, 3, 1, 2))
            out = [self.model.head(maps)]
            if self.fc is not None:
                out.append(torch.relu(torch.einsum("c,bchw->bhw", margin_weights(self.fc, self.target), maps)))
            if self.model.ood is not None:
                out.append(self.model.ood(probe))
            if self.has_kinds:
                out.append(self.model.kinds(maps.mean((2, 3))))
                out.append(torch.relu(torch.einsum("c,bchw->bhw", other_weights(self.model.kinds, self.model.kind_codes), maps)))
            return tuple(out)

    return Graph().eval()


def export(model: Classifier, info: ModelInfo, path: str | os.PathLike, exported_from: str = "", float16: bool = False) -> None:
    """Write `model` as ONNX (batch size free) with `info` in its metadata, atomically; `exported_from`, the
    SHA-256 of the model file it came from, lets the graph show that file's measured figures
    (modelinfo.measured_figures): the float graph computes the same function (tests/test_onnx.py). With
    `float16`, the weights float16 holds exactly (those of a file that keeps them as float16) are stored so
    (`store_float16`); int8.quantize asks for plain float32 weights, which it quantises."""
    import torch

    graph: Any = _graph(model.eval(), target=len(info.class_names) - 1)  # _graph's local Graph module, with its outputs()
    if info.kinds and not graph.has_kinds:
        raise ModelFileError("a kinds head over a head that is not pooling and one linear layer cannot be exported")
    size = info.preprocess.image_size
    example = torch.zeros(2, size, size, 3)
    program = torch.onnx.export(graph, (example,), None, input_names=["image_nhwc"], output_names=graph.outputs(),
                                dynamic_shapes={"image_nhwc": {0: torch.export.Dim("batch")}}, dynamo=True, verbose=False,
                                optimize=not float16)  # the optimiser folds batch norms into the weights, which float16 then no longer holds exactly
    assert program is not None  # dynamo=True returns the ONNXProgram
    proto = program.model_proto
    if float16:
        store_float16(proto)
    save(proto, info, path, exported_from)


def store_float16(proto) -> None:
    """Each float32 weight that float16 holds exactly stored as float16 and cast back to float32 as the
    graph starts: the same numbers at half the size (an ensemble file keeps its members' weights as float16,
    ensemble.py; ONNX Runtime folds the casts once, when it loads the graph). Other weights stay as they are, and so do
    tensors under 64 values (shapes, scales and other small constants, where a cast saves nothing)."""
    from onnx import TensorProto, helper, numpy_helper

    casts = []
    for weight in proto.graph.initializer:
        if weight.data_type != TensorProto.FLOAT:
            continue
        values = numpy_helper.to_array(weight)
        half = values.astype(np.float16)
        if values.size < 64 or not np.array_equal(half.astype(np.float32), values):
            continue
        name = weight.name
        weight.CopyFrom(numpy_helper.from_array(half, f"{name}_float16"))
        casts.append(helper.make_node("Cast", [f"{name}_float16"], [name], to=TensorProto.FLOAT, name=f"{name}_to_float32"))
    nodes = list(proto.graph.node)
    del proto.graph.node[:]
    proto.graph.node.extend(casts + nodes)


def save(proto, info: ModelInfo, path: str | os.PathLike, exported_from: str = "") -> None:
    """The graph with `info`, the file it was exported from (a float graph's) and the digest of all three in
    its metadata (any earlier ones replaced: int8.quantize saves a graph made from a float one), atomically."""
    import onnx

    from .model import replace_atomically

    ours = (METADATA_KEY, DIGEST_KEY, SOURCE_KEY)
    kept = [(p.key, p.value) for p in proto.metadata_props if p.key not in ours]
    del proto.metadata_props[:]
    values = [(METADATA_KEY, info.to_json()), (DIGEST_KEY, digest(proto.graph, info.to_json(), exported_from))]
    for key, value in kept + values + [(SOURCE_KEY, exported_from)] * bool(exported_from):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    onnx.save_model(proto, str(tmp))
    replace_atomically(tmp, path)


class OnnxModel:
    """An exported model run by ONNX Runtime on a normalised batch, numpy N x H x W x 3 float32
    (`preprocess.normalize_nhwc`, as `predict.model_input` makes it); it answers in numpy arrays.
    Abilities, as the Classifier declares them: `maps` when the graph outputs the class activation map
    (a head of pooling + one linear layer; only of the positive class), never `lowering_maps`."""

    engine = "onnx"
    lowering_maps = False

    def __init__(self, path: str | os.PathLike, threads: int | None = None):
        import onnxruntime as ort

        path = Path(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: ONNX model file not found")
        options = ort.SessionOptions()
        if threads:
            options.intra_op_num_threads = threads
        try:
            import onnx

            proto = onnx.load(str(path))
            meta = {p.key: p.value for p in proto.metadata_props}
            self.exported_from = meta.get(SOURCE_KEY)  # the model file a float graph was exported from (its measured figures)
            if METADATA_KEY not in meta or meta.get(DIGEST_KEY) != digest(proto.graph, meta[METADATA_KEY], self.exported_from or ""):
                raise ValueError("the graph or its metadata do not match their digest: the file was altered, damaged, or not made by this program")
            self.info = ModelInfo.from_json(meta[METADATA_KEY])
            self.session = ort.InferenceSession(proto.SerializeToString(), options, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own error types
            raise ModelFileError(f"{path}: not a usable melanoma ONNX file (made by `melanoma export --onnx`): {error_summary(exc)}") from None
        self.output_names = [o.name for o in self.session.get_outputs()]
        self.maps = "cam" in self.output_names
        self.int8 = any(n.op_type == "QuantizeLinear" for n in proto.graph.node)

    def eval(self) -> "OnnxModel":
        return self

    def _run(self, x: np.ndarray) -> dict[str, np.ndarray]:
        return dict(zip(self.output_names, self.session.run(None, {"image_nhwc": np.ascontiguousarray(x, dtype=np.float32)})))

    def __call__(self, x: np.ndarray) -> np.ndarray:
        return self._run(x)["logits"]

    def infer(self, x: np.ndarray, target: int = 1, cam: bool = True) -> Inference:
        """explain.infer's answer from the graph's outputs: logits, the class activation maps (with
        `cam`: of the positive class, or with target kinds.OTHER_TARGET of the other-cancer margin; at
        the input's size, in [0, 1]), the OOD scores and the kinds head's logits (None where the model
        carries none)."""
        name = "cam_other" if target == OTHER_TARGET else "cam"
        if cam and (name not in self.output_names or target not in (OTHER_TARGET, len(self.info.class_names) - 1)):
            raise ModelFileError("this ONNX model carries no such class activation map; use the .safetensors model it was exported from for Grad-CAM")
        out = self._run(x)
        size = self.info.preprocess.image_size
        return Inference(out["logits"], to_input_size(out[name], (size, size)) if cam else None, out.get("ood"), out.get("kinds"))
