"""The figures a reader expects: training curves, confusion matrix, ROC, reliability, Grad-CAM grid."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402


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
