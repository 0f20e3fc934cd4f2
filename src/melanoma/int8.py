"""int8: `melanoma export --onnx FILE --int8` (and the bench's int8 phase): the model statically
quantised with ONNX Runtime's tools, then calibrated as itself. Apart from onnx_model.py, which holds
what running and writing any ONNX file needs; this is tooling that needs torch, onnx and the model's
validation images."""

from __future__ import annotations

import os
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from .modelinfo import RUN_RECORD, ModelInfo
from .onnx_model import OnnxModel, export, save

if TYPE_CHECKING:
    from .model import Classifier

KEEP_FLOAT_FIRST = (2, 6, 12, 24)  # int8: the first convolutions that stay float, tried in turn (see quantize)
KEEP_FLOAT_LAST = 4  # int8: the last four convolutions (the last block and the head conv) stay float
INT8_AUC_LOSS = 0.005  # int8: the validation ROC AUC an int8 graph may lose against the float model's
INT8_VERDICTS_KEPT = 0.99  # int8: the share of the float graph's validation verdicts an int8 graph must keep
CALIBRATION_IMAGES = 128  # int8: validation images the activation ranges come from
CALIBRATION_CHUNK = 8  # int8: calibration images whose activations are held at once (see quantize)


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
