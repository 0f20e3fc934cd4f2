"""What the model says besides its melanoma estimate: the differential over the kinds of skin spot its
training data names, the estimate of another skin cancer, and the verdict in words.

The melanoma estimate stays the primary one: the calibrated probability of the melanoma head, with
its threshold chosen for a stated sensitivity. A model file may also carry a kinds head (`kinds.*`
tensors, `ModelInfo.kinds`: one logit per kind, over the same pooled features; `kinds_fit.py` fits
it). The differential is the kinds head's softmax: how much the spot resembles each kind, each kind
counted as if equally common where the head is balanced (a head trained end to end has its bias
corrected for the prior its weighted loss taught it, `kinds_fit.correct_for_prior`; a fitted probe is
balanced by its class weights). Its melanoma share is not the melanoma estimate, which is calibrated to
how often melanoma is among the spots of the training sources. The estimate of another skin cancer is
the differential's share of basal cell carcinoma and actinic keratosis / Bowen's disease, with its own
threshold (`ModelInfo.other_threshold`). (Until 2026-12-07 the differential put the melanoma estimate
first and shared the rest by the head's softmax over the other kinds: the melanoma head, which the
Kaggle data teaches that half of all spots are melanomas, then outvoted the head on most carcinomas and
keratoses, and the estimate of another cancer carried that estimate's complement; docs/kinds.md.)

Numpy only: the ONNX engine uses this too.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    from .modelinfo import ModelInfo

# HAM10000's diagnosis codes, the seven kinds of the ISIC 2018 challenge (task 3): a name and one plain line each.
KINDS = {
    "mel": ("melanoma", "The most dangerous skin cancer: it can spread if not removed early. A doctor should see it."),
    "nv": ("mole (melanocytic nevus)", "A common mole. Harmless, but a mole that changes, itches or bleeds should be seen by a doctor."),
    "bkl": ("benign keratosis", "Seborrheic keratosis, solar lentigo or a lichen-planus-like keratosis: a harmless growth of the "
            "skin's surface, common with age."),
    "df": ("dermatofibroma", "A firm, harmless bump in the skin, often on the legs, sometimes after an insect bite."),
    "vasc": ("vascular lesion", "A cherry angioma, angiokeratoma or similar spot of small blood vessels; harmless."),
    "bcc": ("basal cell carcinoma", "The commonest skin cancer. It grows slowly and rarely spreads, but left alone it destroys "
            "the skin around it: a doctor should treat it."),
    "akiec": ("actinic keratosis / Bowen's disease", "Sun damage that can turn into squamous cell carcinoma (Bowen's disease is "
              "that cancer at its earliest stage): a doctor should treat it."),
}
MELANOMA = "mel"
OTHER_CANCERS = ("bcc", "akiec")  # skin cancers (and the precursor the archives group with them) that are not melanoma
# Other archives' names for the same kinds (ISIC 2017's diagnoses; PAD-UFES-20's codes; squamous cell
# carcinoma, which the seven kinds lack, goes with the intraepithelial one).
ALIASES = {"melanoma": "mel", "nevus": "nv", "seborrheic_keratosis": "bkl", "NEV": "nv", "SEK": "bkl", "MEL": "mel",
           "BCC": "bcc", "ACK": "akiec", "SCC": "akiec", "NV": "nv", "BKL": "bkl", "DF": "df", "VASC": "vasc",
           "AKIEC": "akiec"}

HARMLESS = tuple(k for k in KINDS if k != MELANOMA and k not in OTHER_CANCERS)  # the kinds a "Benign" label allows


def kind_set(code: str | None, label: int, kinds: list[str], unnamed: str) -> list[bool]:
    """Which of `kinds` a training image may be: its own kind where its source names one; where it names none
    (the Kaggle folders), with `unnamed` "label" its label as a set of kinds (Malignant: melanoma; Benign: any
    harmless kind), with "ignore" none (the kinds head does not learn from it)."""
    if code:
        return [k == code for k in kinds]
    if unnamed != "label":
        return [False] * len(kinds)
    return [k == MELANOMA if label == 1 else k in HARMLESS for k in kinds]


MELANOMA_SUSPECTED = "melanoma suspected"
OTHER_SUSPECTED = "other skin cancer suspected"
NO_SIGN = "no sign of skin cancer"
NO_MELANOMA_SIGN = "no sign of melanoma"  # a model without a kinds head cannot speak for other skin cancers
SENT_TO_DOCTOR = (MELANOMA_SUSPECTED, OTHER_SUSPECTED)
OTHER_TARGET = 2  # explain.infer's target for the map of the other-cancer estimate (a model with a kinds head)


def code_of(name: str) -> str | None:
    """A diagnosis as one of KINDS' codes (None: not one of the seven kinds)."""
    name = name.strip()
    return name if name in KINDS else ALIASES.get(name)


def kind_name(code: str) -> str:
    """A kind's name in words (its code when it is not one of the seven)."""
    return KINDS.get(code, (code,))[0]


def differential(kind_logits: np.ndarray, kinds: list[str]) -> np.ndarray:
    """B x K probabilities over `kinds` (the kinds head's order): the kinds head's softmax (see the module docstring)."""
    logits = np.asarray(kind_logits, np.float64)
    p = np.exp(logits - logits.max(1, keepdims=True))
    return p / p.sum(1, keepdims=True)


def other_cancer(diff: np.ndarray, kinds: list[str]) -> np.ndarray:
    """B: the differential's share of the skin cancers that are not melanoma."""
    return diff[:, [k in OTHER_CANCERS for k in kinds]].sum(1)


def verdict(p_melanoma: float, p_other: float | None, info: ModelInfo) -> str:
    """The words a person reads: melanoma first (its own threshold), then another skin cancer (its own),
    and "no sign of skin cancer" only when neither threshold is reached. A model without a kinds head
    says "no sign of melanoma" instead: it cannot speak for the other cancers."""
    if p_melanoma >= info.threshold:
        return MELANOMA_SUSPECTED
    if p_other is None or info.other_threshold is None:
        return NO_MELANOMA_SIGN
    return OTHER_SUSPECTED if p_other >= info.other_threshold else NO_SIGN
