"""An ensemble model file: several members as one network (the mean of their logits), read by the one
loader, refused with a line naming the member when a member does not fit, exported to ONNX and int8
as one graph, and built and calibrated as a whole by `melanoma ensemble`."""

import json

import numpy as np
import pytest
import torch

from melanoma.ensemble import member_record
from melanoma.explain import infer
from melanoma.model import Ensemble, build, load, margin_weights, save
from melanoma.modelinfo import ModelFileError, ModelInfo

from .conftest import lesion_image, melanoma_cli, to_batch

SIZE = 64


def members(n=3, size=SIZE):
    out = []
    for seed in range(n):
        torch.manual_seed(seed)
        model, pre = build("efficientnet_lite0", image_size=size)
        with torch.no_grad():  # a head far from its initial zeros-ish state, so members differ clearly
            model.head[-1].weight.normal_(0, 0.05)
        out.append(model.eval())
    return out, pre


def ensemble_file(path, nets, pre, half=False):
    info = ModelInfo("efficientnet_lite0", pre, threshold=0.41, temperature=1.2,
                     members=[member_record(f"m{i}", ModelInfo("efficientnet_lite0", pre)) for i in range(len(nets))])
    save(path, Ensemble(nets, half_storage=half), info)
    return path


def batch(pre, n=3):
    return to_batch([lesion_image(seed=s) for s in range(n)], pre)


@pytest.mark.parametrize("half", [False, True])
def test_an_ensemble_file_round_trips_and_its_logits_are_the_members_mean(tmp_path, half):
    nets, pre = members()
    path = ensemble_file(tmp_path / "e.safetensors", nets, pre, half)
    model, info = load(path)
    assert isinstance(model, Ensemble) and [m["name"] for m in info.members] == ["m0", "m1", "m2"]
    assert all(len(m["weights_sha256"]) == 64 for m in info.members)
    x = batch(pre)
    with torch.no_grad():
        if half:  # the file keeps float16 weights: the members as the file holds them
            for net in nets:
                net.load_state_dict({k: v.half().float() if v.is_floating_point() else v for k, v in net.state_dict().items()})
        mean = torch.stack([net(x) for net in nets]).mean(0)
        assert (model(x) - mean).abs().max() <= 1e-5
    single = tmp_path / "one.safetensors"
    save(single, nets[0], ModelInfo("efficientnet_lite0", pre))
    ratio = path.stat().st_size / single.stat().st_size
    assert (1.4 < ratio < 1.6) if half else (2.9 < ratio < 3.1)  # float16 halves the members' weights


def test_grad_cam_of_an_ensemble_is_the_map_of_the_averaged_margin(tmp_path):
    nets, pre = members()
    model, _ = load(ensemble_file(tmp_path / "e.safetensors", nets, pre))
    x = batch(pre)
    out = infer(model, x, target=1)
    with torch.no_grad():
        maps = torch.stack([torch.einsum("c,bchw->bhw", margin_weights(net.head[-1]), net.features(x)) for net in nets]).mean(0)
    expected = torch.nn.functional.interpolate(maps.clamp(min=0)[:, None], size=(SIZE, SIZE), mode="bilinear", align_corners=False)[:, 0]
    expected = expected / expected.flatten(1).max(1).values.clamp(min=1e-12)[:, None, None]
    assert np.abs(out.cam - expected.numpy()).max() < 1e-4
    assert not np.allclose(out.cam, infer(nets[0], x).cam, atol=1e-2)  # not one member's map


