"""Evaluation on any labelled images, the shift suite, and the colour matching the model file carries."""

import io
import json
import shutil
from dataclasses import replace

import numpy as np
import pytest
import torch
from PIL import Image

from melanoma.model import build, load, save
from melanoma.modelinfo import ModelInfo
from melanoma.preprocess import TRAINING_LOOK, Preprocess, crop_box, lesion_box, match_colour, model_view, normalize
from melanoma.shifts import SHIFTS, apply

from .conftest import TINY_THRESHOLD, lesion_image, melanoma_cli


def views(n=6, size=96):
    return np.stack([np.asarray(lesion_image((size, size), seed=i)) for i in range(n)])


def shift(name, severity):
    return next(s for s in SHIFTS if s.name == name and s.severity == severity)


# ---- the shift suite ----

def test_every_shift_is_deterministic_and_changes_the_images():
    v = views()
    for s in SHIFTS:
        once = apply(s, v, seed=3)
        assert once.shape == v.shape and once.dtype == np.uint8, s
        assert np.array_equal(once, apply(s, v, seed=3)), s
        assert not np.array_equal(once, v), f"{s} left the images as they were"
    noise = shift("sensor noise", "mild")
    assert not np.array_equal(apply(noise, v, seed=3), apply(noise, v, seed=4))  # the seed is what draws the noise


def test_each_shift_changes_the_image_as_stated():
    v = views(4, 128).astype(np.float64)
    mean = lambda a: np.asarray(a, np.float64).mean()  # noqa: E731
    detail = lambda a: np.abs(np.diff(np.asarray(a, np.float64), axis=2)).mean()  # noqa: E731 - fine texture

    for name in ("lower resolution", "blur"):
        assert detail(apply(shift(name, "strong"), v.astype(np.uint8))) < detail(apply(shift(name, "mild"), v.astype(np.uint8))) < detail(v)
    assert detail(apply(shift("sensor noise", "strong"), v.astype(np.uint8))) > detail(apply(shift("sensor noise", "mild"), v.astype(np.uint8))) > detail(v)
    for name in ("darker", "gamma"):
        assert mean(apply(shift(name, "strong"), v.astype(np.uint8))) < mean(apply(shift(name, "mild"), v.astype(np.uint8))) < mean(v)
    red_blue = lambda a: mean(np.asarray(a)[..., 0]) / mean(np.asarray(a)[..., 2])  # noqa: E731
    assert red_blue(apply(shift("warm light", "mild"), v.astype(np.uint8))) > red_blue(v) > red_blue(apply(shift("cool light", "mild"), v.astype(np.uint8)))

    # closer: the centre 60% blown up; the dark spot (a quarter of the side in radius) grows
    spot = lambda a: (np.asarray(a).mean(-1) < 128).mean()  # noqa: E731
    assert spot(apply(shift("closer", "strong"), v.astype(np.uint8))) > spot(apply(shift("closer", "mild"), v.astype(np.uint8))) > spot(v)
    # farther: the spot shrinks, and the new border is skin, not black
    far = apply(shift("farther", "strong"), v.astype(np.uint8))
    assert spot(far) < spot(v) and far[:, :4, :4].min() > 100
    # a vignette: black corners, untouched centre
    vig = apply(shift("dermoscope vignette", "strong"), v.astype(np.uint8))
    assert vig[:, 0, 0].max() == 0 and np.array_equal(vig[:, 64, 64], v.astype(np.uint8)[:, 64, 64])
    # JPEG at quality 25 loses more than at 60
    jpeg = lambda s: np.abs(apply(shift("JPEG", s), v.astype(np.uint8)).astype(float) - v).mean()  # noqa: E731
    assert jpeg("strong") > jpeg("mild") > 0
    assert len({s.name for s in SHIFTS}) * 2 == len(SHIFTS)


# ---- colour matching, carried by the model file ----

