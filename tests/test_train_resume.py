"""Training that survives faults: killed or interrupted runs resume to the same weights."""

import json
import shutil
import subprocess
import sys

import pytest
from safetensors.torch import load_file

from .conftest import melanoma_cli

TINY = ["--arch", "seed_cnn", "--img-size", "64", "--limit", "40", "--epochs", "3", "--batch-size", "8", "--val-fraction", "0.25"]
# 60 training images -> 7 batches per epoch; batch 12 is in the middle of epoch 2


# `melanoma train` in a process that sends itself a signal right after its N-th optimizer step: the
# fault comes from outside the training loop, as a kill or a Ctrl-C would.
SIGNAL_AFTER_STEP = """
import os, signal, sys
import torch
from melanoma import cli

after, name = int(sys.argv[1]), sys.argv[2]
real_step, steps = torch.optim.AdamW.step, []

def step(self, *args, **kwargs):
    out = real_step(self, *args, **kwargs)
    steps.append(1)
    if len(steps) == after:
        os.kill(os.getpid(), getattr(signal, "SIG" + name))
    return out

torch.optim.AdamW.step = step
sys.exit(cli.main(sys.argv[3:]))
"""


def train(*args, signal_at=None):
    if not signal_at:
        return melanoma_cli("train", *args)
    after, name = signal_at.split(":")
    return subprocess.run([sys.executable, "-c", SIGNAL_AFTER_STEP, after, name, "train", *map(str, args)],
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def uninterrupted(data_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "full"
    r = train("--data", data_dir, "--out", out, *TINY)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def same_weights(a, b):
    wa, wb = load_file(a / "model.safetensors"), load_file(b / "model.safetensors")
    return wa.keys() == wb.keys() and all((wa[k] == wb[k]).all() for k in wa)


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_gives_the_same_weights(data_dir, tmp_path, uninterrupted):
    out = tmp_path / "killed"
    r = train("--data", data_dir, "--out", out, *TINY, signal_at="12:KILL")
    assert r.returncode == -9 and not (out / "model.safetensors").exists()
    r = train("--resume", out, "--data", data_dir, "--workers", "2")  # workers are not the recipe: the same weights
    assert r.returncode == 0, r.stderr[-2000:]
    assert "resuming" in r.stderr and "1 epochs done" in r.stderr
    assert same_weights(out, uninterrupted)
    history = [{k: v for k, v in row.items() if k != "seconds"} for row in json.loads((out / "history.json").read_text())]
    assert history == [{k: v for k, v in row.items() if k != "seconds"} for row in json.loads((uninterrupted / "history.json").read_text())]


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_mid_epoch_and_resumes_exactly(data_dir, tmp_path, uninterrupted):
    """SIGTERM (what torchrun, SLURM and Kubernetes send); Ctrl-C (SIGINT) goes through the same handler and is
    the signal test_resume_reports_changed_data_and_bad_checkpoints stops its run with (exit 130, a checkpoint)."""
    out = tmp_path / "interrupted"
    r = train("--data", data_dir, "--out", out, *TINY, signal_at="5:TERM")
    assert r.returncode == 130, r.stderr[-2000:]
    assert "checkpoint saved (epoch 1, batch 5)" in r.stderr and f"--resume {out}" in r.stderr
    assert "Traceback" not in r.stderr and not (out / "model.safetensors").exists()
    r = train("--resume", out, "--data", data_dir)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "5 batches into epoch 1" in r.stderr
    assert same_weights(out, uninterrupted)


@pytest.mark.slow
def test_resume_reports_changed_data_and_bad_checkpoints(data_dir, tmp_path):
    data = tmp_path / "data"
    for cls in ("Benign", "Malignant"):
        (data / "train" / cls).mkdir(parents=True)
        for f in sorted((data_dir / "train" / cls).glob("*.jpg"))[:12]:
            shutil.copy(f, data / "train" / cls / f.name)
    out = tmp_path / "run"
    args = ["--arch", "seed_cnn", "--img-size", "64", "--epochs", "2", "--batch-size", "4", "--val-fraction", "0.25"]
    r = train("--data", data, "--out", out, *args, signal_at="3:INT")  # Ctrl-C
    assert r.returncode == 130 and "checkpoint saved (epoch 1, batch 3)" in r.stderr and "Traceback" not in r.stderr, r.stderr[-2000:]

    extra = sorted((data_dir / "train" / "Benign").glob("*.jpg"))[20]
    shutil.copy(extra, data / "train" / "Benign" / extra.name)
    r = train("--resume", out, "--data", data)
    assert r.returncode == 1 and "training data changed" in r.stderr and "1 images added, 0 removed" in r.stderr
    assert "Traceback" not in r.stderr

    r = train("--resume", out, "--data", data, "--epochs", "5")
    assert r.returncode == 2 and "own recipe" in r.stderr

    from safetensors import safe_open
    from safetensors.torch import load_file, save_file

    ckpt = out / "checkpoint.safetensors"
    with safe_open(str(ckpt), "pt") as f:
        meta = f.metadata()
    saved = json.loads(meta["melanoma_checkpoint"])
    newer = dict(meta, melanoma_checkpoint=json.dumps(dict(saved, config=dict(saved["config"], future_option=1))))
    (out / "newer").mkdir()
    save_file(load_file(ckpt), str(out / "newer" / "checkpoint.safetensors"), metadata=newer)
    r = train("--resume", out / "newer", "--data", data)
    assert r.returncode == 1 and "another version" in r.stderr and "future_option" in r.stderr and "Traceback" not in r.stderr

    ckpt = out / "checkpoint.safetensors"
    blob = bytearray(ckpt.read_bytes())
    blob[-100] ^= 0xFF  # flip a byte in the tensors
    ckpt.write_bytes(bytes(blob))
    r = train("--resume", out, "--data", data)
    assert r.returncode == 1 and "not a usable training checkpoint" in r.stderr and "checksum" in r.stderr
    assert "Traceback" not in r.stderr

    r = train("--resume", tmp_path / "nowhere", "--data", data)
    assert r.returncode == 1 and "no checkpoint here" in r.stderr


def test_frozen_blocks_and_their_batchnorm_statistics_do_not_change_in_training(recorded_run):
    """--freeze-blocks 4 (the default): the stem and the first 4 blocks keep their ImageNet weights and
    BatchNorm running statistics through training; the next block learns."""
    import torch

    from melanoma.model import build, load

    trained, info = load(recorded_run / "model.safetensors")
    assert info.train_config["freeze_blocks"] == 4
    imagenet, _ = build("efficientnet_lite0", pretrained=True, image_size=info.preprocess.image_size)
    after, before = trained.state_dict(), imagenet.state_dict()
    frozen = ("features.net._conv_stem.", "features.net._bn0.", *(f"features.net._blocks.{i}." for i in range(4)))
    kept = [k for k in before if k.startswith(frozen)]
    assert any("running_mean" in k for k in kept) and all(torch.equal(after[k], before[k]) for k in kept)
    assert not all(torch.equal(after[k], before[k]) for k in before if k.startswith("features.net._blocks.4."))
