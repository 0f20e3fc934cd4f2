"""The figures a reader expects: training curves, confusion matrix, ROC, reliability, Grad-CAM grid."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

if TYPE_CHECKING:
    from torch import nn


def _save(fig, path: Path) -> None:
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def plot_history(history: list[dict], path: Path) -> None:
    epochs = [r["epoch"] for r in history]
    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    a.plot(epochs, [r["train_loss"] for r in history], "o-", label="train")
    a.plot(epochs, [r["val_loss"] for r in history], "o-", label="validation")
    a.set(title="Loss", xlabel="epoch", ylabel="cross-entropy")
    b.plot(epochs, [r["train_acc"] for r in history], "o-", label="train accuracy")
    b.plot(epochs, [r["val_acc"] for r in history], "o-", label="validation accuracy")
    b.plot(epochs, [r["val_auc"] for r in history], "s--", label="validation ROC AUC")
    b.set(title="Accuracy / AUC", xlabel="epoch")
    for ax in (a, b):
        ax.grid(alpha=0.3)
        ax.legend()
    _save(fig, path)


def plot_confusion(test: dict, clean: dict | None, class_names, path: Path) -> None:
    """The confusion matrix of the images, and of their clean subset where there is one."""
    from sklearn.metrics import ConfusionMatrixDisplay

    panels = (("test", test), ("clean test", clean)) if clean else (("images", test),)
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4.2), squeeze=False)
    for ax, (name, m) in zip(axes[0], panels):
        c = m["confusion_matrix"]
        cm = np.array([[c["tn"], c["fp"]], [c["fn"], c["tp"]]])
        ConfusionMatrixDisplay(cm, display_labels=list(class_names)).plot(ax=ax, cmap="Blues", colorbar=False, values_format="d")
        ax.set_title(f"{name} ({m['images']} images), threshold {m['threshold']:.2f}")
    _save(fig, path)


def plot_kinds_confusion(task: dict, path: Path) -> None:
    """The seven-kind task's confusion matrix (metrics.seven_kinds), each row as shares of its kind."""
    from sklearn.metrics import ConfusionMatrixDisplay

    cm = np.array(task["confusion_matrix"], float)
    rows = cm.sum(1, keepdims=True)
    fig, ax = plt.subplots(figsize=(6.5, 5.5))
    ConfusionMatrixDisplay(np.divide(cm, rows, out=np.zeros_like(cm), where=rows > 0), display_labels=task["kinds"]).plot(
        ax=ax, cmap="Blues", colorbar=False, values_format=".2f")
    ax.set_xlabel("top kind of the differential")
    ax.set_ylabel("diagnosis")
    ax.set_title(f"{task['images']} images, balanced accuracy {task['balanced_accuracy']:.3f}")
    _save(fig, path)


def plot_roc(y: np.ndarray, p: np.ndarray, clean: np.ndarray | None, path: Path) -> None:
    from sklearn.metrics import RocCurveDisplay

    fig, ax = plt.subplots(figsize=(5.5, 5))
    RocCurveDisplay.from_predictions(y, p, name="test" if clean is not None else "images", ax=ax)
    if clean is not None:
        RocCurveDisplay.from_predictions(y[clean], p[clean], name="clean test", ax=ax)
    ax.plot([0, 1], [0, 1], "k:", lw=1)
    ax.set_title("ROC curve")
    ax.grid(alpha=0.3)
    _save(fig, path)


def plot_reliability(y: np.ndarray, p: np.ndarray, path: Path, bins: int = 10) -> None:
    from sklearn.calibration import calibration_curve

    frac, mean = calibration_curve(y, p, n_bins=bins, strategy="uniform")
    fig, (a, b) = plt.subplots(2, 1, figsize=(5.5, 6.5), gridspec_kw={"height_ratios": [3, 1]}, sharex=True)
    a.plot([0, 1], [0, 1], "k:", label="perfectly calibrated")
    a.plot(mean, frac, "o-", label="model (test)")
    a.set(ylabel="observed fraction malignant", title="Reliability diagram")
    a.legend()
    a.grid(alpha=0.3)
    b.hist(p, bins=bins, range=(0, 1), color="gray")
    b.set(xlabel="predicted probability of malignancy", ylabel="images")
    _save(fig, path)


def plot_cam_grid(model, info, views: list[np.ndarray], y: np.ndarray, p: np.ndarray, path: Path, per_kind: int = 3) -> None:
    """The most confident true/false positives/negatives with their Grad-CAM overlays."""
    from .explain import infer, overlay
    from .predict import model_input

    pred = p >= info.threshold
    kinds = {
        "true positive": np.where(pred & (y == 1))[0][np.argsort(-p[pred & (y == 1)])],
        "false positive": np.where(pred & (y == 0))[0][np.argsort(-p[pred & (y == 0)])],
        "false negative": np.where(~pred & (y == 1))[0][np.argsort(p[~pred & (y == 1)])],
        "true negative": np.where(~pred & (y == 0))[0][np.argsort(p[~pred & (y == 0)])],
    }
    fig, axes = plt.subplots(len(kinds), per_kind, figsize=(3 * per_kind, 3.2 * len(kinds)), squeeze=False)
    for row, (kind, idx) in enumerate(kinds.items()):
        idx = idx[:per_kind]
        cams: np.ndarray | list | None = infer(model, model_input(model, np.stack([views[i] for i in idx]), info.preprocess)).cam if len(idx) else []
        for col in range(per_kind):
            ax = axes[row, col]
            ax.axis("off")
            if col < len(idx):
                assert cams is not None  # infer gives the maps by default
                ax.imshow(overlay(views[idx[col]], cams[col]))
                ax.set_title(f"{kind}\np(malignant)={p[idx[col]]:.2f}", fontsize=9)
    fig.suptitle("Grad-CAM: regions that raise the malignant score")
    _save(fig, path)


