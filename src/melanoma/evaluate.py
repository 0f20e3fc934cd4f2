"""`melanoma evaluate`: a model on a labelled set (the Kaggle test split with its clean subset: test
images with no near-duplicate in train; a Benign/Malignant folder; a CSV), written as metrics.json,
predictions.csv, the plots and the Markdown tables. The figures come from metrics.py, the model's
outputs from scoring.py, the experiments from experiments.py and the text from reports.py.
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass
from pathlib import Path
from typing import cast

import numpy as np

from .audit import copies_in_train, read_thumbnails
from .data import labelled_set, scan
from .errors import UsageError
from .experiments import faithfulness, shift_suite
from .kinds import code_of
from .loader import load_model
from .metrics import attention_summary, binary_metrics, kinds_report, ood_report, seven_kinds, verdict_report
from .modelinfo import file_sha256
from .reports import format_table, kinds_table, ood_table, seven_kinds_table, shift_table, verdict_table
from .scoring import folder_ood_scores, score_images


@dataclass
class Scored:
    """A labelled set as the model scored it: the readable images, their labels, class names (Other
    too), probabilities, views, map placements, OOD scores, predictions, and which are copies of
    training images (the Kaggle layout's clean subset leaves them out)."""

    samples: list
    y: np.ndarray
    classes: list[str]
    p: np.ndarray
    views: list[np.ndarray]
    placements: np.ndarray
    ood: np.ndarray
    preds: list
    leaked: np.ndarray
    has_clean: bool
    notes: list[str]

    @property
    def clean(self) -> np.ndarray:
        return ~self.leaked


def run(model_path: str | None, data_dir: Path | None, out: Path, bootstrap: int = 1000, labels: str | None = None,
        shifts: bool = False, ood_against: list[str] | None = None, faithfulness_images: int = 0, by_kind: str | None = None) -> dict:
    """Metrics and plots for a labelled set (`data.labelled_set`): the Kaggle test split with its
    clean subset, a Benign/Malignant folder or a CSV; with `shifts`, the shift suite on the clean
    subset (the whole set where there is no clean subset). The OOD report (`ood_report`) is on the
    clean subset too, compared with each folder of `ood_against`; the deletion test of the maps
    (`faithfulness`) on `faithfulness_images` of the clean subset; with `by_kind` (a column of the
    labels CSV), the figures per kind (`kinds_report`) and, for a model with a kinds head, the seven-kind
    task. Three steps: score the set, measure, write."""
    evalset = labelled_set(data_dir, labels, by_kind)
    out.mkdir(parents=True, exist_ok=True)
    model, info = load_model(model_path)
    scored = score(model, info, evalset, model_path)
    metrics = measure(model, info, evalset, scored, model_path, bootstrap, shifts, ood_against, faithfulness_images, by_kind)
    write(out, model, info, scored, metrics)
    print(format_table(metrics))
    return metrics


def score(model, info, evalset, model_path: str | None) -> Scored:
    """The model over the set's images, and which of them are copies of training images."""
    thumbs: list[np.ndarray] = []
    samples, p, views, placements, ood, preds = score_images(model, info, evalset.samples, thumbs=thumbs if evalset.train_dir else None)
    if not samples:
        raise UsageError(f"{evalset.source}: none of the images could be read")
    y = np.array([s.label for s in samples])
    notes = [] if model.maps else [f"{model_path}: this model file carries no Grad-CAM map: no map placement, no Grad-CAM examples"]
    if evalset.others:
        notes.append(f"{len(evalset.others)} images labelled Other (skin cancers that are not melanoma) count as not melanoma "
                     "in the melanoma figures; `verdicts` says how many were sent to a doctor")
    if len(set(y)) < 2:
        notes.append(f"only {info.class_names[int(y[0])]} images: no ROC AUC, and only "
                     + ("specificity" if y[0] == 0 else "sensitivity") + " is measured")
    leaked = np.zeros(len(y), bool)
    if evalset.train_dir is not None:
        _, train_thumbs, _ = read_thumbnails(scan(evalset.train_dir.parent, evalset.train_dir.name))
        if len(train_thumbs):
            leaked, _, _ = copies_in_train(train_thumbs, np.stack(thumbs))
    classes = ["Other" if s.rel in evalset.others else info.class_names[s.label] for s in samples]
    return Scored(samples, y, classes, p, views, placements, ood, preds, leaked, evalset.train_dir is not None, notes)


def measure(model, info, evalset, sc: Scored, model_path: str | None, bootstrap: int, shifts: bool, ood_against: list[str] | None,
            faithfulness_images: int, by_kind: str | None) -> dict:
    """Every figure of metrics.json, from the scored set (and, for the shift suite, the deletion test
    and the OOD comparison folders, further passes of the model)."""
    y, p, clean, has_clean = sc.y, sc.p, sc.clean, sc.has_clean
    metrics = {
        "model": str(model_path or "bundled"),
        "model_sha256": file_sha256(model_path),  # the page shows these figures only beside this exact file
        "arch": info.arch,
        "image_size": info.preprocess.image_size,
        "temperature": info.temperature,
        "data": str(evalset.source),
        "layout": evalset.layout,
        "notes": sc.notes,
        "test": binary_metrics(y, p, info.threshold, bootstrap),
        "clean_test": binary_metrics(y[clean], p[clean], info.threshold, bootstrap) if has_clean else None,
        "near_duplicates_excluded": int(sc.leaked.sum()) if has_clean else None,
        "attention_clean_test" if has_clean else "attention": attention_summary(sc.placements[clean]) if model.maps else None,
        "validation": info.validation,
        "ood": ood_report(y[clean], p[clean], sc.ood[clean], info,
                          {Path(f).name: folder_ood_scores(model, info, f) for f in ood_against or []}),
        "verdicts": verdict_report(sc.classes, [s.kind for s in sc.samples], [q.verdict for q in sc.preds]),
    }
    if by_kind:
        metrics["kinds"] = kinds_report(y, p, [s.kind for s in sc.samples], info.threshold, info.class_names, bootstrap, sc.classes)
        truth = [code_of(s.kind) for s in sc.samples]
        named = [i for i, t in enumerate(truth) if t]
        if info.kinds and len({truth[i] for i in named}) >= 2:  # the seven-kind task, where the column names kinds
            metrics["seven_kinds"] = seven_kinds([cast(str, truth[i]) for i in named], [cast(str, sc.preds[i].top_kind) for i in named],
                                                 info.kinds, bootstrap)
    clean_views = [v for v, c in zip(sc.views, clean) if c]
    if faithfulness_images:
        metrics["faithfulness"] = faithfulness(model, info, clean_views, faithfulness_images)
        if metrics["faithfulness"] is None:
            sc.notes.append("--faithfulness: not measured, this model's maps do not come from a head of pooling and one linear "
                            "layer in the same pass (seed_cnn, or an ONNX file)")
    if shifts:
        metrics["shifts"] = shift_suite(model, info, clean_views, y[clean], p[clean], sc.ood[clean])
    return metrics


def write(out: Path, model, info, sc: Scored, metrics: dict) -> None:
    """metrics.json, predictions.csv, the plots and the Markdown tables."""
    from . import plots

    (out / "metrics.json").write_text(json.dumps(metrics, indent=1))
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "p_malignant", "ood_score"] + (["near_duplicate_in_train"] if sc.has_clean else [])
                   + ["verdict", "p_other_cancer", "top_kind"])
        w.writerows([s.rel, c, f"{pi:.6f}", "" if np.isnan(oi) else f"{oi:.4f}"] + ([int(d)] if sc.has_clean else [])
                    + [q.verdict, "" if q.p_other is None else f"{q.p_other:.6f}", q.top_kind or ""]
                    for s, c, pi, oi, d, q in zip(sc.samples, sc.classes, sc.p, sc.ood, sc.leaked, sc.preds))
    if info.history:
        plots.plot_history(info.history, out / "training_curves.png")
    plots.plot_confusion(metrics["test"], metrics["clean_test"], info.class_names, out / "confusion_matrix.png")
    if len(set(sc.y)) == 2:
        plots.plot_roc(sc.y, sc.p, sc.clean if sc.has_clean else None, out / "roc_curve.png")
    plots.plot_reliability(sc.y, sc.p, out / "reliability.png")
    if model.maps:
        plots.plot_cam_grid(model, info, sc.views, sc.y, sc.p, out / "gradcam_examples.png")
    if model.engine == "torch":  # drawn from the torch network's modules
        plots.plot_architecture(model, info, out / "architecture.png")
    if metrics["ood"]:
        plots.plot_coverage(metrics["ood"], out / "ood_coverage.png")
        (out / "ood.md").write_text(ood_table(metrics))
    (out / "verdicts.md").write_text(verdict_table(metrics["verdicts"]) + "\n")
    if "kinds" in metrics:
        (out / "kinds.md").write_text(kinds_table(metrics["kinds"]) + "\n")
    if "seven_kinds" in metrics:
        plots.plot_kinds_confusion(metrics["seven_kinds"], out / "kinds_confusion.png")
        (out / "seven_kinds.md").write_text(seven_kinds_table(metrics["seven_kinds"]) + "\n")
    if "shifts" in metrics:
        plots.plot_shifts(metrics["shifts"], out / "shifts.png")
        (out / "shifts.md").write_text(shift_table(metrics["shifts"]))