def test_colour_matching_gives_the_reference_look_and_leaves_the_vignette_black():
    im = views(2, 64).copy()
    im[1] = np.clip(im[1] * 0.6 + 30, 0, 255)  # another exposure and contrast
    im[:, :6, :6] = 0  # black corner
    x = torch.from_numpy(im).permute(0, 3, 1, 2).float()
    out = match_colour(x, *TRAINING_LOOK)
    assert torch.equal(out[:, :, :6, :6], x[:, :, :6, :6])
    lit = out[:, :, 10:, 10:].reshape(2, 3, -1)
    assert torch.allclose(lit.mean(-1)[0], lit.mean(-1)[1], atol=6)  # two exposures, one look
    assert torch.allclose(lit.mean(-1)[0] / 255, torch.tensor(TRAINING_LOOK[0]), atol=0.03)


@pytest.fixture(scope="module")
def matched_model_file(tmp_path_factory):
    torch.manual_seed(0)
    model, pre = build("efficientnet_lite0", image_size=64, colour_reference=TRAINING_LOOK, framing="lesion")
    path = tmp_path_factory.mktemp("matched") / "matched.safetensors"
    save(path, model, ModelInfo("efficientnet_lite0", pre, threshold=TINY_THRESHOLD, temperature=1.3))
    return path


@pytest.mark.slow
def test_every_entry_point_applies_the_colour_matching_the_model_file_carries(matched_model_file, tmp_path):
    """train (validation scores), evaluate, predict (CLI and page), ONNX: one preprocessing (colours and framing)."""
    from melanoma.onnx_model import OnnxModel
    from melanoma.predict import analyse, predict_views
    from melanoma.scoring import predict_logits, score_views

    model, info = load(matched_model_file)
    assert info.preprocess.colour_reference == TRAINING_LOOK and info.preprocess.framing == "lesion"
    images = [lesion_image(seed=s) for s in range(3)]
    v = [model_view(im, info.preprocess) for im in images]
    assert not np.array_equal(v[0], model_view(images[0], replace(info.preprocess, framing="centre")))  # framed on the spot
    x = normalize(np.stack(v), info.preprocess)
    bare = normalize(np.stack(v), replace(info.preprocess, colour_reference=None))
    assert not torch.allclose(x, bare)  # the matching does something here
    with torch.no_grad():
        expected = torch.softmax(model.eval()(x) / info.temperature, 1)[:, 1].numpy()

    assert np.allclose(score_views(model, info, v)[0], expected, atol=1e-5)  # evaluate
    assert np.allclose([p.p_malignant for p in predict_views(model, info, np.stack(v))], expected, atol=1e-5)  # predict
    assert np.allclose([analyse(model, info, im)[0].p_malignant for im in images], expected, atol=1e-5)  # the page
    from melanoma.app import check_upload

    png = io.BytesIO()
    images[0].save(png, format="PNG")
    page = check_upload(png.getvalue(), "spot.png", model, info)
    assert page["box"] == lesion_box(images[0]) and page["pred"].p_malignant == pytest.approx(float(expected[0]), abs=1e-5)
    logits = predict_logits(model, v, info.preprocess)  # training's validation
    assert np.allclose(torch.softmax(torch.from_numpy(logits) / info.temperature, 1)[:, 1].numpy(), expected, atol=1e-5)

    for i, im in enumerate(images):
        im.save(tmp_path / f"{i}.png")
    r = melanoma_cli("export", "--onnx", tmp_path / "m.onnx", "--model", matched_model_file)
    assert r.returncode == 0, r.stderr[-2000:]
    onnx = OnnxModel(tmp_path / "m.onnx")
    assert onnx.info.preprocess == info.preprocess
    assert np.allclose([p.p_malignant for p in predict_views(onnx, onnx.info, np.stack(v))], expected, atol=1e-4)  # ONNX