def plot_shifts(suite: dict, path: Path) -> None:
    """The shift suite (experiments.shift_suite): specificity, sensitivity and ROC AUC under each change,
    mild and strong, against the unchanged images (dotted line)."""
    rows = suite["shifts"]
    names = list(dict.fromkeys(r["shift"] for r in rows))
    fig, axes = plt.subplots(1, 3, figsize=(13, 0.32 * len(names) + 1.6), sharey=True)
    ypos = np.arange(len(names))[::-1]
    for ax, key, title in zip(axes, ("specificity", "sensitivity", "roc_auc"), ("specificity", "sensitivity", "ROC AUC")):
        for severity, marker, color in (("mild", "o", "tab:blue"), ("strong", "s", "tab:red")):
            values = [next((r[key] for r in rows if r["shift"] == n and r["severity"] == severity), None) for n in names]
            ax.scatter([np.nan if v is None else v for v in values], ypos, marker=marker, color=color, label=severity)
        if suite["unchanged"][key] is not None:
            ax.axvline(suite["unchanged"][key], color="black", ls=":", lw=1, label="unchanged")
        ax.set(title=title)
        ax.grid(alpha=0.3)
    axes[0].set_yticks(ypos, names)
    axes[-1].legend(fontsize=8, loc="lower left")
    fig.suptitle(f"Shift suite: {suite['images']} images at threshold {suite['threshold']:.2f}")
    _save(fig, path)


def plot_coverage(report: dict, path: Path) -> None:
    """The OOD coverage curve (metrics.ood_report): balanced accuracy, sensitivity and specificity on
    the images kept when the highest-scoring share is set aside; the model's own cut-off marked."""
    c = report["coverage"]
    x = [r["set_aside"] for r in c]
    fig, ax = plt.subplots(figsize=(6, 4))
    for key, style in (("balanced_accuracy", "-o"), ("sensitivity", "--s"), ("specificity", ":^")):
        ax.plot(x, [np.nan if r[key] is None else r[key] for r in c], style, label=key.replace("_", " "))
    if report["flagged"] is not None:
        ax.axvline(report["flagged"], color="black", lw=1, ls="-.", label=f"flagged at the cut-off ({report['flagged']:.1%})")
    ax.set(xlabel="share set aside (highest OOD score first)", ylabel="on the images kept",
           title=f"Coverage: {report['images']} images")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_architecture(model, info, path: Path) -> None:
    """A block diagram drawn from the network itself: each stage with its output shape."""
    import torch

    stages = _stages(model, info.arch)
    shapes: list[tuple] = [()] * len(stages)
    hooks = [m.register_forward_hook(lambda _m, _i, o, k=k: shapes.__setitem__(k, tuple(o.shape[1:]))) for k, (_, m) in enumerate(stages)]
    try:
        with torch.no_grad():
            model.eval()(torch.zeros(1, 3, info.preprocess.image_size, info.preprocess.image_size))
    finally:
        for h in hooks:
            h.remove()
    # consecutive identical blocks (same name and output shape) are drawn once, as "name xN"
    boxes: list[list] = [["input", (3, info.preprocess.image_size, info.preprocess.image_size), 1]]
    for (name, _), shape in zip(stages, shapes):
        if boxes[-1][0] == name and boxes[-1][1] == shape:
            boxes[-1][2] += 1
        else:
            boxes.append([name, shape, 1])
    boxes = [[name + (f" x{n}" if n > 1 else ""), shape] for name, shape, n in boxes]
    n_params = sum(p.numel() for p in model.parameters())
    fig, ax = plt.subplots(figsize=(max(8, 1.25 * len(boxes)), 3.2))
    ax.axis("off")
    for i, (name, shape) in enumerate(boxes):
        color = "#cfe2f3" if i == 0 else ("#f4cccc" if i == len(boxes) - 1 else "#d9ead3")
        ax.add_patch(plt.Rectangle((i * 1.3, 0), 1.1, 1.6, fc=color, ec="black"))
        ax.text(i * 1.3 + 0.55, 1.05, name.replace(" ", "\n", 1), ha="center", va="center", fontsize=7.5)
        ax.text(i * 1.3 + 0.55, 0.3, "x".join(map(str, shape)), ha="center", va="center", fontsize=7)
        if i:
            ax.annotate("", (i * 1.3, 0.8), (i * 1.3 - 0.2, 0.8), arrowprops=dict(arrowstyle="->"))
    ax.set_xlim(-0.1, len(boxes) * 1.3)
    ax.set_ylim(-0.3, 2.0)
    members = f" x{len(info.members)} members side by side (one drawn), the mean of their logits" if info.members else ""
    ax.set_title(f"{info.arch}{members}: {n_params / 1e6:.2f} M parameters; Grad-CAM on the last feature stage")
    _save(fig, path)


def _stages(model, arch: str) -> list[tuple[str, nn.Module]]:
    if arch.startswith("efficientnet_lite"):
        features = model.features.members[0] if hasattr(model.features, "members") else model.features  # an ensemble: one member drawn
        net = features.net
        out = [("stem conv", net._bn0)]
        out += [(f"MBConv{b._block_args.expand_ratio} k{b._block_args.kernel_size}", b) for b in net._blocks]
        out += [("head conv 1x1", net._bn1)]
    else:
        out = [(f"conv block {i // 4 + 1}", m) for i, m in enumerate(model.features) if i % 4 == 3]
    head = [m for m in model.head if m.__class__.__name__ in ("AdaptiveAvgPool2d", "Linear")]
    out += [("global avg pool" if h.__class__.__name__ == "AdaptiveAvgPool2d" else f"dense {h.out_features}", h) for h in head]
    return out
