"""Training: group-aware validation split, fine-tuning with early stopping, then calibration.

Reads top to bottom: `main(config)` loads the data, splits it, trains epoch by epoch
(`train_one_epoch`, `predict_logits`) keeping the best weights, then fits a temperature and
picks the decision threshold on validation, and saves one model file with everything in it.
"""

from __future__ import annotations

import csv
import json
import random
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from . import model as models
from .audit import near_duplicate_groups, thumbnail
from .calibration import calibrated_probability, fit_temperature, threshold_for_sensitivity
from .data import CLASS_NAMES, fingerprint, read_samples, scan, split_train_val
from .preprocess import Preprocess, model_view, normalize, train_augment


@dataclass
class TrainConfig:
    arch: str = "efficientnet_lite0"  # or "seed_cnn", the original project's network
    epochs: int = 30  # upper bound; early stopping usually ends sooner
    patience: int = 4  # epochs without a better validation AUC before stopping
    img_size: int | None = None  # default: the architecture's own (224 / 100)
    batch_size: int = 32
    lr: float = 1e-3  # peak of the one-cycle schedule
    weight_decay: float = 1e-2
    freeze_blocks: int = 4  # efficientnet_lite0: keep the stem and first N blocks at ImageNet weights (2-3x faster on CPU)
    val_fraction: float = 0.1
    target_sensitivity: float = 0.95  # the threshold is picked on validation to reach this
    seed: int = 0
    limit: int | None = None  # at most this many training images per class (quick runs, tests)
    workers: int = 0  # DataLoader worker processes


class ArrayDataset(Dataset):
    def __init__(self, arrays: list[np.ndarray], labels: np.ndarray, augment=None):
        self.arrays, self.labels, self.augment = arrays, labels, augment

    def __len__(self) -> int:
        return len(self.arrays)

    def __getitem__(self, i: int):
        img = self.arrays[i]
        if self.augment is not None:
            img = self.augment(image=img)["image"]
        return img, int(self.labels[i])


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def load_split(samples, pre: Preprocess):
    """Decode once: the model's square view for training, a thumbnail for near-duplicate groups."""
    from tqdm import tqdm

    views, thumbs, labels, kept, bad = [], [], [], [], []
    for s, im in read_samples(tqdm(samples, desc="reading images", unit="img", file=sys.stderr, mininterval=2), bad):
        views.append(model_view(im, pre))
        thumbs.append(thumbnail(im))
        labels.append(s.label)
        kept.append(s)
    return kept, views, np.stack(thumbs), np.array(labels), [{"file": e.name, "reason": e.reason} for e in bad]


def subsample(samples, limit: int | None, seed: int):
    if limit is None:
        return samples
    rng = random.Random(seed)
    out = []
    for label in range(len(CLASS_NAMES)):
        of_class = [s for s in samples if s.label == label]
        out += sorted(rng.sample(of_class, min(limit, len(of_class))), key=lambda s: s.rel)
    return out


def freeze_early_layers(model: nn.Module, arch: str, n_blocks: int) -> list[nn.Module]:
    """Stop gradients into the stem and first n blocks; they also keep their BatchNorm statistics."""
    if arch != "efficientnet_lite0" or n_blocks <= 0:
        return []
    net = model.features.net
    frozen = [net._conv_stem, net._bn0, *net._blocks[:n_blocks]]
    for m in frozen:
        m.requires_grad_(False)
    return frozen


