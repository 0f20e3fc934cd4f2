"""`melanoma fit-kinds`: give a model file a kinds head (kinds.py), fitted on the pooled features of its
own training images whose source names a diagnosis, with the other-cancer threshold chosen on its own
validation images for a stated sensitivity; or, for a head trained end to end (`train --diagnosis`, which does this
itself since 2026-12-07), `--keep-head`: the head's bias corrected for the prior its weighted training loss taught it
(`correct_for_prior`) and the threshold chosen again.

The network, its melanoma head, temperature, threshold and OOD score stay as they are, so every melanoma
figure of the model is unchanged: the head reads what the network already sees (a linear probe). The
fit is scikit-learn's multinomial logistic regression on standardised features, the classes weighted
by the inverse of their counts (nevi outnumber dermatofibromas 50 to 1); the standardisation is folded
into the head's weights, so the model file holds one linear layer.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from . import model as models
from .calibration import calibrated_probability, threshold_for_sensitivity
from .errors import UsageError
from .kinds import HARMLESS, KINDS, MELANOMA, OTHER_CANCERS, code_of, differential, other_cancer
from .model import linear_head
from .modelinfo import ModelInfo
from .ood_fit import pooled_features
from .sampling import training_weights
from .scoring import inferences

REGULARISATION = 0.01  # LogisticRegression's C on standardised features; see fit's docstring
CHUNK = 256  # images decoded and scored at a time (memory)


def labelled(samples: list, idx: np.ndarray) -> tuple[np.ndarray, list[str]]:
    """The images among `idx` whose diagnosis is one of the seven kinds, and their codes."""
    codes = [code_of(samples[i].kind or "") for i in idx]
    keep = [j for j, c in enumerate(codes) if c]
    return idx[keep], [codes[j] for j in keep]  # type: ignore[misc]  # the kept codes are not None


def pooled(model: models.Classifier, split, idx: np.ndarray, pre) -> np.ndarray:
    """The pooled last-stage features of the images `idx` (ood_fit.pooled_features, decoded CHUNK at a
    time for memory): what the head, and a kinds head, reads."""
    return np.concatenate([pooled_features(model, split.views_of(idx[start:start + CHUNK]), pre).numpy()
                           for start in range(0, len(idx), CHUNK)])


def fit(model: models.Classifier, info: ModelInfo, data_dir: Path | None, target_sensitivity: float) -> ModelInfo:
    """Attach a kinds head to `model` (fitted on its training split's images that name a kind) and
    return its ModelInfo with the kinds, the other-cancer threshold (the highest that keeps
    `target_sensitivity` of the validation split's other skin cancers) and the head's validation figures.
    REGULARISATION was chosen on the bundled model's (other_a_t94's) validation split, by the balanced
    accuracy of the top kind on its 1,028 images that name a kind, with a scratch probe (nevi capped at
    1,500 in training; not kept): C 0.001, 0.003, 0.01, 0.1, 1 gave 0.552, 0.571, 0.575, 0.547, 0.504."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    from .split import model_split

    if linear_head(model) is None:
        raise UsageError("a kinds head needs a network whose head is pooling and one linear layer (EfficientNet-Lite)")
    split = model_split(info, data_dir, keep_views=False)
    tr, tr_codes = labelled(split.samples, split.tr)
    va, va_codes = labelled(split.samples, split.va)
    kinds = sorted(set(tr_codes))
    if len(kinds) < 2 or not set(OTHER_CANCERS) & set(kinds) or not set(OTHER_CANCERS) & set(va_codes):
        raise UsageError("the model's training sources name too few kinds: a kinds head needs diagnoses (a source's labels.csv) "
                         "including basal cell carcinoma or actinic keratosis in both its training and validation images")
    x_tr = pooled(model, split, tr, info.preprocess)
    scaler = StandardScaler().fit(x_tr)
    lr = LogisticRegression(C=REGULARISATION, class_weight="balanced", max_iter=3000).fit(scaler.transform(x_tr), tr_codes)
    weight = lr.coef_ / scaler.scale_
    head = nn.Linear(x_tr.shape[1], len(kinds))
    order = [list(lr.classes_).index(k) for k in kinds]
    with torch.no_grad():
        head.weight.copy_(torch.from_numpy(weight[order]).float())
        head.bias.copy_(torch.from_numpy((lr.intercept_ - weight @ scaler.mean_)[order]).float())
    model.kinds, model.kind_codes = head, kinds
    return kinds_operating_point(model, replace(info, kinds_prior={}), split, target_sensitivity)  # balanced by its class weights


def training_prior(split, kinds: list[str], once: bool, unnamed: str = "ignore") -> np.ndarray:
    """Each kind's share of a kinds head's training loss in an epoch: the loss weights of the split's training
    images of that kind (sampling.training_weights: their source's and diagnosis's weight, the two classes
    balanced; `once`: the run's --duplicates once) times the share of epochs that draw them, over `kinds`. With
    `unnamed` "label" (train --unnamed-kinds label) the images whose source names no kind count too: a Malignant
    one as melanoma, a Benign one shared among the harmless kinds as the named harmless images are (the head learns
    how to share it; this is the share it would learn from the named ones)."""
    samples = split.samples_of(split.tr)
    labels = split.labels[split.tr]
    weights, presence, _ = training_weights(samples, labels, split.groups[split.tr], split.sources, once)
    mass = weights.numpy().astype(np.float64) * presence
    codes = np.array([(code_of(s.kind) if s.kind else None) or "" for s in samples])
    share = np.array([mass[codes == k].sum() for k in kinds])
    if unnamed == "label":
        none = codes == ""
        harmless = np.array([k in HARMLESS for k in kinds])
        share = share + np.where(np.array(kinds) == MELANOMA, mass[none & (labels == 1)].sum(), 0.0)
        spread = share * harmless if (share * harmless).sum() > 0 else harmless.astype(np.float64)
        share = share + mass[none & (labels == 0)].sum() * spread / spread.sum()
    return share / share.sum()


def correct_for_prior(model: models.Classifier, info: ModelInfo, prior: np.ndarray) -> ModelInfo:
    """A kinds head trained end to end learns the kinds' shares of its weighted loss (`training_prior`) as
    their prior: in the repository's sources file HAM10000's benign keratoses, weighted three times, outweigh
    its basal cell carcinomas about seven to one (36% of that loss against 5%), and the head leans that way on
    every spot (docs/kinds.md). Its bias minus log(prior) (logit adjustment: Menon et al., "Long-tail learning
    via logit adjustment", ICLR 2021) makes its softmax the one it would have with every kind equally common,
    the prior that balanced accuracy (ISIC 2018's metric) scores. Recorded as `ModelInfo.kinds_prior`."""
    assert model.kinds is not None and not info.kinds_prior  # corrected once
    with torch.no_grad():
        model.kinds.bias.sub_(torch.from_numpy(np.log(prior)).float())
    return replace(info, kinds_prior={k: round(float(p), 6) for k, p in zip(model.kind_codes, prior)})


def keep_head(model: models.Classifier, info: ModelInfo, data_dir: Path | None, target_sensitivity: float) -> ModelInfo:
    """`fit-kinds --keep-head`: a head trained end to end, corrected for its training prior (`correct_for_prior`),
    with the other-cancer threshold chosen again on the model's own validation images."""
    from .split import model_split

    if model.kinds is None or not info.train_config.get("diagnosis"):
        raise UsageError("--keep-head needs a model whose kinds head was trained end to end (train --diagnosis)")
    if info.kinds_prior:
        raise UsageError("its kinds head is already corrected for its training prior (kinds_prior in the model file)")
    split = model_split(info, data_dir, keep_views=False)
    prior = training_prior(split, model.kind_codes, info.train_config.get("duplicates") == "once", info.train_config.get("unnamed_kinds", "ignore"))
    return kinds_operating_point(model, correct_for_prior(model, info, prior), split, target_sensitivity)


def kinds_operating_point(model: models.Classifier, info: ModelInfo, split, target_sensitivity: float) -> ModelInfo:
    """`info` with the kinds of `model`'s kinds head, the other-cancer threshold (the highest that keeps
    `target_sensitivity` of the validation images of another skin cancer at or above it) and the head's
    validation figures (`kinds_record`), from the split's validation images that name a kind; without
    such images of another skin cancer, no threshold (the verdict then speaks for melanoma alone)."""
    assert model.kinds is not None  # a model with a kinds head (fit, or train --diagnosis)
    kinds = model.kind_codes
    va, va_codes = labelled(split.samples, split.va)
    if not va_codes:
        return replace(info, kinds=kinds, other_threshold=None, other_target_sensitivity=None, kinds_validation={})
    outs = list(inferences(model, split.views_of(va), info.preprocess))  # on the CPU
    p_mel = calibrated_probability(np.concatenate([np.asarray(o.logits, np.float32) for o in outs]), info.temperature)
    diff = differential(np.concatenate([o.kinds for o in outs if o.kinds is not None]), kinds)
    p_other = other_cancer(diff, kinds)
    is_other = np.array([c in OTHER_CANCERS for c in va_codes])
    threshold = threshold_for_sensitivity(p_other, is_other.astype(int), target_sensitivity) if is_other.any() else None
    other_called = p_other >= threshold if threshold is not None else np.zeros(len(p_other), bool)
    record = kinds_record(va_codes, kinds, diff, p_mel >= info.threshold, other_called)
    return replace(info, kinds=kinds, other_threshold=threshold, other_target_sensitivity=target_sensitivity if threshold is not None else None,
                   kinds_validation=record)


def kinds_record(codes: list[str], kinds: list[str], diff: np.ndarray, melanoma_called: np.ndarray, other_called: np.ndarray) -> dict:
    """What the kinds head did on labelled images: balanced accuracy and recall per kind of the top kind,
    the share of each kind sent to a doctor (either cancer verdict) and named another skin cancer."""
    from sklearn.metrics import balanced_accuracy_score

    top = [kinds[i] for i in diff.argmax(1)]
    codes_a = np.array(codes)
    named = other_called & ~melanoma_called
    sent = melanoma_called | other_called
    per_kind = {k: {"images": int((codes_a == k).sum()), "recall": float(np.mean([t == k for t, c in zip(top, codes) if c == k])),
                    "sent_to_doctor": float(sent[codes_a == k].mean()), "named_other_cancer": float(named[codes_a == k].mean())}
                for k in KINDS if (codes_a == k).any()}
    return {"images": len(codes), "balanced_accuracy": float(balanced_accuracy_score(codes, top)), "by_kind": per_kind}
