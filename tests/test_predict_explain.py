import csv

import numpy as np
import torch
from PIL import Image

from melanoma.explain import grad_cam, infer, overlay
from melanoma.model import linear_head, load
from melanoma.predict import explain
from melanoma.preprocess import model_view

from .conftest import TINY_THRESHOLD, lesion_image, melanoma_cli, to_batch


def test_grad_cam_shape_range_and_hooks_released(tiny_model_file):
    model, info = load(tiny_model_file)
    x = to_batch([lesion_image(seed=1), lesion_image(seed=2)], info.preprocess)
    cam = grad_cam(model, x)
    assert cam.shape == (2, 64, 64) and cam.min() >= 0 and cam.max() <= 1
    assert all(not m._forward_hooks and not m._backward_hooks for m in model.modules())


def test_one_pass_cam_equals_grad_cam_on_the_bundled_model(data_dir):
    """EfficientNet-Lite0's head is pooling + linear: the class activation map from one forward pass
    must equal captum's Grad-CAM (which needs a backward pass), for either class, on real images."""
    import torch

    model, info = load()
    assert linear_head(model) is not None
    images = [Image.open(f) for cls in ("Benign", "Malignant") for f in sorted((data_dir / "test" / cls).glob("*.jpg"))[:3]]
    x = to_batch(images, info.preprocess)
    for target in (0, 1):
        logits, cam, _, _ = infer(model, x, target)
        reference = grad_cam(model, x, target)
        assert np.abs(cam - reference).max() < 1e-4
        assert cam.max() == 1.0 and (cam > 0.05).mean() > 0.05  # not a blank map
    with torch.no_grad():
        assert torch.allclose(logits, model(x), atol=1e-5)


def test_seed_cnn_map_is_captum_grad_cam_of_the_margin(tiny_model_file):
    """Another head (Dense 256 + ReLU: no one-pass shortcut): the map is Grad-CAM of the target
    logit minus the other one, computed here with captum directly, for what raised the estimate (1)
    and what lowered it (0); it is not the map of the malignant logit alone."""
    import torch
    from captum.attr import LayerGradCam

    model, info = load(tiny_model_file)
    assert linear_head(model) is None
    x = to_batch([lesion_image(seed=s) for s in (3, 4, 5, 6)], info.preprocess)

    def normalised(a: torch.Tensor) -> np.ndarray:
        a = torch.nn.functional.interpolate(a.detach(), size=x.shape[-2:], mode="bilinear")[:, 0].numpy()
        peak = a.reshape(len(a), -1).max(1).reshape(-1, 1, 1)
        return np.where(peak > 0, a / np.maximum(peak, 1e-12), 0)

    blank, differs = 0, 0.0
    for target in (0, 1):
        cam = infer(model, x, target).cam
        ref = normalised(LayerGradCam(lambda t: (lambda z: z[:, target] - z[:, 1 - target])(model(t)), model.features).attribute(x, relu_attributions=True))
        assert cam.shape == ref.shape and np.abs(cam - ref).max() < 1e-4
        blank += int((cam.reshape(len(cam), -1).max(1) == 0).sum())
        one_logit = normalised(LayerGradCam(model, model.features).attribute(x, target=target, relu_attributions=True))
        differs = max(differs, float(np.abs(cam - one_logit).max()))
    assert blank < 2 * len(x) and differs > 0.05  # some map is not blank, and the margin's is not one logit's


def test_overlay_is_pure_and_fills_only_the_model_view():
    image = np.full((30, 40, 3), 200, np.uint8)
    before = image.copy()
    cam = np.zeros((8, 8), np.float32)
    cam[4:, 4:] = 1.0
    out = overlay(image, cam, box=(5, 0, 35, 30), alpha=0.5)
    assert np.array_equal(image, before) and out.shape == image.shape
    assert (out[:, :5] < 100).all()  # outside the model's view: darkened
    assert not np.array_equal(out[25, 30], out[2, 8])  # hot and cold corners differ


