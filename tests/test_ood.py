"""The out-of-distribution score: carried by the model file, reported by every entry point, and
flagging pictures that are not skin lesions while leaving dermoscopy images alone."""

import csv

import numpy as np
import pytest
import torch
from PIL import Image
from safetensors.torch import load_file, save_file

from melanoma.model import load
from melanoma.modelinfo import ModelFileError
from melanoma.ood_fit import attach
from melanoma.preprocess import model_view
from melanoma.quality import assess

from .conftest import classify, lesion_image, melanoma_cli
from .nonlesion import write as write_nonlesion


@pytest.fixture(scope="module")
def nonlesion(tmp_path_factory):
    return write_nonlesion(tmp_path_factory.mktemp("nonlesion"))


@pytest.fixture(scope="module")
def bundled_ood(data_dir, nonlesion):
    """The bundled model's OOD scores on 100 test images and the 60 non-lesion pictures, and which of the
    pictures the score and the photo checks warn about."""
    from melanoma.scoring import folder_ood_scores

    model, info = load()
    assert info.ood_cutoff is not None and model.ood is not None
    test = sorted((data_dir / "test" / "Benign").glob("*.jpg"))[::20] + sorted((data_dir / "test" / "Malignant").glob("*.jpg"))[::20]
    lesions = np.array([p.ood_score for p in classify(model, info, [Image.open(f).convert("RGB") for f in test])])
    others = folder_ood_scores(model, info, str(nonlesion[0].parent))
    assert len(test) == 100 and len(others) == 60
    pictures = [Image.open(f).convert("RGB") for f in nonlesion]
    model_check = np.array([p.ood for p in classify(model, info, pictures)])
    photo_check = np.array([bool(assess(im, model_view(im, info.preprocess)).warnings) for im in pictures])
    assert model_check.sum() == (others > info.ood_cutoff).sum()  # classify flags as the folder scores say
    return info.ood_cutoff, lesions, others, model_check, photo_check


def test_bundled_model_flags_few_dermoscopy_images_and_ranks_pictures_that_are_not_lesions_higher(bundled_ood):
    from sklearn.metrics import roc_auc_score

    cutoff, lesions, others, _, _ = bundled_ood
    assert (lesions > cutoff).mean() <= 0.05  # false alarms on test images
    assert roc_auc_score(np.r_[np.zeros(100), np.ones(60)], np.r_[lesions, others]) >= 0.9


# Issue 13's bar: the score flags at least 90% of the 60 pictures, and with the photo checks at least 95% get a
# warning. The multi-source model's last-stage score had fallen to 25% (E 85%); the score now reads the last block
# (ood.BLOCK), chosen on validation, the external development sets and these pictures.
def test_bundled_model_flags_pictures_that_are_not_lesions(bundled_ood):
    cutoff, _, others, _, _ = bundled_ood
    assert (others > cutoff).mean() >= 0.90


def test_the_floor_holds_on_pictures_that_did_not_choose_the_block(tmp_path, bundled_ood):
    """The 60 pictures above took part in choosing ood.BLOCK; 54 more drawn with another seed (the photographs left out:
    they are the same few) did not, and the same 90% floor holds on them."""
    from melanoma.scoring import folder_ood_scores

    cutoff = bundled_ood[0]
    for path in write_nonlesion(tmp_path, seed=1):
        if path.name.startswith("photo_"):
            path.unlink()
    model, info = load()
    others = folder_ood_scores(model, info, str(tmp_path))
    assert len(others) == 54 and (others > cutoff).mean() >= 0.90


def test_nearly_every_picture_that_is_not_a_lesion_gets_a_warning(bundled_ood):
    _, _, _, model_check, photo_check = bundled_ood
    assert (model_check | photo_check).mean() >= 0.95


