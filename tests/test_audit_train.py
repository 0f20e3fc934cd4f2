import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from melanoma.audit import near_duplicate_groups, run_audit, thumbnail
from melanoma.data import split_train_val
from melanoma.model import load
from melanoma.sampling import mix_targets, mixup_batch, sample_weights

from .conftest import TINY_THRESHOLD, lesion_image, melanoma_cli


def test_near_duplicates_found_through_reencoding_and_flips(tmp_path):
    originals = [lesion_image((224, 224), seed=s) for s in range(6)]
    originals = [Image.fromarray(np.roll(np.asarray(im), 20 * i, axis=1)) for i, im in enumerate(originals)]
    p = tmp_path / "copy.jpg"
    originals[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT).save(p, quality=70)
    thumbs = np.stack([thumbnail(im) for im in originals] + [thumbnail(Image.open(p))])
    groups = near_duplicate_groups(thumbs)
    assert groups[6] == groups[0]
    assert len(set(groups[:6])) == 6


def test_near_duplicate_groups_are_those_of_the_full_comparison():
    """`near_duplicate_groups` compares each pair once, under the 8 orientations of one side only:
    the same groups as every pair both ways (`_similarity`, what `copies_in_train` uses)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    from melanoma.audit import WHOLE_CORRELATION, _similarity

    rng = np.random.default_rng(0)
    thumbs = rng.normal(0, 1, (300, 2, 16, 16)).astype(np.float32)
    for k in range(0, 120, 2):  # 60 copies, turned, flipped, with a little noise
        turned = np.rot90(thumbs[k], k % 4, axes=(1, 2))
        thumbs[k + 1] = (turned[..., ::-1] if k % 3 else turned) + rng.normal(0, 0.05, (2, 16, 16))
    thumbs[200:210] = thumbs[210:220] * 2 + 5  # brightness and contrast changed
    groups = near_duplicate_groups(thumbs, chunk=64)  # pairs across chunks too
    rows, cols = [], []
    for start, s in _similarity(thumbs, thumbs, chunk=64):
        i, j = np.nonzero(s >= WHOLE_CORRELATION)
        rows.append(i + start)
        cols.append(j)
    i, j = np.concatenate(rows), np.concatenate(cols)
    _, full = connected_components(coo_matrix((np.ones(len(i)), (i, j)), shape=(300, 300)), directed=False)
    assert np.array_equal(groups, full) and len(set(groups)) == 300 - 60 - 10


def test_split_keeps_groups_together_and_is_stratified():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000)
    groups = np.arange(1000)
    groups[500:520] = 7  # a near-duplicate family
    labels[500:520] = 1
    tr, va = split_train_val(labels, groups, 0.1, seed=0)
    assert set(tr).isdisjoint(va) and len(tr) + len(va) == 1000
    assert {7} & set(groups[tr]) == set() or {7} & set(groups[va]) == set()
    assert abs(labels[va].mean() - labels.mean()) < 0.1


@pytest.mark.slow
def test_audit_on_the_real_data(data_dir, tmp_path):
    report = run_audit(data_dir, tmp_path)
    assert report["counts"]["train"] == {"Benign": 6289, "Malignant": 5590, "unreadable": 0}
    assert report["counts"]["test"] == {"Benign": 1000, "Malignant": 1000, "unreadable": 0}
    leaks = report["test_near_duplicates_of_train"]
    # the data README: many test/Malignant images are re-encoded copies of train/Malignant ones
    assert leaks["by_class"]["Malignant"] > 600 and leaks["by_class"]["Benign"] < 10
    assert report["train_near_duplicates"]["by_class"]["Malignant"] > 900
    listed = (tmp_path / "test_near_duplicates.txt").read_text().split()
    assert len(listed) == leaks["images"] and all(x.startswith("test/") for x in listed)
    assert "Near-duplicates" in (tmp_path / "audit.md").read_text()
    assert json.loads((tmp_path / "audit.json").read_text())["test_leaks"][0]["correlation"] >= 0.985


@pytest.mark.slow
def test_one_epoch_training_on_real_images(recorded_run, data_dir, tmp_path):
    import torch

    out = recorded_run  # `train --arch efficientnet_lite0 --img-size 96 --limit 24 --epochs 1 --batch-size 16 --val-fraction 0.25`
    model, info = load(out / "model.safetensors")
    assert info.arch == "efficientnet_lite0" and info.preprocess.image_size == 96
    assert 0 < info.threshold <= 0.5 and info.temperature > 0
    assert len(info.history) == 1 and info.train_config["epochs"] == 1
    assert len(info.data_fingerprint) == 64
    assert (out / "training_curves.png").stat().st_size > 0
    split = json.loads((out / "split.json").read_text())
    assert len(split["train"]) + len(split["validation"]) == 48
    assert info.ood_cutoff is not None and model.ood is not None  # fitted at the end of training
    r = melanoma_cli("fit-ood", "--model", out / "model.safetensors", "--data", data_dir, "--out", tmp_path / "refit.safetensors")
    assert r.returncode == 0, r.stderr[-2000:]
    _, refit = load(tmp_path / "refit.safetensors")  # the same split drawn again: the same fit
    assert refit.ood_cutoff == pytest.approx(info.ood_cutoff, rel=1e-5) and refit.threshold == info.threshold
    r = melanoma_cli("fit-ood", "--model", out / "model.safetensors", "--data", tmp_path / "nowhere", "--out", tmp_path / "x.safetensors")
    assert r.returncode == 1 and "Traceback" not in r.stderr
    # another operating point on the same split: temperature as training fitted it, the threshold for the new target
    r = melanoma_cli("calibrate", "--model", out / "model.safetensors", "--data", data_dir, "--target-sensitivity", "0.5",
                     "--out", tmp_path / "half.safetensors")
    assert r.returncode == 0, r.stderr[-2000:]
    half_model, half = load(tmp_path / "half.safetensors")
    assert half.target_sensitivity == 0.5 and half.temperature == pytest.approx(info.temperature, rel=1e-4)
    assert half.threshold >= info.threshold and half.validation["sensitivity"] >= 0.5
    assert {k: half.validation[k] for k in ("best_epoch", "split_sha256", "epochs_run")} == \
        {k: info.validation[k] for k in ("best_epoch", "split_sha256", "epochs_run")}
    assert half.ood_cutoff == info.ood_cutoff and all(torch.equal(a, b) for a, b in zip(half_model.state_dict().values(), model.state_dict().values()))
    assert f"threshold {half.threshold:.3f}" in r.stdout and "validation: 12 images" in r.stdout
    for bad in ("0", "1.5", "x"):
        r = melanoma_cli("calibrate", "--data", data_dir, "--target-sensitivity", bad, "--out", tmp_path / "bad.safetensors")
        assert r.returncode == 2 and "--target-sensitivity" in r.stderr and "Traceback" not in r.stderr
    r = melanoma_cli("train", "--data", data_dir, "--out", out, "--epochs", "31")
    assert r.returncode == 2 and "between 1 and 30" in r.stderr
    r = melanoma_cli("train", "--data", data_dir, "--out", out, "--val-fraction", "0.4")  # would have been 0.5
    assert r.returncode == 2 and "--val-fraction 0.4 cannot be honoured" in r.stderr and "Traceback" not in r.stderr

    # fine-tuning from a model file: same data and split, or a clear refusal
    common = ["train", "--data", data_dir, "--arch", "efficientnet_lite0", "--limit", "24", "--epochs", "1",
              "--batch-size", "16", "--val-fraction", "0.25", "--init", out / "model.safetensors"]
    r = melanoma_cli(*common, "--img-size", "96", "--out", tmp_path / "again", "--lr", "1e-5")
    assert r.returncode == 0, r.stderr[-2000:]
    start = [line for line in r.stderr.splitlines() if line.startswith("starting from")]
    assert start and f"val_auc={info.history[0]['val_auc']:.4f}" in start[0]
    _, again = load(tmp_path / "again" / "model.safetensors")
    assert again.train_config["init"] == str(out / "model.safetensors")
    # the one epoch replaces the --init weights only if it beats them on validation (ties: the lower loss)
    before, after = info.history[0], again.history[0]
    beats = after["val_auc"] > before["val_auc"] or (after["val_auc"] == before["val_auc"] and after["val_loss"] < before["val_loss"])
    assert again.validation["best_epoch"] == (1 if beats else 0)
    r = melanoma_cli(*common, "--img-size", "96", "--out", tmp_path / "other_seed", "--seed", "1")
    assert r.returncode == 1 and "leak into this run's validation" in r.stderr and "Traceback" not in r.stderr
    r = melanoma_cli(*common, "--img-size", "64", "--out", tmp_path / "other_size")
    assert r.returncode == 1 and "at 96 px" in r.stderr and "Traceback" not in r.stderr

    # distillation: the teachers are held to the same data and split as --init
    teachers = ["--teacher", out / "model.safetensors", "--teacher", tmp_path / "again" / "model.safetensors"]
    r = melanoma_cli(*common[:-2], *teachers, "--distill", "0.7", "--img-size", "96", "--out", tmp_path / "student")
    assert r.returncode == 0, r.stderr[-2000:]
    assert sum(line.startswith("teacher ") for line in r.stderr.splitlines()) == 2
    _, student = load(tmp_path / "student" / "model.safetensors")
    assert student.train_config["teacher"] == [str(t) for t in teachers[1::2]] and student.train_config["distill"] == 0.7
    r = melanoma_cli(*common[:-2], *teachers, "--img-size", "96", "--out", tmp_path / "other_student", "--seed", "1")
    assert r.returncode == 1 and "leak into this run's validation" in r.stderr and "Traceback" not in r.stderr
    r = melanoma_cli(*common[:-2], *teachers, "--distill", "1.5", "--out", tmp_path / "bad")
    assert r.returncode == 2 and "--distill" in r.stderr
    r = melanoma_cli(*common[:-2], "--distill", "0.3", "--out", tmp_path / "bad")
    assert r.returncode == 2 and "needs at least one --teacher" in r.stderr
    r = melanoma_cli(*common[:-2], "--mixup", "-0.2", "--out", tmp_path / "bad")
    assert r.returncode == 2 and "--mixup is a Beta parameter" in r.stderr


def test_sample_weights_balance_classes_and_count_a_duplicate_group_once():
    labels = np.array([0, 0, 0, 0, 1, 1, 1, 1, 1, 1])
    groups = np.array([0, 1, 2, 3, 4, 4, 4, 5, 6, 7])  # one melanoma photographed three times
    each = sample_weights(labels, groups).numpy()
    assert np.allclose(each[:4], 10 / 8) and np.allclose(each[4:], 10 / 12)  # classes weigh alike: 5 and 5
    once = sample_weights(labels, groups, once=True).numpy()
    assert np.isclose(once[labels == 0].sum(), once[labels == 1].sum()) and np.isclose(once.sum(), 8)
    assert np.allclose(once[4:7], once[7] / 3)  # the group of three weighs as one image of its class
    assert np.allclose(once[:4], 1)


def test_mixup_blends_images_targets_and_weights_alike_and_is_seeded():
    import itertools

    import torch

    x = torch.tensor([0.0, 1.0, 5.0, 9.0]).reshape(4, 1, 1, 1).expand(4, 3, 2, 2).clone()
    y, w = torch.tensor([0, 1, 1, 0]), torch.tensor([1.0, 2.0, 3.0, 4.0])
    mx, my, mw = mixup_batch(x, y, w, 0.4, seed=7)
    assert all(torch.equal(a, b) for a, b in zip((mx, my, mw), mixup_batch(x, y, w, 0.4, seed=7)))
    assert not torch.equal(mixup_batch(x, y, w, 0.4, seed=8)[0], mx)
    onehot = torch.nn.functional.one_hot(y, 2).float()
    fits = []  # (share, pairing) under which every image, target and weight is the same blend
    for order in map(list, itertools.permutations(range(4))):
        moved = x[:, 0, 0, 0] - x[order, 0, 0, 0]
        share = float(((mx[:, 0, 0, 0] - x[order, 0, 0, 0]) * moved).sum() / (moved * moved).sum()) if moved.any() else 1.0
        blend = lambda t: share * t + (1 - share) * t[order]  # noqa: E731
        if all(torch.allclose(m, blend(t), atol=1e-5) for m, t in ((mx, x), (my, onehot), (mw, w))):
            fits.append(share)
    assert len(fits) == 1 and 0 <= fits[0] <= 1


def test_distillation_targets_mix_label_and_teacher():
    t = mix_targets(np.array([0, 1, 1]), np.array([0.2, 0.9, 0.4]), 0.5).numpy()
    assert np.allclose(t, [[0.9, 0.1], [0.05, 0.95], [0.3, 0.7]])
    assert np.allclose(mix_targets(np.array([0, 1]), np.array([0.7, 0.2]), 0.0).numpy(), [[1, 0], [0, 1]])


def test_audit_and_evaluate_on_a_small_folder_with_a_broken_file(small_data, tiny_model_file, tmp_path):
    r = melanoma_cli("audit", "--data", small_data, "--out", tmp_path / "audit")
    assert r.returncode == 0, r.stderr[-2000:]
    report = json.loads((tmp_path / "audit" / "audit.json").read_text())
    assert report["counts"]["test"] == {"Benign": 12, "Malignant": 12, "unreadable": 1}
    assert report["unreadable"][0]["file"] == "test/Benign/broken.jpg"
    assert report["image_sizes"] == {"224x224": 48}

    r = melanoma_cli("evaluate", "--model", tiny_model_file, "--data", small_data, "--out", tmp_path / "eval", "--bootstrap", "50",
                     "--faithfulness", "4")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["test"]["images"] == 24 and m["test"]["threshold"] == TINY_THRESHOLD
    assert m["faithfulness"] is None and any(n.startswith("--faithfulness: not measured") for n in m["notes"])  # seed_cnn: said, not silent
    assert m["test"]["images"] == m["clean_test"]["images"] + m["near_duplicates_excluded"]
    lo, hi = m["test"]["roc_auc_ci95"]
    assert lo <= m["test"]["roc_auc"] <= hi
    for plot in ("confusion_matrix", "roc_curve", "reliability", "gradcam_examples", "architecture"):
        assert (tmp_path / "eval" / f"{plot}.png").stat().st_size > 1000
    assert "accuracy" in r.stdout and "clean test" in r.stdout
    a = m["attention_clean_test"]  # the tiny model's margin maps are often blank (nothing raised its estimate)
    assert 0 <= a["images_with_spot"] <= 24 and (a["images_with_spot"] == 0 or (0 <= a["cam_on_spot"] <= 1 and 0 < a["spot_area"] < 1))


def test_attention_figures_follow_where_a_map_falls():
    """cam_placement and attention_summary on a map that is not blank (the tiny model's often are, so the
    evaluate test above can only check ranges): skin with a dark spot in the middle and a black vignette."""
    from melanoma.metrics import attention_summary, cam_placement

    yy, xx = np.mgrid[:224, :224]
    r = np.hypot(yy - 112, xx - 112)
    noise = np.random.default_rng(0).normal(0, 6, (224, 224, 1))  # Otsu needs more than two grey levels
    view = np.clip(np.where((r < 40)[..., None], np.array([90, 50, 40]), np.array([215, 170, 150])) + noise, 0, 255).astype(np.uint8)
    view[r > 112] = 0  # the dermoscope's black corners
    on_spot, in_corner = (r < 30).astype(float), ((yy < 20) & (xx < 20)).astype(float)
    spot, corner = cam_placement(view, on_spot), cam_placement(view, in_corner)
    assert spot[0] > 0.99 and spot[2] == 1.0 and spot[3] < 0.01  # a few noisy pixels of the spot fall outside its mask
    assert 0.08 < spot[1] < 0.12  # the spot: pi 40^2 of 224^2
    assert corner[0] == 0.0 and corner[2] == 0.0 and corner[3] == pytest.approx(1.0) and 0.15 < corner[4] < 0.25
    summary = attention_summary(np.array([spot, corner, cam_placement(view, np.zeros((224, 224)))]))
    assert summary["images_with_spot"] == 2  # the blank map is left out
    assert summary["cam_on_spot"] == pytest.approx((spot[0] + corner[0]) / 2) and summary["cam_peak_on_spot"] == 0.5


def test_outputs_inside_the_data_folder_are_refused(small_data):
    before = sorted(p for p in small_data.rglob("*"))
    r = melanoma_cli("audit", "--data", small_data, "--out", small_data / "report")
    assert r.returncode != 0 and "inside the data folder" in r.stderr
    assert sorted(p for p in small_data.rglob("*")) == before


def test_training_augmentation_makes_no_network_request():
    """albumentations asks PyPI for a newer release when imported, unless told not to."""
    code = (
        "import urllib.request as u\n"
        "calls = []\n"
        "real = u.OpenerDirector.open\n"
        "u.OpenerDirector.open = lambda self, *a, **k: calls.append(a) or real(self, *a, **k)\n"
        "from melanoma.preprocess import train_augment\n"
        "train_augment(64, 0)\n"
        "print('requests', len(calls))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "NO_ALBUMENTATIONS_UPDATE"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "requests 0" in r.stdout