def test_explain_keeps_the_image_resolution(tiny_model_file):
    model, info = load(tiny_model_file)
    pred, ov = explain(model, info, lesion_image((300, 200)))
    assert ov.shape == (200, 300, 3) and 0.0 <= pred.p_malignant <= 1.0
    assert pred.label == ("Malignant" if pred.p_malignant >= info.threshold else "Benign")


def test_predict_cli_on_real_images_with_a_bad_file(tmp_path, data_dir, tiny_model_file):
    folder = tmp_path / "in"
    folder.mkdir()
    reals = sorted((data_dir / "test" / "Malignant").glob("*.jpg"))[:3] + sorted((data_dir / "test" / "Benign").glob("*.jpg"))[:2]
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really")
    out_csv, cams = tmp_path / "new_folder" / "p.csv", tmp_path / "cams"
    r = melanoma_cli("predict", *reals, folder, "--model", tiny_model_file, "--csv", out_csv, "--cam", cams)
    assert r.returncode == 1
    assert "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    with open(out_csv) as f:
        rows = list(csv.DictReader(f))
    assert [row["path"] for row in rows] == [str(p) for p in reals]
    assert list(rows[0])[:3] == ["path", "p_malignant", "label"]
    for row in rows:
        assert row["label"] == ("Malignant" if float(row["p_malignant"]) >= TINY_THRESHOLD else "Benign")
    pngs = sorted(cams.rglob("*.png"))  # the inputs' folders mirrored under cams
    assert len(pngs) == 5 and Image.open(pngs[0]).size == (224, 224)
    assert len(r.stdout.strip().splitlines()) == 5


def test_maps_are_resized_as_torch_resizes_them():
    """explain's bilinear resizing of a map to the input's size (OpenCV, so an ONNX model needs no torch)
    is torch's interpolate(align_corners=False), then scaled to a peak of 1."""
    from melanoma.inference import to_input_size

    rng = np.random.default_rng(0)
    for h, side in ((7, 224), (12, 100), (8, 260)):
        cam = rng.random((3, 1, h, h)).astype(np.float32)
        ref = torch.nn.functional.interpolate(torch.from_numpy(cam), size=(side, side), mode="bilinear", align_corners=False)[:, 0].numpy()
        assert np.abs(to_input_size(cam, (side, side)) - ref / ref.reshape(3, -1).max(1).reshape(-1, 1, 1)).max() < 1e-5
    assert to_input_size(np.zeros((0, 7, 7), np.float32), (224, 224)).shape == (0, 224, 224)


def test_predict_decodes_ahead_in_threads_and_keeps_the_order(tmp_path, data_dir, tiny_model_file, capsys):
    """Several batches with a bad file among them: the same lines, in the order found, whether images are
    decoded in the calling thread (workers 0) or by threads ahead of the model."""
    from melanoma.predict import run

    reals = sorted((data_dir / "test" / "Benign").glob("*.jpg"))[:40]
    broken = tmp_path / "broken.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 not really")
    paths = [*reals[:20], broken, *reals[20:]]
    model, info = load(tiny_model_file)
    outputs = []
    for workers in (0, 1, 3):
        assert run(paths, model, info, None, None, batch_size=8, workers=workers) == 1
        out, err = capsys.readouterr()
        assert [line.split("\t")[0] for line in out.splitlines()] == [str(p) for p in reals]
        assert err.count("broken.jpg") == 1 and "1 of 41 path(s) could not be classified" in err
        outputs.append(out)
    assert outputs[0] == outputs[1] == outputs[2]


def test_predict_cli_model_errors(tmp_path, data_dir):
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"garbage")
    r = melanoma_cli("predict", data_dir / "test" / "Benign", "--model", bad)
    assert r.returncode == 1 and "not a usable melanoma model file" in r.stderr and "Traceback" not in r.stderr


