"""A model file's record (`ModelInfo`), its format, its one error type, where the bundled model lives
and the figures measured on a file: what reading a model file needs besides its weights, without torch
(an .onnx file is run by ONNX Runtime alone; model.py builds the torch networks)."""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from .preprocess import Preprocess

FORMAT_VERSION = 1
METADATA_KEY = "melanoma"
ARCHITECTURE_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "seed_cnn")  # model.ARCHITECTURES' keys
RUN_RECORD = ("best_epoch", "split_sha256", "epochs_run")  # validation's keys that say how the run went: kept when a file is recalibrated
BUNDLED_MODEL = Path(__file__).resolve().parent / "bundled" / "melanoma_efficientnet_lite0.safetensors"
# The same model as a float ONNX graph (`melanoma export --onnx`), what an install without torch (no `train` extra) runs:
# loader.default_model_path.
BUNDLED_ONNX = BUNDLED_MODEL.with_suffix(".onnx")


@dataclass
class ModelInfo:
    """Everything inference needs, and the record of how the model was made."""

    arch: str
    preprocess: Preprocess
    class_names: tuple[str, ...] = ("Benign", "Malignant")
    threshold: float = 0.5  # on the calibrated probability of the positive (last) class
    temperature: float = 1.0  # logits are divided by this before the softmax
    target_sensitivity: float | None = None
    train_config: dict = field(default_factory=dict)
    data_fingerprint: str | None = None
    validation: dict = field(default_factory=dict)
    history: list = field(default_factory=list)  # per-epoch losses/accuracies, for the curves
    versions: dict = field(default_factory=dict)
    ood_cutoff: float | None = None  # OOD scores above this are flagged (with the `ood.*` tensors; see ood.py)
    ood_block: int | None = None  # the block whose output the OOD score reads; None: the last stage (ood.py)
    sources: list = field(default_factory=list)  # the training sources: name, licence, images per label and diagnosis (sources.py)
    members: list = field(default_factory=list)  # an ensemble's members (ensemble.py): name, recipe, validation, weights' checksum; [] for one network
    kinds: list = field(default_factory=list)  # the kinds head's codes in its order (with the `kinds.*` tensors; kinds.py); [] for none
    other_threshold: float | None = None  # on the estimate of another skin cancer (kinds.other_cancer), with a kinds head
    other_target_sensitivity: float | None = None  # the validation sensitivity other_threshold was chosen for
    kinds_validation: dict = field(default_factory=dict)  # how the kinds head did on the validation split (kinds_fit.py)
    kinds_prior: dict = field(default_factory=dict)  # kind -> its share of the training loss, out of the head's bias (kinds_fit.correct_for_prior); {}: none
    melanoma_from_kinds: bool = False  # the melanoma estimate is read from the kinds head (model.kinds_margin_head; calibrate --melanoma-from-kinds)

    @property
    def licence(self) -> str:
        """The weights' licence in one sentence, from the sources they were trained on."""
        from .sources import weights_licence

        return weights_licence(self.sources)

    def to_json(self) -> str:
        d = asdict(self)
        d["preprocess"] = self.preprocess.to_dict()
        d["format_version"] = FORMAT_VERSION
        return json.dumps(d, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "ModelInfo":
        d = json.loads(text)
        if d.pop("format_version", None) != FORMAT_VERSION:
            raise ValueError(f"model file format is not version {FORMAT_VERSION}")
        d["preprocess"] = Preprocess.from_dict(d["preprocess"])
        d["class_names"] = tuple(d["class_names"])
        return cls(**d)


class ModelFileError(ValueError):
    """A model file, or the pretrained weights a network is built from, that cannot be used (one-line message)."""


def error_summary(exc: BaseException) -> str:
    """The first line of an exception's message (its type when it has none), for one-line errors."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def file_sha256(path: str | os.PathLike | None = None) -> str:
    """SHA-256 of a model file's bytes (the bundled one by default): what ties a metrics file to the
    exact weights and settings it was measured on."""
    h = hashlib.sha256()
    with open(Path(path) if path is not None else BUNDLED_MODEL, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def measured_figures(path: str | os.PathLike | None = None, measured: str | None = None) -> dict | None:
    """The metrics.json beside a model file (the bundled one by default), written by `melanoma
    evaluate`, when it names the file it was measured on: this exact file, or the file whose SHA-256
    is `measured` (a float ONNX graph's source, `OnnxModel.exported_from`); otherwise None. What the
    page and the API show as the model's measured test figures."""
    model_file = Path(path) if path is not None else BUNDLED_MODEL
    metrics = model_file.with_name("metrics.json")
    try:
        m = json.loads(metrics.read_text())
    except (OSError, ValueError):
        return None
    named = {file_sha256(model_file), measured} - {None}  # a metrics.json that names no file names none of these
    return m if isinstance(m, dict) and m.get("model_sha256") in named else None
