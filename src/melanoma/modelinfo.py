"""A model file's record (`ModelInfo`), its format and its one error type: what reading a model file
needs besides its weights, without torch (an .onnx file is run by ONNX Runtime alone; model.py, which
builds the torch networks, re-exports these names)."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field

from .preprocess import Preprocess

FORMAT_VERSION = 1
METADATA_KEY = "melanoma"
ARCHITECTURE_NAMES = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2", "seed_cnn")  # model.ARCHITECTURES' keys
RUN_RECORD = ("best_epoch", "split_sha256", "epochs_run")  # validation's keys that say how the run went: kept when a file is recalibrated


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