def test_concurrent_passes_on_a_shared_captum_model_give_each_its_own_map(tiny_model_file):
    """seed_cnn's head needs captum, whose hooks sit on the shared model: passes from other threads
    (with or without maps) must not run through them. Each map equals the one from a single thread."""
    from concurrent.futures import ThreadPoolExecutor

    model, info = load(tiny_model_file)
    batches = [to_batch([lesion_image(seed=s)], info.preprocess) for s in range(16)]
    alone = [infer(model, x).cam for x in batches]
    with ThreadPoolExecutor(8) as pool:
        together = list(pool.map(lambda k: (infer(model, batches[k]).cam, infer(model, batches[k], cam=False).logits), list(range(16)) * 4))
    for k, (cam, logits) in enumerate(together):
        np.testing.assert_allclose(cam, alone[k % 16], atol=1e-5)
        assert torch.equal(logits, infer(model, batches[k % 16], cam=False).logits)


def test_overlays_of_two_inputs_never_share_a_file(tmp_path, data_dir):
    """`a_b/c.jpg` and `a/b_c.jpg` once both became `a_b_c.jpg.cam.png`; overlays now mirror the inputs' folders."""
    src = sorted((data_dir / "test" / "Benign").glob("*.jpg"))[:2]
    for rel, f in (("a_b/c.jpg", src[0]), ("a/b_c.jpg", src[1]), ("a/Benign/1.png", src[0])):
        (tmp_path / "in" / rel).parent.mkdir(parents=True, exist_ok=True)
        Image.open(f).save(tmp_path / "in" / rel)
    r = melanoma_cli("predict", tmp_path / "in", "--cam", tmp_path / "cams")
    assert r.returncode == 0, r.stderr[-2000:]
    written = sorted(str(p.relative_to(tmp_path / "cams")) for p in (tmp_path / "cams").rglob("*.png"))
    assert written == ["a/Benign/1.png.cam.png", "a/b_c.jpg.cam.png", "a_b/c.jpg.cam.png"]
    assert Image.open(tmp_path / "cams" / "a_b" / "c.jpg.cam.png").size == Image.open(src[0]).size


def test_faithfulness_deletes_whole_cells_in_map_order(data_dir, monkeypatch, tiny_model_file):
    """The deletion test: every order starts from the unchanged image; most- and least-relevant
    first delete disjoint cells (the ranked map reversed); it is seeded; heads without a linear
    layer get None."""
    from melanoma import experiments
    from melanoma.images import load_image

    model, info = load()
    files = sorted((data_dir / "test" / "Malignant").glob("*.jpg"))[:3] + sorted((data_dir / "test" / "Benign").glob("*.jpg"))[:2]
    views = [model_view(load_image(f), info.preprocess) for f in files]
    scored = []
    real = experiments.score_views

    def spy(model, info, views, cam=True):
        scored.append(np.stack(views))
        return real(model, info, views, cam=cam)
    monkeypatch.setattr(experiments, "score_views", spy)
    r = experiments.faithfulness(model, info, views, 4, seed=1)
    assert r["images"] == 4 and r["cells"] == 49 and r == experiments.faithfulness(model, info, views, 4, seed=1)
    starts = {r[k]["mean_curve"][0] for k in ("margin", "malignant_logit", "random")} | {r["margin"]["lerf_mean_curve"][0]}
    assert len(starts) == 1
    assert abs(r["margin"]["gap"] - (r["margin"]["lerf_score"] - r["margin"]["deletion_score"])) < 1e-12
    # the first two scoring calls of a batch are the margin map's MoRF and LeRF: at 50%, 24 of 49
    # cells each, disjoint, so together they change at most 48 cells' worth of the image
    morf, lerf = scored[0].reshape(4, 6, 224, 224, 3)[:, 5], scored[1].reshape(4, 6, 224, 224, 3)[:, 5]
    unchanged = scored[0].reshape(4, 6, 224, 224, 3)[:, 0]
    changed_morf = (morf != unchanged).any(-1)
    changed_lerf = (lerf != unchanged).any(-1)
    assert not (changed_morf & changed_lerf).any()
    assert (changed_morf.reshape(4, 7, 32, 7, 32).any((2, 4)).sum((1, 2)) <= 24).all()
    tiny, tiny_info = load(tiny_model_file)
    assert experiments.faithfulness(tiny, tiny_info, views, 4) is None