def test_model_files_from_before_colour_matching_and_framing_still_load(tiny_model_file):
    _, info = load(tiny_model_file)
    assert info.preprocess.colour_reference is None and info.preprocess.framing == "centre"
    old = Preprocess.from_dict({"image_size": 64, "mean": [0, 0, 0], "std": [1, 1, 1]})
    assert old.colour_reference is None and old.framing == "centre"


def spot_image(size=(400, 300), centre=(300, 90), radius=20, seed=0) -> Image.Image:
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (215, 165, 150)
    img[(xx - centre[0]) ** 2 + (yy - centre[1]) ** 2 < radius**2] = (80, 45, 35)
    return Image.fromarray(np.clip(img + rng.normal(0, 5, img.shape), 0, 255).astype(np.uint8))


def test_lesion_framing_centres_the_spot_and_keeps_the_square_inside_the_image():
    left, top, right, bottom = lesion_box(spot_image())
    assert right - left == bottom - top == 150  # half the shorter side: the closest it frames (spot 40 px * 1.5 is less)
    assert 0 <= left and right <= 400 and 0 <= top and bottom <= 300
    assert abs((left + right) / 2 - 300) <= 3 and abs((top + bottom) / 2 - 90) <= 3  # the spot in the middle
    left, top, right, bottom = lesion_box(spot_image(centre=(390, 10)))  # a spot in the corner: the square stops at the edges
    assert (right, top) == (400, 0) and right - left == 150
    assert lesion_box(spot_image(radius=0)) == crop_box(400, 300)  # no spot: the centred square
    assert lesion_box(spot_image(size=(300, 300), centre=(150, 150), radius=130)) == (0, 0, 300, 300)  # a big spot: all of it
    # a spot photographed from farther away is seen at about the same size
    pre = Preprocess(96, (0.5,) * 3, (0.5,) * 3, framing="lesion")
    near, far = spot_image((300, 300), (150, 150), 80), spot_image((300, 300), (150, 150), 55)
    share = lambda im: (model_view(im, pre).mean(-1) < 128).mean()  # noqa: E731
    assert share(far) == pytest.approx(share(near), abs=0.05)


# ---- evaluate on any labelled images ----

@pytest.fixture(scope="module")
def folder_set(small_data, tmp_path_factory):
    """Benign/ and Malignant/ straight in a folder (no train/ or test/), one broken file."""
    root = tmp_path_factory.mktemp("folder_set")
    for cls in ("Benign", "Malignant"):
        shutil.copytree(small_data / "test" / cls, root / cls)
    return root


@pytest.mark.slow
def test_evaluate_a_folder_of_benign_and_malignant_with_the_shift_suite(folder_set, tiny_model_file, tmp_path):
    out = tmp_path / "eval"
    r = melanoma_cli("evaluate", "--model", tiny_model_file, "--data", folder_set, "--out", out, "--bootstrap", "50", "--shifts")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "broken.jpg" in r.stderr and "Traceback" not in r.stderr
    m = json.loads((out / "metrics.json").read_text())
    assert m["layout"] == "folders" and m["clean_test"] is None and m["near_duplicates_excluded"] is None
    assert m["test"]["images"] == 24 and m["test"]["benign"] == 12 and m["test"]["roc_auc_ci95"]
    suite = m["shifts"]
    assert suite["images"] == 24 and len(suite["shifts"]) == len(SHIFTS)
    assert suite["unchanged"]["flipped"] == 0
    for row in suite["shifts"]:
        assert 0 <= row["roc_auc"] <= 1 and 0 <= row["specificity"] <= 1 and 0 <= row["flipped"] <= 1
    assert suite["unchanged"]["roc_auc"] == pytest.approx(m["test"]["roc_auc"])
    assert len({row["roc_auc"] for row in suite["shifts"]}) > 1  # the changes reach the model
    for plot in ("confusion_matrix", "roc_curve", "reliability", "gradcam_examples", "shifts"):
        assert (out / f"{plot}.png").stat().st_size > 1000
    assert (out / "shifts.md").read_text().count("\n| ") == len(SHIFTS) // 2 + 2  # header, rule, a row per change
    assert "Shift suite" in r.stdout and "lower resolution" in r.stdout
    rows = (out / "predictions.csv").read_text().splitlines()
    assert rows[0] == "path,label,p_malignant,ood_score,verdict,p_other_cancer,top_kind" and len(rows) == 25 and rows[1].startswith("Benign/")


