"""Training checkpoints: everything needed to continue a run exactly where it stopped.

One file per run, RUN_DIR/checkpoint.safetensors, rewritten atomically after every epoch and on
Ctrl-C: the tensors (current weights, best weights so far, optimizer moments) in safetensors, the
rest (config, progress, early-stopping state, history, scheduler and optimizer settings, data
fingerprint) as JSON in its header, with a checksum over the tensors. Nothing is unpickled.

No random-number state is stored because none is needed: every epoch's shuffle, every sample's
augmentation and every batch's dropout are seeded from (seed, epoch, index) — see seeding.derive_seed —
so a resumed run draws exactly what the uninterrupted one would have.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from .model import read_safetensors, verify_checksum, write_safetensors
from .modelinfo import error_summary

CHECKPOINT_NAME = "checkpoint.safetensors"
KEY = "melanoma_checkpoint"
VERSION = 1


@dataclass
class Progress:
    epochs_done: int = 0
    batches_done: int = 0  # batches of the next epoch already trained (a Ctrl-C mid-epoch)
    seen: int = 0  # running training figures of that partial epoch
    correct: int = 0
    loss_sum: float = 0.0
    seconds: float = 0.0  # training time of that epoch so far
    history: list = field(default_factory=list)
    best_auc: float = -1.0
    best_loss: float | None = None
    best_epoch: int = 0  # 0: none yet (or none beat the --init model)
    stale: int = 0  # epochs since the validation AUC last improved
    finished: bool = False  # the epoch loop is over (early stop or last epoch); calibration remains

    def epoch_over(self, epoch: int) -> None:
        self.epochs_done, self.batches_done, self.seen, self.correct, self.loss_sum, self.seconds = epoch, 0, 0, 0, 0.0, 0.0


@dataclass
class Checkpoint:
    config: dict
    fingerprint: str
    progress: Progress
    model_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor] | None
    optimizer_state: dict
    scheduler_state: dict


class CheckpointError(ValueError):
    pass


def save(run_dir: Path, model, best_state, optimizer, scheduler, config: dict, fingerprint: str, progress: Progress) -> None:
    tensors = {f"model.{k}": v.detach().contiguous().cpu() for k, v in model.state_dict().items()}
    if best_state is not None:
        tensors.update({f"best.{k}": v.detach().contiguous().cpu() for k, v in best_state.items()})
    opt = optimizer.state_dict()
    for pid, state in opt["state"].items():
        for name, value in state.items():
            tensors[f"optim.{pid}.{name}"] = value.detach().contiguous().cpu()
    meta = {
        "version": VERSION,
        "config": config,
        "fingerprint": fingerprint,
        "progress": asdict(progress),
        "optimizer_param_groups": opt["param_groups"],
        "scheduler": scheduler.state_dict(),
    }
    write_safetensors(Path(run_dir) / CHECKPOINT_NAME, tensors, {KEY: json.dumps(meta)})


def load(run_dir: Path) -> Checkpoint:
    from safetensors import SafetensorError

    path = Path(run_dir) / CHECKPOINT_NAME
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint here; was the run started with this --out?")
    try:
        tensors, header = read_safetensors(path)
        verify_checksum(tensors, header)
        meta = json.loads(header[KEY])
        if meta.get("version") != VERSION:
            raise ValueError(f"checkpoint format is not version {VERSION}")
        optim: dict[int, dict] = {}
        for k, v in tensors.items():
            if k.startswith("optim."):
                _, pid, name = k.split(".", 2)
                optim.setdefault(int(pid), {})[name] = v
        best = {k[5:]: v for k, v in tensors.items() if k.startswith("best.")}
        return Checkpoint(
            config=meta["config"],
            fingerprint=meta["fingerprint"],
            progress=Progress(**meta["progress"]),
            model_state={k[6:]: v for k, v in tensors.items() if k.startswith("model.")},
            best_state=best or None,
            optimizer_state={"state": optim, "param_groups": meta["optimizer_param_groups"]},
            scheduler_state=meta["scheduler"],
        )
    except (SafetensorError, ValueError, KeyError, TypeError, OSError) as exc:
        raise CheckpointError(f"{path}: not a usable training checkpoint ({error_summary(exc)})") from None
