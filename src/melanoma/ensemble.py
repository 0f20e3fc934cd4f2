"""`melanoma ensemble`: several trained models as one model file, the mean of their logits
(model.Ensemble), calibrated as a whole on the validation split the members share.

Members must share architecture, input, preprocessing, training data and validation split (train
them with one `--split-seed` and different `--seed`s): the ensemble's temperature, threshold and
out-of-distribution cut-off are fitted on images none of them trained on, as a single model's are.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from . import model as models
from .errors import UsageError
from .modelinfo import RUN_RECORD, ModelInfo

MEMBER_VALIDATION = ("images", "auc", "sensitivity", "specificity", *RUN_RECORD)  # what each member's record keeps of its own validation


def member_name(path: str) -> str:
    """A member's name: its run folder's (runs/seed1/model.safetensors -> seed1), else the file's stem."""
    p = Path(path)
    return p.parent.name if p.name == "model.safetensors" and p.parent.name else p.stem


def member_record(name: str, info: ModelInfo) -> dict:
    """What an ensemble file keeps of a member besides its weights: its recipe, its own validation and
    operating point (the weights' checksum is added when the file is written, model.save)."""
    return {"name": name, "arch": info.arch, "preprocess": info.preprocess.to_dict(), "train_config": info.train_config,
            "data_fingerprint": info.data_fingerprint, "threshold": info.threshold, "temperature": info.temperature,
            "other_target_sensitivity": info.other_target_sensitivity,
            "validation": {k: v for k, v in info.validation.items() if k in MEMBER_VALIDATION}}


def combine(paths: list[str], half: bool = False) -> tuple[models.Ensemble, ModelInfo]:
    """The members' files as one uncalibrated Ensemble (temperature 1, threshold 0.5, no OOD score:
    `calibrate_whole` fits them) and its record; with `half`, the members' weights are rounded to
    float16 first, as the file keeps them, so the calibration sees the weights the file holds."""
    if len(paths) < 2:
        raise UsageError("an ensemble needs at least two member model files")
    loaded = [models.load(p) for p in paths]
    first = loaded[0][1]
    for path, (_, info) in zip(paths, loaded):
        if info.members:
            raise UsageError(f"{path}: already an ensemble; give its members' own files")
        if info.arch != first.arch or info.preprocess != first.preprocess:
            raise UsageError(f"{path}: a {info.arch} model at {info.preprocess.image_size} px ({info.preprocess.framing} framing); "
                             f"{paths[0]} is {first.arch} at {first.preprocess.image_size} px ({first.preprocess.framing}): "
                             "members must share architecture, input size and preprocessing")
        if bool(info.kinds_prior) != bool(first.kinds_prior):
            said = lambda i: "corrected" if i.kinds_prior else "not corrected"  # noqa: E731
            raise UsageError(f"{path}: its kinds head is {said(info)} for its training prior, {paths[0]}'s is {said(first)}: "
                             "correct both (fit-kinds --keep-head) before averaging them")
        if info.data_fingerprint != first.data_fingerprint or info.validation.get("split_sha256") != first.validation.get("split_sha256"):
            raise UsageError(f"{path}: trained on other data or another validation split than {paths[0]}; members must share one "
                             "split (train them with the same --split-seed) so that the ensemble is calibrated on images none trained on")
    networks = [m for m, _ in loaded]
    if half:
        for m in networks:
            m.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in m.state_dict().items()})
    ensemble = models.Ensemble(networks, half_storage=half).eval()
    info = replace(first, members=[member_record(member_name(p), i) for p, (_, i) in zip(paths, loaded)], threshold=0.5,
                   temperature=1.0, history=[], versions=models.versions(), ood_cutoff=None, ood_block=None,
                   kinds=list(ensemble.kind_codes), other_threshold=None, other_target_sensitivity=None, kinds_validation={},
                   validation={k: v for k, v in first.validation.items() if k == "split_sha256"})
    return ensemble, info


def calibrate_whole(model: models.Ensemble, info: ModelInfo, data_dir: Path | None, target_sensitivity: float) -> ModelInfo:
    """Fit the ensemble's OOD score on the members' shared training images and its temperature,
    threshold (for `target_sensitivity`) and cut-off on their shared validation images."""
    from . import ood_fit
    from .calibration import operating_point
    from .scoring import predict_logits, validation_record
    from .split import model_split

    split = model_split(info, data_dir, keep_views=False)
    val_views = split.views_of(split.va)
    cutoff = ood_fit.attach(model, info.preprocess, split.views_of(split.tr), split.labels[split.tr], val_views)
    logits = predict_logits(model, val_views, info.preprocess)
    temperature, p, threshold = operating_point(logits, split.labels[split.va], target_sensitivity)
    assert threshold is not None and model.ood is not None  # a target was given; ood_fit.attach set model.ood
    info = replace(info, temperature=float(temperature), threshold=float(threshold), target_sensitivity=target_sensitivity,
                   ood_cutoff=cutoff, ood_block=model.ood.block,
                   validation={**validation_record(split, p, threshold), "split_sha256": split.digest})
    if model.kinds is not None:  # the members' kinds heads, averaged: its other-cancer threshold, chosen as the members' was
        from .kinds_fit import kinds_operating_point

        info = kinds_operating_point(model, info, split, info.members[0].get("other_target_sensitivity") or 0.9)
    return info