@pytest.mark.slow
def test_evaluate_a_labels_csv_and_its_errors(folder_set, tiny_model_file, tmp_path):
    files = sorted(p.relative_to(folder_set).as_posix() for p in folder_set.rglob("*.jpg") if p.name != "broken.jpg")
    csv = folder_set.parent / "labels.csv"
    row = lambda i, f: f"{folder_set.name}/{f},{'malignant' if f.startswith('M') else 'BENIGN'},{'MEL' if f.startswith('M') else 'NV' if i % 3 else 'BKL'}\n"  # noqa: E731
    csv.write_text("file,label,Source\n" + "".join(row(i, f) for i, f in enumerate(files)))
    r = melanoma_cli("evaluate", "--model", tiny_model_file, "--labels", csv, "--by-kind", "source", "--out", tmp_path / "csv", "--bootstrap", "0")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "csv" / "metrics.json").read_text())
    assert m["layout"] == "csv" and m["test"]["images"] == 24 and m["test"]["malignant"] == 12
    kinds = {(k["class"], k["kind"]): k for k in m["kinds"]}
    assert sorted(kinds) == [("Benign", "BKL"), ("Benign", "NV"), ("Malignant", "MEL")]
    assert kinds["Benign", "BKL"]["images"] + kinds["Benign", "NV"]["images"] == 12 and kinds["Malignant", "MEL"]["images"] == 12
    assert kinds["Malignant", "MEL"]["roc_auc"] == pytest.approx(m["test"]["roc_auc"])  # one kind: all of its class
    assert kinds["Malignant", "MEL"]["called_right"] == pytest.approx(m["test"]["sensitivity"])
    assert (tmp_path / "csv" / "kinds.md").read_text().count("| Benign |") == 2 and "| Benign | BKL |" in r.stdout

    # the folder and the CSV give the same estimates
    r = melanoma_cli("evaluate", "--model", tiny_model_file, "--data", folder_set, "--out", tmp_path / "dir", "--bootstrap", "0")
    assert json.loads((tmp_path / "dir" / "metrics.json").read_text())["test"]["roc_auc"] == pytest.approx(m["test"]["roc_auc"])

    bad = {
        "missing.csv": ("path,label\nnowhere.jpg,Benign\n", "1 listed image(s) not found (first: row 2 'nowhere.jpg')"),
        "unknown.csv": (f"path,label\n{folder_set.name}/{files[0]},mole\n", "row 2: unknown label 'mole'"),
        "header.csv": (f"image,class\n{folder_set.name}/{files[0]},Benign\n", "needs a header with path (or file) and label"),
        "kind.csv": (f"path,label\n{folder_set.name}/{files[0]},Benign\n", "no column 'diagnosis' for --by-kind (columns: path, label)"),
    }
    for name, (text, message) in bad.items():
        (tmp_path / name).write_text(text)
        (tmp_path / "x" / name).mkdir(parents=True)
        r = melanoma_cli("evaluate", "--model", tiny_model_file, "--labels", tmp_path / name, "--out", tmp_path / "x" / name,
                         *(["--by-kind", "diagnosis"] if name == "kind.csv" else []))
        assert r.returncode != 0 and message in r.stderr and "Traceback" not in r.stderr, (name, r.stderr[-500:])
        assert len(r.stderr.strip().splitlines()) == 1, r.stderr


