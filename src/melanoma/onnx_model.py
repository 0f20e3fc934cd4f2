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

from .errors import require_extra
from .inference import Inference, to_input_size
from .kinds import OTHER_TARGET
from .modelinfo import METADATA_KEY, RUN_RECORD, ModelFileError, ModelInfo, error_summary

if TYPE_CHECKING:
    import torch

    from .model import Classifier

DIGEST_KEY = "melanoma_sha256"


def digest(graph_proto, info_json: str) -> str:
    """SHA-256 over the graph (weights included) and the ModelInfo it carries: what `OnnxModel`
    checks before trusting a file, as `model.load` checks a safetensors file's checksum."""
    import hashlib

    return hashlib.sha256(graph_proto.SerializeToString(deterministic=True) + info_json.encode()).hexdigest()


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


def export(model: Classifier, info: ModelInfo, path: str | os.PathLike) -> None:
    """Write `model` as ONNX (batch size free) with `info` in its metadata, atomically."""
    import torch

    graph: Any = _graph(model.eval(), target=len(info.class_names) - 1)  # _graph's local Graph module, with its outputs()
    if info.kinds and not graph.has_kinds:
        raise ModelFileError("a kinds head over a head that is not pooling and one linear layer cannot be exported")
    size = info.preprocess.image_size
    example = torch.zeros(2, size, size, 3)
    program = torch.onnx.export(graph, (example,), None, input_names=["image_nhwc"], output_names=graph.outputs(),
                                dynamic_shapes={"image_nhwc": {0: torch.export.Dim("batch")}}, dynamo=True, verbose=False)
    assert program is not None  # dynamo=True returns the ONNXProgram
    save(program.model_proto, info, path)


KEEP_FLOAT_FIRST = (2, 6, 12, 24)  # int8: the first convolutions that stay float, tried in turn (see quantize)
KEEP_FLOAT_LAST = 4  # int8: the last four convolutions (the last block and the head conv) stay float
INT8_AUC_LOSS = 0.005  # int8: the validation ROC AUC an int8 graph may lose against the float model's
INT8_VERDICTS_KEPT = 0.99  # int8: the share of the float graph's validation verdicts an int8 graph must keep
CALIBRATION_IMAGES = 128  # int8: validation images the activation ranges come from
CALIBRATION_CHUNK = 16  # int8: calibration images whose activations are held at once (see quantize)


def chunk(n: int) -> int:
    """The largest chunk of at most CALIBRATION_CHUNK images that divides `n` (ONNX Runtime's strided
    calibration asks for equal chunks)."""
    return max(c for c in range(1, min(n, CALIBRATION_CHUNK) + 1) if n % c == 0)