def test_fit_travels_in_the_model_file_and_a_half_fit_is_refused(tmp_path):
    from melanoma.model import build, save
    from melanoma.modelinfo import ModelInfo

    torch.manual_seed(0)
    model, pre = build("seed_cnn", image_size=64)
    views = [model_view(lesion_image(seed=s), pre) for s in range(12)]
    cutoff = attach(model, pre, views[:8], np.array([0, 1] * 4), views[8:])
    path = tmp_path / "m.safetensors"
    save(path, model, ModelInfo("seed_cnn", pre, ood_cutoff=cutoff))
    loaded, info = load(path)
    assert info.ood_cutoff == cutoff and torch.equal(loaded.ood.means, model.ood.means)
    preds = classify(loaded, info, [lesion_image(seed=s) for s in range(8, 12)])
    assert sum(p.ood for p in preds) <= 1 and all(p.ood_score is not None for p in preds)  # at most the top one of four over the 99th percentile

    tensors = load_file(path)
    del tensors["ood.whiten"], tensors["ood.means"]
    from safetensors import safe_open

    with safe_open(str(path), "pt") as f:
        meta = f.metadata()
    from melanoma.model import CHECKSUM_KEY, weights_sha256

    save_file(tensors, str(tmp_path / "half.safetensors"), metadata={**meta, CHECKSUM_KEY: weights_sha256(tensors)})
    with pytest.raises(ModelFileError, match="out-of-distribution"):
        load(tmp_path / "half.safetensors")


def test_a_lite_model_reads_a_middle_block_in_the_same_pass_and_records_it(tmp_path):
    from melanoma.explain import infer
    from melanoma.model import build, save
    from melanoma.modelinfo import ModelInfo
    from melanoma.ood import BLOCK
    from melanoma.preprocess import normalize

    torch.manual_seed(0)
    model, pre = build("efficientnet_lite0", image_size=64)
    model.eval()
    x = normalize(np.stack([model_view(lesion_image(seed=s), pre) for s in range(4)]), pre)
    with torch.no_grad():
        maps, tapped = model.features(x, tap=BLOCK)
        assert torch.equal(maps, model.features.net.extract_features(x))  # the written-out pass is the library's
        assert tapped.shape[1] == model.features.net._blocks[BLOCK]._project_conv.out_channels
    views = [model_view(lesion_image(seed=s), pre) for s in range(12)]
    cutoff = attach(model, pre, views[:8], np.array([0, 1] * 4), views[8:])
    assert model.ood.block == BLOCK
    path = tmp_path / "m.safetensors"
    save(path, model, ModelInfo("efficientnet_lite0", pre, ood_cutoff=cutoff, ood_block=model.ood.block))
    loaded, info = load(path)
    assert info.ood_block == BLOCK and loaded.ood.block == BLOCK
    with torch.no_grad():
        expected = model.ood(model.features(x, tap=BLOCK)[1]).numpy()
    np.testing.assert_allclose(infer(loaded, x, cam=False).ood, expected, rtol=1e-4)


def flagged_by_the_bundled_model(pictures) -> list:
    model, info = load()
    return [f for f, p in zip(pictures, classify(model, info, [Image.open(f).convert("RGB") for f in pictures])) if p.ood]


def test_predict_csv_and_lines_carry_the_score_and_the_flag(tmp_path, nonlesion, data_dir):
    picks = [*flagged_by_the_bundled_model(nonlesion)[:2], *sorted((data_dir / "test" / "Benign").glob("*.jpg"))[:2]]
    out = tmp_path / "p.csv"
    r = melanoma_cli("predict", *picks, "--csv", out)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = list(csv.DictReader(open(out)))
    assert list(rows[0])[:5] == ["path", "p_malignant", "label", "ood_score", "ood"]  # the columns clients read first stay put
    assert [row["ood"] for row in rows][:2] == ["1", "1"] and all(float(row["ood_score"]) > 0 for row in rows)
    words = [line.split("\t")[3] for line in r.stdout.splitlines()]
    assert words[:2] == ["unlike-training", "unlike-training"] and set(words[2:]) <= {"ok", "unlike-training"}


def test_page_shows_the_model_check_beside_the_photo_checks(nonlesion):
    from melanoma.app import UNLIKE_TRAINING, check_upload, warnings_for

    model, info = load()
    flat = [f for f in flagged_by_the_bundled_model(nonlesion) if f.name.startswith("flat")][0]
    r = check_upload(flat.read_bytes(), flat.name, model, info)  # a flat colour the model flags
    warnings = warnings_for(r)
    assert r["pred"].ood and warnings[0] == UNLIKE_TRAINING
    assert any(w.startswith("Photo check:") for w in warnings)  # no lesion, no skin: the photo checks fire too