def train_one_epoch(model, loader, optimizer, scheduler, loss_fn, pre, frozen, epoch, epochs) -> tuple[float, float]:
    from tqdm import tqdm

    model.train()
    for m in frozen:
        m.eval()
    total, correct, loss_sum = 0, 0, 0.0
    bar = tqdm(loader, desc=f"epoch {epoch}/{epochs}", unit="batch", file=sys.stderr, mininterval=2)
    for images, labels in bar:
        x = normalize(images, pre)
        logits = model(x)
        loss = loss_fn(logits, labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()
        n = len(labels)
        total += n
        loss_sum += loss.item() * n
        correct += (logits.argmax(1) == labels).sum().item()
        bar.set_postfix(loss=f"{loss_sum / total:.4f}", acc=f"{correct / total:.4f}")
    return loss_sum / total, correct / total


@torch.no_grad()
def predict_logits(model, arrays: list[np.ndarray], pre: Preprocess, batch_size: int = 64) -> np.ndarray:
    model.eval()
    out = [model(normalize(np.stack(arrays[i : i + batch_size]), pre)) for i in range(0, len(arrays), batch_size)]
    return torch.cat(out).numpy() if out else np.zeros((0, 2), np.float32)


def main(config: TrainConfig, data_dir: Path, out_dir: Path) -> Path:
    from sklearn.metrics import roc_auc_score

    seed_everything(config.seed)
    out_dir.mkdir(parents=True, exist_ok=True)
    model, pre = models.build(config.arch, pretrained=config.arch == "efficientnet_lite0", image_size=config.img_size)
    model = model.to(memory_format=torch.channels_last)
    frozen = freeze_early_layers(model, config.arch, config.freeze_blocks)

    samples = subsample(scan(data_dir, "train"), config.limit, config.seed)
    if not samples:
        raise SystemExit(f"error: {data_dir / 'train'}: no training images found")
    samples, views, thumbs, labels, unreadable = load_split(samples, pre)
    if not samples:
        raise SystemExit(f"error: {data_dir / 'train'}: none of the training images could be read")
    groups = near_duplicate_groups(thumbs)
    tr, va = split_train_val(labels, groups, config.val_fraction, config.seed)
    print(
        f"{len(samples)} training images ({len(unreadable)} unreadable skipped), {len(samples) - len(set(groups))} "
        f"near-duplicates grouped; train {len(tr)}, validation {len(va)}",
        file=sys.stderr,
    )

    train_ds = ArrayDataset([views[i] for i in tr], labels[tr], train_augment(pre.image_size, config.seed))
    val_views, val_labels = [views[i] for i in va], labels[va]
    gen = torch.Generator().manual_seed(config.seed)
    loader = DataLoader(
        train_ds, batch_size=config.batch_size, shuffle=True, drop_last=len(tr) > config.batch_size, generator=gen,
        num_workers=config.workers, worker_init_fn=lambda w: np.random.seed(config.seed + w),
    )
    counts = np.bincount(labels[tr], minlength=2)
    class_weight = torch.tensor(len(tr) / (2 * np.maximum(counts, 1)), dtype=torch.float32)  # balanced classes
    loss_fn = nn.CrossEntropyLoss(weight=class_weight)
    params = [p for p in model.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=config.weight_decay)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=config.lr, total_steps=config.epochs * len(loader), pct_start=0.15)

    history: list[dict] = []
    best_auc, best_loss, best_state, stale = -1.0, float("inf"), None, 0
    for epoch in range(1, config.epochs + 1):
        t0 = time.time()
        train_loss, train_acc = train_one_epoch(model, loader, optimizer, scheduler, loss_fn, pre, frozen, epoch, config.epochs)
        logits = predict_logits(model, val_views, pre)
        val_loss = float(nn.functional.cross_entropy(torch.from_numpy(logits), torch.from_numpy(val_labels)))
        val_acc = float((logits.argmax(1) == val_labels).mean())
        val_auc = float(roc_auc_score(val_labels, logits[:, 1] - logits[:, 0]))
        row = dict(epoch=epoch, train_loss=train_loss, train_acc=train_acc, val_loss=val_loss, val_acc=val_acc, val_auc=val_auc, seconds=time.time() - t0)
        history.append(row)
        print(" ".join(f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()), file=sys.stderr)
        write_history(history, out_dir)
        if val_auc > best_auc or (val_auc == best_auc and val_loss < best_loss):
            best_auc, best_loss, stale = val_auc, val_loss, 0
            best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        else:
            stale += 1
            if stale >= config.patience:
                print(f"early stop: no better validation AUC for {config.patience} epochs", file=sys.stderr)
                break

    model.load_state_dict(best_state)
    logits = predict_logits(model, val_views, pre)
    temperature = fit_temperature(logits, val_labels)
    p_val = calibrated_probability(logits, temperature)
    threshold = threshold_for_sensitivity(p_val, val_labels, config.target_sensitivity)
    pred = p_val >= threshold
    pos, neg = val_labels == 1, val_labels == 0
    validation = {
        "images": int(len(va)),
        "auc": float(roc_auc_score(val_labels, p_val)),
        "sensitivity": float(pred[pos].mean()) if pos.any() else None,
        "specificity": float((~pred[neg]).mean()) if neg.any() else None,
        "best_epoch": int(max(history, key=lambda r: (r["val_auc"], -r["val_loss"]))["epoch"]),
        "epochs_run": len(history),
    }
    info = models.ModelInfo(
        arch=config.arch, preprocess=pre, class_names=CLASS_NAMES, threshold=float(threshold), temperature=float(temperature),
        target_sensitivity=config.target_sensitivity, train_config=asdict(config),
        data_fingerprint=fingerprint(samples), validation=validation, history=history, versions=models.versions(),
    )
    path = out_dir / "model.safetensors"
    models.save(path, model, info)
    (out_dir / "unreadable.json").write_text(json.dumps(unreadable, indent=1))
    (out_dir / "split.json").write_text(json.dumps({"train": [samples[i].rel for i in tr], "validation": [samples[i].rel for i in va]}))
    from .plots import plot_history

    plot_history(history, out_dir / "training_curves.png")
    print(f"saved {path}: temperature {temperature:.3f}, threshold {threshold:.3f}, validation {json.dumps(validation)}", file=sys.stderr)
    return path


def write_history(history: list[dict], out_dir: Path) -> None:
    (out_dir / "history.json").write_text(json.dumps(history, indent=1))
    with open(out_dir / "history.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
