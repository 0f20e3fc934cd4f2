"""Data-parallel training: torchrun with 2 CPU processes (gloo) gives the one-process result."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from melanoma.checkpoint import Progress
from melanoma.loadtest import free_port
from melanoma.model import Classifier, load
from melanoma.parallel import Parallel
from melanoma.preprocess import Preprocess, train_augment
from melanoma.recipe import TrainConfig
from melanoma.sampling import ArrayDataset, sample_weights
from melanoma.train import Fitting, StopRequest, train_one_epoch


def tiny_net() -> Classifier:
    torch.manual_seed(0)
    return Classifier(nn.Conv2d(3, 4, 3), nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, 2)))


def train_tiny(par: Parallel) -> tuple[dict, Progress]:
    """Two epochs of a small network with neither BatchNorm nor dropout, whose per-process batch
    statistics would make the runs differ by design; what is left must agree to float order."""
    model = tiny_net()
    rng = np.random.default_rng(0)
    arrays = [rng.integers(0, 255, (32, 32, 3), dtype=np.uint8) for _ in range(44)]
    labels = (rng.random(44) < 0.3).astype(int)  # unbalanced: the class weights matter
    data = ArrayDataset(arrays, labels, train_augment(32, seed=0), seed=0)
    config = TrainConfig(batch_size=8, epochs=2, seed=0)
    optimizer = torch.optim.AdamW(model.parameters(), lr=0.05)
    scheduler = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=0.05, total_steps=2 * 5)
    weights = sample_weights(labels, np.arange(44) // 2, once=True)  # pairs as near-duplicate groups
    progress = Progress()
    fitting = Fitting(par.wrap(model), data, weights, optimizer, scheduler, [], config, Preprocess(32, (0.5,) * 3, (0.5,) * 3), par)
    for epoch in (1, 2):
        train_one_epoch(fitting, progress, StopRequest())
        if epoch == 1:
            progress.epoch_over(epoch)
    return {k: v.detach().clone() for k, v in model.state_dict().items()}, progress


def _process(rank: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE="2", RANK=str(rank), LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    par = Parallel()
    weights, progress = train_tiny(par)
    if rank == 0:
        save_file(weights, out, metadata={"seen": str(progress.seen), "loss_sum": repr(progress.loss_sum)})
    par.close()


@pytest.mark.slow
def test_two_processes_compute_the_one_process_update(tmp_path):
    from safetensors import safe_open

    single, progress = train_tiny(Parallel())
    out = str(tmp_path / "ddp.safetensors")
    torch.multiprocessing.spawn(_process, args=(free_port(), out), nprocs=2)
    ddp = load_file(out)
    with safe_open(out, "pt") as f:
        meta = f.metadata()
    assert single.keys() == ddp.keys()
    for k in single:
        torch.testing.assert_close(ddp[k], single[k], atol=1e-5, rtol=1e-4)
    assert not torch.equal(single["head.2.weight"], tiny_net().head[2].weight)  # it did train
    assert int(meta["seen"]) == progress.seen == 40  # both processes' images counted once each
    assert abs(float(meta["loss_sum"]) - progress.loss_sum) < 1e-3


@pytest.mark.slow
def test_torchrun_two_cpu_processes_on_real_images(data_dir, tmp_path):
    torchrun = Path(sys.executable).with_name("torchrun")
    out = tmp_path / "run"
    r = subprocess.run([str(torchrun), "--standalone", "--nproc_per_node", "2", "-m", "melanoma", "train", "--data", str(data_dir),
                        "--out", str(out), "--arch", "seed_cnn", "--img-size", "64", "--limit", "40", "--epochs", "2",
                        "--batch-size", "8", "--val-fraction", "0.25"], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "2 processes" in r.stderr
    assert r.stderr.count("saved ") == 1 and r.stderr.count("epoch=2 ") == 1  # process 0 alone logs and writes
    model, info = load(out / "model.safetensors")
    assert len(info.history) == 2 and info.train_config["batch_size"] == 8
    assert (out / "checkpoint.safetensors").is_file()