@pytest.mark.slow
def test_evaluate_refuses_a_folder_without_labels_and_notes_a_single_class(folder_set, tiny_model_file, tmp_path):
    empty = tmp_path / "photos"
    empty.mkdir()
    Image.fromarray(views(1)[0]).save(empty / "a.png")
    r = melanoma_cli("evaluate", "--model", tiny_model_file, "--data", empty, "--out", tmp_path / "e1")
    assert r.returncode != 0 and "no labelled images found" in r.stderr and "Traceback" not in r.stderr

    benign_only = tmp_path / "benign_only"
    shutil.copytree(folder_set / "Benign", benign_only / "Benign")
    r = melanoma_cli("evaluate", "--model", tiny_model_file, "--data", benign_only, "--out", tmp_path / "e2", "--shifts", "--bootstrap", "20")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "e2" / "metrics.json").read_text())
    assert m["test"]["roc_auc"] is None and m["test"]["specificity"] is not None
    assert "note: only Benign images: no ROC AUC" in r.stdout
    assert all(row["roc_auc"] is None and row["sensitivity"] is None for row in m["shifts"]["shifts"])


def test_kinds_report_scores_each_kind_against_the_other_class():
    from melanoma.metrics import kinds_report

    y = np.array([0, 0, 0, 0, 1, 1])
    p = np.array([0.1, 0.2, 0.7, 0.9, 0.8, 0.6])
    rows = kinds_report(y, p, ["nevus", "nevus", "keratosis", "keratosis", "mel", "mel"], 0.5, ("Benign", "Malignant"), bootstrap=0)
    by = {r["kind"]: r for r in rows}
    assert [r["kind"] for r in rows] == ["keratosis", "nevus", "mel"]
    assert by["nevus"]["roc_auc"] == 1.0 and by["nevus"]["called_right"] == 1.0
    assert by["keratosis"]["roc_auc"] == 0.25 and by["keratosis"]["called_right"] == 0.0  # 0.7 and 0.9 against 0.8 and 0.6
    assert by["mel"]["roc_auc"] == pytest.approx(0.625) and by["mel"]["called_right"] == 1.0 and by["mel"]["images"] == 2


def test_init_may_change_colour_matching_and_framing_but_a_teacher_may_not():
    """--init takes only the weights (a --framing lesion run may start from the bundled model);
    a teacher's probabilities are computed on this run's views, so its preprocessing must match."""
    from melanoma.errors import UsageError
    from melanoma.lineage import check_same_run
    from melanoma.recipe import TrainConfig

    _, old = build("efficientnet_lite0", image_size=64)
    _, new = build("efficientnet_lite0", image_size=64, colour_reference=TRAINING_LOOK, framing="lesion")
    info = ModelInfo("efficientnet_lite0", old, threshold=0.3, temperature=1.0, data_fingerprint="f",
                     validation={"split_sha256": "s"})
    config = TrainConfig(arch="efficientnet_lite0", img_size=64)
    check_same_run("init.safetensors", info, config, new, "f", "s", weights_only=True)
    with pytest.raises(UsageError, match="give the same --arch and --img-size"):
        check_same_run("teacher.safetensors", info, config, new, "f", "s")
    _, other_size = build("efficientnet_lite0", image_size=96, framing="lesion")
    with pytest.raises(UsageError):
        check_same_run("init.safetensors", info, config, other_size, "f", "s", weights_only=True)


def test_library_errors_are_exceptions_and_the_cli_makes_them_one_line(tmp_path):
    """Library code raises the package's own error (a caller can catch it; the process goes on);
    `cli.main` alone prints it in one line and exits 1."""
    from melanoma.cli import main
    from melanoma.data import labelled_set, resolve_data_dir
    from melanoma.errors import UsageError

    with pytest.raises(UsageError, match="no train/ or test/ folder here"):
        resolve_data_dir(tmp_path)
    with pytest.raises(UsageError, match="no labelled images found"):
        labelled_set(tmp_path)
    with pytest.raises(UsageError, match="--by-kind reads a column of the labels CSV"):
        labelled_set(tmp_path, kind_column="diagnosis")
    assert main(["evaluate", "--data", str(tmp_path), "--out", str(tmp_path / "out")]) == 1