def test_a_member_that_fails_its_checksum_or_differs_is_refused_naming_it(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    nets, pre = members(2)
    path = ensemble_file(tmp_path / "e.safetensors", nets, pre)
    with safe_open(str(path), framework="pt") as f:
        meta, state = f.metadata(), {k: f.get_tensor(k) for k in f.keys()}
    name = next(k for k in sorted(state) if k.startswith("members.1.") and state[k].is_floating_point())
    save_file({**state, name: state[name] + 0.01}, str(tmp_path / "tampered.safetensors"), meta)
    with pytest.raises(ModelFileError, match=r"member m1: its weights do not match their checksum") as err:
        load(tmp_path / "tampered.safetensors")
    assert "\n" not in str(err.value)
    info = json.loads(meta["melanoma"])
    info["members"][0]["preprocess"]["image_size"] = 96
    save_file(state, str(tmp_path / "other_size.safetensors"), {**meta, "melanoma": json.dumps(info)})
    with pytest.raises(ModelFileError, match=r"member m0: its architecture or preprocessing differ"):
        load(tmp_path / "other_size.safetensors")


def test_combine_refuses_members_of_another_input_size_or_split(tmp_path):
    from melanoma.ensemble import combine
    from melanoma.errors import UsageError

    nets, pre = members(2)
    small, pre_small = members(1, size=48)
    paths = []
    for i, (net, p, split) in enumerate([(nets[0], pre, "a"), (nets[1], pre, "b"), (small[0], pre_small, "a")]):
        paths.append(tmp_path / f"m{i}.safetensors")
        save(paths[-1], net, ModelInfo("efficientnet_lite0", p, data_fingerprint="f", validation={"split_sha256": split}))
    with pytest.raises(UsageError, match=r"m2.safetensors: a efficientnet_lite0 model at 48 px"):
        combine([str(paths[0]), str(paths[2])])
    with pytest.raises(UsageError, match=r"m1.safetensors: trained on other data or another validation split"):
        combine([str(paths[0]), str(paths[1])])
    # kinds heads: corrected for the training prior in all members or in none (kinds_fit.correct_for_prior)
    save(paths[1], nets[1], ModelInfo("efficientnet_lite0", pre, data_fingerprint="f", validation={"split_sha256": "a"}, kinds_prior={"nv": 1.0}))
    with pytest.raises(UsageError, match=r"m1.safetensors: its kinds head is corrected for its training prior, \S+m0.safetensors's is not corrected"):
        combine([str(paths[0]), str(paths[1])])


@pytest.mark.parametrize("half", [False, True])
def test_onnx_export_of_an_ensemble_matches_torch(tmp_path, half):
    """With float16 storage (`export --onnx` of a file that keeps float16 weights) the graph keeps them as
    float16 too: about half the size, the same numbers."""
    import onnx as onnx_lib

    from melanoma.onnx_model import OnnxModel, export
    from melanoma.preprocess import normalize_nhwc

    nets, pre = members()
    model, info = load(ensemble_file(tmp_path / "e.safetensors", nets, pre, half=half))
    export(model, info, tmp_path / "e.onnx", float16=half)
    stored = {w.data_type for w in onnx_lib.load(str(tmp_path / "e.onnx")).graph.initializer}
    assert (onnx_lib.TensorProto.FLOAT16 in stored) == half
    onnx = OnnxModel(tmp_path / "e.onnx")
    assert [m["name"] for m in onnx.info.members] == ["m0", "m1", "m2"]
    views = np.stack([np.asarray(lesion_image(seed=s).resize((SIZE, SIZE))) for s in range(3)])
    with torch.no_grad():
        torch_out = infer(model, to_batch([lesion_image(seed=s).resize((SIZE, SIZE)) for s in range(3)], pre))
    onnx_out = infer(onnx, normalize_nhwc(views, pre))
    assert np.abs(np.asarray(onnx_out.logits) - torch_out.logits.numpy()).max() < 1e-4
    assert np.abs(onnx_out.cam - torch_out.cam).max() < 1e-3


@pytest.mark.slow
def test_melanoma_ensemble_calibrates_members_of_one_split_as_a_whole(recorded_run, tiny_model_file, data_dir, tmp_path):
    """Two real runs that share the recorded run's split (--split-seed 0, --seed 1): `melanoma ensemble`
    writes one file calibrated on their shared validation images, `describe` names its members, the
    int8 export keeps it one graph, and a member of another architecture is refused in one line (another split:
    test_combine_refuses_members_of_another_input_size_or_split)."""
    from melanoma.onnx_model import OnnxModel

    common = ["--data", str(data_dir), "--arch", "efficientnet_lite0", "--img-size", "96", "--limit", "24", "--epochs", "1",
              "--batch-size", "16", "--val-fraction", "0.25"]

    r = melanoma_cli("train", *common, "--seed", "1", "--split-seed", "0", "--out", tmp_path / "seed1")
    assert r.returncode == 0, r.stderr[-2000:]
    first, second = recorded_run / "model.safetensors", tmp_path / "seed1" / "model.safetensors"
    out = tmp_path / "ensemble.safetensors"
    r = melanoma_cli("ensemble", first, second, "--data", data_dir, "--target-sensitivity", "0.9", "--float16", "--out", out)
    assert r.returncode == 0, r.stderr[-2000:]
    model, info = load(out)
    assert [m["name"] for m in info.members] == ["run", "seed1"] and info.ood_cutoff is not None
    assert info.validation["split_sha256"] == load(first)[1].validation["split_sha256"]
    assert info.target_sensitivity == 0.9 and 0 < info.threshold <= 0.5
    r = melanoma_cli("describe", "--model", out)
    assert r.returncode == 0 and "ensemble of 2 members" in r.stdout and "--seed 1 --split-seed 0" in r.stdout, r.stdout
    r = melanoma_cli("export", "--model", out, "--onnx", tmp_path / "e8.onnx", "--int8", "--data", data_dir, "--calibration-images", "8")
    assert r.returncode == 0, r.stderr[-2000:]
    assert len(OnnxModel(tmp_path / "e8.onnx").info.members) == 2
    r = melanoma_cli("ensemble", first, tiny_model_file, "--data", data_dir, "--target-sensitivity", "0.9", "--out", tmp_path / "bad.safetensors")
    assert r.returncode == 1 and "members must share architecture" in r.stderr and len(r.stderr.strip().splitlines()) == 1, r.stderr
    assert not (tmp_path / "bad.safetensors").exists()


def test_the_api_and_the_page_name_an_ensembles_members(tmp_path, monkeypatch):
    pytest.importorskip("fastapi")
    pytest.importorskip("streamlit")
    from fastapi.testclient import TestClient

    from melanoma.api import create_app

    from .test_app import page

    nets, pre = members(2)
    path = ensemble_file(tmp_path / "e.safetensors", nets, pre, half=True)
    m = TestClient(create_app(str(path))).get("/v1/model").json()
    assert [x["name"] for x in m["members"]] == ["m0", "m1"] and all(len(x["weights_sha256"]) == 64 for x in m["members"])
    sidebar = "\n".join(e.value for e in page(path, monkeypatch).sidebar.markdown)
    assert "the average of 2 efficientnet_lite0 networks" in sidebar and "(m0, m1)" in sidebar


def test_init_refuses_an_ensemble(tmp_path):
    """--init takes one network's weights: an ensemble is refused in one line (distil it with --teacher,
    whose probabilities come from the whole ensemble)."""
    from melanoma.errors import UsageError
    from melanoma.recipe import TrainConfig
    from melanoma.train import start_from

    nets, pre = members(2)
    path = ensemble_file(tmp_path / "e.safetensors", nets, pre)
    config = TrainConfig(arch="efficientnet_lite0", img_size=SIZE, init=str(path))
    with pytest.raises(UsageError, match=r"an ensemble of 2 networks; --init starts from one network's weights"):
        start_from(nets[0], config, pre, "f", "s", par=None)


def test_the_architecture_plot_draws_an_ensemble(tmp_path):
    from melanoma.plots import plot_architecture

    nets, pre = members(2)
    model, info = load(ensemble_file(tmp_path / "e.safetensors", nets, pre))
    plot_architecture(model, info, tmp_path / "architecture.png")
    assert (tmp_path / "architecture.png").stat().st_size > 1000