def quantize(model: Classifier, info: ModelInfo, calibration: np.ndarray, validation: tuple[np.ndarray, np.ndarray],
             path: str | os.PathLike) -> ModelInfo:
    """Write `model` as a statically quantised int8 ONNX file (ONNX Runtime's quantisation tools):
    weights per channel, activations per tensor with ranges from the model views `calibration`
    (N x H x W x 3 uint8; validation images, never test; the 99.999th percentile of each activation,
    not its extreme), QDQ format, convolutions and their ReLU6 clips. The stem (first conv and first
    depthwise conv) and the last block with the head conv stay float; where the int8 graph then ranks
    `validation` more than INT8_AUC_LOSS worse than the float graph ranks the same views, the first 6,
    then 12 convolutions stay float instead (KEEP_FLOAT_FIRST; the last try is kept whatever it scores;
    `validation["float_convs_first"]` says which was kept, `validation["float_graph_auc"]` what the float
    graph scored on the same views, the one figure the int8 graph is held to, here and by `export --int8`
    through `ranks_worse`): a model whose early blocks kept their ImageNet weights (`--freeze-blocks`,
    other_a) lost 0.03 of validation ROC AUC with only the stem float, and
    0.001 with its first 12 convolutions float (a scratch probe on 800 of its validation images). The recipe was chosen by hand on
    an earlier model's validation split (which layers stay float, percentile against extreme ranges,
    how many images), by the share of verdicts the int8 graph keeps; those trials were not kept, what
    is kept is each bundled model's int8 figures (`docs/int8/`, `melanoma bench`). Quantising the clips
    as well lets ONNX Runtime fuse each clip into its convolution instead of requantising between
    them: faster, and nearer the float logits (tried by hand on Kaggle train images; the bench keeps
    the speed, the int8 file its validation figures). The calibrator holds every
    activation of the images it is given at once, so they are given in chunks of CALIBRATION_CHUNK
    ("CalibStridedMinMax", which despite its name chunks any calibrator): each chunk's histograms are
    merged into the ones before at the first chunk's bin width, extended where a later chunk reaches
    further, so the ranges are as fine as from all images at once (peak memory 10.2 GB with all 128
    at once, the bundled model, 2026-12-01; see docs/speed.md for the chunked figure).

    The int8 graph is then calibrated as itself on `validation` (the model's validation views and
    labels; `refit`): its own temperature, threshold and OOD cut-off, and its own validation figures.
    Returns the ModelInfo the file carries."""
    import tempfile

    import onnx
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quant_pre_process, quantize_static

    from .preprocess import normalize_nhwc

    x = normalize_nhwc(calibration, info.preprocess)

    class Batches(CalibrationDataReader):
        """The calibration images one by one (the percentile calibrator needs equal batches), in chunks
        of CALIBRATION_CHUNK (`set_range`, called by ONNX Runtime for "CalibStridedMinMax")."""

        def __init__(self):
            self.set_range(0, len(x))

        def __len__(self) -> int:
            return len(x)

        def set_range(self, start_index: int, end_index: int) -> None:
            self.batches = iter(range(start_index, min(end_index, len(x))))

        def get_next(self):
            i = next(self.batches, None)
            return None if i is None else {"image_nhwc": x[i : i + 1]}

    with tempfile.TemporaryDirectory() as tmp:
        plain, prepared, quantised = (Path(tmp) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
        export(model, info, plain)
        quant_pre_process(str(plain), str(prepared), skip_symbolic_shape=True)
        convs = [n.name for n in onnx.load(str(prepared)).graph.node if n.op_type == "Conv"]
        floated, float_verdicts = refit(OnnxModel(plain), info, *validation)  # the float graph on the same views
        for first in KEEP_FLOAT_FIRST:
            quantize_static(str(prepared), str(quantised), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                            activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, op_types_to_quantize=["Conv", "Clip"],
                            calibrate_method=CalibrationMethod.Percentile,
                            extra_options={"CalibPercentile": 99.999, "CalibStridedMinMax": chunk(len(x))},
                            nodes_to_exclude=convs[:first] + convs[-KEEP_FLOAT_LAST:])
            proto = onnx.load(str(quantised))
            del proto.metadata_props[:]
            save(proto, info, quantised)
            refitted, verdicts = refit(OnnxModel(quantised), info, *validation)
            refitted.validation.update(float_convs_first=first, float_graph_auc=floated.validation["auc"],
                                       float_verdicts_kept=float(np.mean(verdicts == float_verdicts)))
            if not ranks_worse(refitted.validation):
                break
        del proto.metadata_props[:]
    save(proto, refitted, path)
    return refitted


def ranks_worse(validation: dict) -> bool:
    """Whether an int8 graph's validation figures (`quantize`) rank its validation views more than
    INT8_AUC_LOSS worse than the float graph ranked the same views, or keep fewer than INT8_VERDICTS_KEPT
    of the float graph's verdicts on them (each graph at its own threshold)."""
    return (validation["auc"] < validation["float_graph_auc"] - INT8_AUC_LOSS
            or validation.get("float_verdicts_kept", 1.0) < INT8_VERDICTS_KEPT)


def refit(int8: "OnnxModel", info: ModelInfo, views: np.ndarray, labels: np.ndarray) -> tuple[ModelInfo, np.ndarray]:
    """`info` with the int8 graph's own temperature, threshold (for the same target sensitivity) and
    OOD cut-off (the same validation quantile), fitted on its scores of the validation views, and its
    own validation figures (`validation["int8"]`, the float model's kept under `"float"`); with the
    graph's verdicts on the views at that threshold (True: melanoma suspected)."""
    from dataclasses import replace

    from .calibration import operating_point
    from .metrics import binary_metrics
    from .ood import cutoff_of
    from .scoring import inferences

    outs = list(inferences(int8, views, info.preprocess))
    logits = np.concatenate([o.logits for o in outs])
    temperature, p, threshold = operating_point(logits, labels, info.target_sensitivity)
    threshold = info.threshold if threshold is None else threshold
    m = binary_metrics(labels, p, threshold, bootstrap=0)
    cutoff = cutoff_of(np.concatenate([o.ood for o in outs])) if info.ood_cutoff is not None else None
    kept = {k: v for k, v in info.validation.items() if k in RUN_RECORD}
    validation = {**kept, "int8": True, "images": int(len(labels)), "auc": m["roc_auc"], "sensitivity": m["sensitivity"],
                  "specificity": m["specificity"], "float": {k: v for k, v in info.validation.items() if k not in kept}}
    return replace(info, temperature=float(temperature), threshold=float(threshold), ood_cutoff=cutoff, validation=validation), p >= threshold


def save(proto, info: ModelInfo, path: str | os.PathLike) -> None:
    """The graph with `info` and the digest of both in its metadata, written atomically."""
    import onnx

    from .model import replace_atomically

    for key, value in ((METADATA_KEY, info.to_json()), (DIGEST_KEY, digest(proto.graph, info.to_json()))):
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
        require_extra("onnx", f"{path}: an .onnx model file")
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
            if METADATA_KEY not in meta or meta.get(DIGEST_KEY) != digest(proto.graph, meta[METADATA_KEY]):
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
