"""ONNX export and prediction through ONNX Runtime agree with torch on the real test split."""

import csv
import json
import shutil
import subprocess
import sys

import numpy as np
import pytest

from melanoma.images import find_images
from melanoma.model import load
from melanoma.modelinfo import BUNDLED_ONNX
from melanoma.onnx_model import OnnxModel
from melanoma.predict import explain, inference_streams, label_of

from .conftest import ROOT, melanoma_cli


@pytest.fixture(scope="module")
def bundled_onnx(tmp_path_factory):
    """The bundled model's float ONNX graph as the package ships it (test_bundled_model.py holds it to be the bundled
    file exported: its record, its source's digest, its estimates; the export itself is run on small models here,
    in test_kinds.py and test_ensemble.py), copied so that no test can alter the shipped file."""
    path = tmp_path_factory.mktemp("onnx") / "bundled.onnx"
    shutil.copy(BUNDLED_ONNX, path)
    return path


def read_csv(path):
    with open(path) as f:
        return {row["path"]: (float(row["p_malignant"]), row["label"]) for row in csv.DictReader(f)}


@pytest.mark.slow
def test_onnx_runtime_matches_torch_on_the_test_split(bundled_onnx, data_dir, tmp_path):
    """`melanoma predict` with the ONNX export against the torch model's own predictions of the test
    split, as `melanoma evaluate --out docs/results` kept them (test_bundled_model.py scores the torch
    model again and holds it to that file, image by image)."""
    test = data_dir / "test"
    r = melanoma_cli("predict", test, "--model", bundled_onnx, "--csv", tmp_path / "onnx.csv")
    assert r.returncode == 0, r.stderr[-2000:]
    onnx_rows = read_csv(tmp_path / "onnx.csv")
    with open(ROOT / "docs" / "results" / "predictions.csv") as f:
        torch_rows = {str(data_dir / row["path"]): row for row in csv.DictReader(f)}
    assert len(onnx_rows) == 2000 and torch_rows.keys() == onnx_rows.keys()
    # batches predicted side by side in threads still come out in the order the files were found
    assert list(onnx_rows) == [str(f) for f in find_images([test])[0]]
    diff = max(abs(float(torch_rows[k]["p_malignant"]) - onnx_rows[k][0]) for k in torch_rows)
    assert diff <= 1e-4
    with open(tmp_path / "onnx.csv") as f:
        ood = [(float(torch_rows[row["path"]]["ood_score"]), float(row["ood_score"])) for row in csv.DictReader(f)]
    assert max(abs(x - y) / x for x, y in ood) < 1e-3  # the OOD score is an output of the graph too
    # verdicts agree except where the probability sits within rounding of the threshold
    _, info = load()
    for k, (p, label) in onnx_rows.items():
        assert label == label_of(float(torch_rows[k]["p_malignant"]), info) or abs(p - info.threshold) < 1e-4


def test_onnx_grad_cam_overlay_matches_torch(bundled_onnx, data_dir):
    from PIL import Image

    image = Image.open(sorted((data_dir / "test" / "Malignant").glob("*.jpg"))[0]).convert("RGB")
    model, info = load()
    onnx = OnnxModel(bundled_onnx)
    assert onnx.info == info
    (p_torch, ov_torch), (p_onnx, ov_onnx) = explain(model, info, image), explain(onnx, onnx.info, image)
    assert abs(p_torch.p_malignant - p_onnx.p_malignant) < 1e-4
    assert np.abs(ov_torch.astype(int) - ov_onnx.astype(int)).max() <= 2  # uint8 rounding of the same map


def test_bad_onnx_files_get_a_clear_error(tmp_path, data_dir):
    image = sorted((data_dir / "test" / "Benign").glob("*.jpg"))[0]
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    for path in (junk, tmp_path / "missing.onnx"):
        r = melanoma_cli("predict", image, "--model", path)
        assert r.returncode == 1 and f"error: {path}" in r.stderr and "Traceback" not in r.stderr


def test_a_damaged_onnx_file_is_refused(bundled_onnx, tmp_path, data_dir):
    """A flipped byte in the weights still runs in ONNX Runtime; the digest written at export catches it."""
    image = sorted((data_dir / "test" / "Benign").glob("*.jpg"))[0]
    blob = bytearray(bundled_onnx.read_bytes())
    blob[len(blob) // 2] ^= 0x01
    damaged = tmp_path / "damaged.onnx"
    damaged.write_bytes(bytes(blob))
    r = melanoma_cli("predict", image, "--model", damaged)
    assert r.returncode == 1 and f"error: {damaged}" in r.stderr and "digest" in r.stderr and "Traceback" not in r.stderr
    assert r.stderr.count("\n") == 1


def test_an_onnx_file_without_maps_serves_every_entry_point_with_a_note(tiny_model_file, tmp_path, data_dir):
    """One loader for every entry point: predict, evaluate and the API take the .onnx file as they take
    a .safetensors one; the overlays it cannot give are a one-line note (an empty field), never a crash."""
    from fastapi.testclient import TestClient

    from melanoma.api import create_app

    images = [f for c in ("Benign", "Malignant") for f in sorted((data_dir / "test" / c).glob("*.jpg"))[:3]]
    onnx = tmp_path / "tiny.onnx"
    r = melanoma_cli("export", "--onnx", onnx, "--model", tiny_model_file)  # seed_cnn: no one-pass map
    assert r.returncode == 0, r.stderr[-2000:]
    r = melanoma_cli("predict", *images, "--model", onnx, "--cam", tmp_path / "cams")
    assert r.returncode == 0 and r.stdout.count("\n") == 6 and "no Grad-CAM map" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "cams").exists()
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\n" + "".join(f"{f},{f.parent.name}\n" for f in images))
    r = melanoma_cli("evaluate", "--model", onnx, "--labels", labels, "--bootstrap", "0", "--out", tmp_path / "eval")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert m["test"]["images"] == 6 and m["attention"] is None and any("no Grad-CAM map" in n for n in m["notes"])
    assert not (tmp_path / "eval" / "gradcam_examples.png").exists()
    with TestClient(create_app(str(onnx))) as client:
        about = client.get("/v1/model").json()
        assert about["engine"] == "onnx" and about["maps"] is False and about["file_sha256"]
        with open(images[0], "rb") as f:
            answer = client.post("/v1/predict?cam=true", files=[("file", (images[0].name, f.read()))])
        assert answer.status_code == 200
        entry = answer.json()["results"][0]
        assert "cam_png" not in entry and 0 <= entry["p_malignant"] <= 1


def test_predict_on_an_onnx_file_never_imports_torch(bundled_onnx, data_dir, tmp_path):
    """An .onnx file is run by numpy, OpenCV, Pillow and ONNX Runtime alone: `melanoma predict` on it (with
    overlays), `--version` and `predict --help` never import torch (a second of start-up)."""
    images = [f for c in ("Benign", "Malignant") for f in sorted((data_dir / "test" / c).glob("*.jpg"))[:2]]
    watch = "import sys\nfrom melanoma.cli import main\ntry:\n    sys.exit(main(sys.argv[1:]))\nfinally:\n    print('torch' in sys.modules, file=sys.stderr)\n"
    for args in (["predict", *images, "--model", bundled_onnx, "--csv", tmp_path / "p.csv", "--cam", tmp_path / "cams"], ["--version"],
                 ["predict", "--help"]):
        r = subprocess.run([sys.executable, "-c", watch, *map(str, args)], capture_output=True, text=True, timeout=300)
        assert r.returncode == 0 and r.stderr.splitlines()[-1] == "False", (args, r.stderr[-2000:])
    assert len(list((tmp_path / "cams").rglob("*.png"))) == 4 and len(read_csv(tmp_path / "p.csv")) == 4


def test_architecture_names_without_torch_are_the_models():
    from melanoma.model import ARCHITECTURES
    from melanoma.modelinfo import ARCHITECTURE_NAMES

    assert ARCHITECTURE_NAMES == tuple(ARCHITECTURES)


def test_inference_streams_split_the_cores():
    assert inference_streams(cores=1) == (1, 1)
    assert inference_streams(cores=2) == (2, 1)
    assert inference_streams(cores=16) == (4, 4)
    assert inference_streams(cam=True, cores=16) == (1, 16)  # overlays: one batch at a time


@pytest.fixture(scope="module")
def bundled_int8(tmp_path_factory, data_dir):
    """`quantize` (what `export --int8` and the bench run) on the bundled model, ranges and calibration from a
    few Kaggle train images (the product uses the model's validation images); with those views and labels."""
    from melanoma.images import load_image
    from melanoma.int8 import quantize
    from melanoma.preprocess import model_view

    model, info = load()
    views = lambda folder, n: np.stack([model_view(load_image(f), info.preprocess)  # noqa: E731
                                        for c in ("Benign", "Malignant") for f in sorted((data_dir / folder / c).glob("*.jpg"))[:n]])
    own = views("train", 24)
    labels = np.repeat([0, 1], 24)
    path = tmp_path_factory.mktemp("int8") / "int8.onnx"
    refitted = quantize(model, info, own[:24], (own, labels), path)  # ranges collected in three chunks of 8
    return model, info, refitted, path, own, views("test", 40)


@pytest.mark.slow
def test_int8_export_carries_the_model_and_is_calibrated_as_itself(bundled_int8):
    """A file that loads with its digest checked, marked int8, with the map and the OOD score, calibrated as
    itself (its own temperature, threshold and OOD cut-off from its own scores)."""
    from melanoma.int8 import KEEP_FLOAT_FIRST, ranks_worse
    from melanoma.predict import predict_views

    model, info, refitted, path, own, _ = bundled_int8
    int8 = OnnxModel(path)
    assert int8.int8 and int8.maps and "ood" in int8.output_names and int8.info.to_json() == refitted.to_json()
    v = int8.info.validation
    assert v["int8"] and v["images"] == 48 and v["float"]["auc"] == info.validation["auc"]
    assert v["split_sha256"] == info.validation["split_sha256"]  # still names the float model's split
    assert v["float_convs_first"] in KEEP_FLOAT_FIRST  # how many of the first convolutions stayed float
    # more stay float only while the int8 graph ranks these views worse than the float graph did
    assert not ranks_worse(v) or v["float_convs_first"] == KEEP_FLOAT_FIRST[-1]
    assert 0.5 < v["float_verdicts_kept"] <= 1  # the float graph's verdicts on the same views that it kept
    assert int8.info.temperature != info.temperature and int8.info.ood_cutoff != info.ood_cutoff
    own_preds = predict_views(int8, int8.info, own)
    assert v["sensitivity"] >= info.target_sensitivity  # the threshold was chosen on its own scores
    assert np.mean([p.label == "Malignant" for p in own_preds[24:]]) == pytest.approx(v["sensitivity"])
    assert sum(p.ood for p in own_preds) <= 1  # the cut-off is the 99th percentile of these very scores


@pytest.mark.slow
def test_int8_export_keeps_the_float_models_verdicts(bundled_int8):
    """The int8 graph's verdicts stay those of the float model on real test images (at least 95%). Quantised from the
    stem on, the bundled model (other_a_t94) kept 91.0% on the 2,000 test images: `quantize` keeps more of the first
    convolutions float when the int8 graph ranks worse (docs/speed.md#int8)."""
    from melanoma.predict import predict_views

    model, info, _, path, _, test = bundled_int8
    int8 = OnnxModel(path)
    exact, quantised = predict_views(model, info, test), predict_views(int8, int8.info, test)
    assert np.mean([a.label == b.label for a, b in zip(exact, quantised)]) >= 0.95
    assert np.abs(np.array([a.p_malignant - b.p_malignant for a, b in zip(exact, quantised)])).mean() < 0.05


def test_int8_calibration_chunks_divide_the_images():
    """ONNX Runtime's strided calibration takes equal chunks: the largest of at most CALIBRATION_CHUNK that divides."""
    from melanoma.int8 import CALIBRATION_CHUNK, chunk

    assert chunk(128) == CALIBRATION_CHUNK == 8 and chunk(24) == 8 and chunk(20) == 5 and chunk(7) == 7 and chunk(127) == 1 and chunk(1) == 1


def test_int8_export_refuses_other_training_data(small_data, tmp_path):
    """The calibration images are drawn again from the training data the model records: for the bundled model,
    the sources file it names (read from where the command runs); here one that names other images."""
    from melanoma.model import load

    named = load()[1].train_config.get("sources")
    if named:
        (tmp_path / named).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / named).write_text(f'[[source]]\nname = "kaggle"\npath = "{small_data}"\nlicence = "CC0-1.0"\n')
    r = melanoma_cli("export", "--int8", "--onnx", tmp_path / "int8.onnx", *([] if named else ["--data", small_data]), cwd=tmp_path)
    assert r.returncode == 1 and "not the training images and validation split the model was trained with" in r.stderr
    assert "Traceback" not in r.stderr and not (tmp_path / "int8.onnx").exists()


def test_evaluate_reads_an_onnx_file(bundled_onnx, small_data, tmp_path):
    r = melanoma_cli("evaluate", "--model", bundled_onnx, "--data", small_data / "test", "--bootstrap", "0", "--out", tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert m["test"]["images"] == 24 and m["model_sha256"] and not (tmp_path / "architecture.png").exists()


def test_the_deprecated_engine_option_still_works_with_a_warning_naming_the_new_way(bundled_onnx, data_dir):
    image = sorted((data_dir / "test" / "Benign").glob("*.jpg"))[0]
    r = melanoma_cli("predict", image, "--engine", "onnx", "--model", bundled_onnx)
    plain = melanoma_cli("predict", image, "--model", bundled_onnx)
    assert r.returncode == 0 and r.stdout == plain.stdout and "--engine is deprecated and goes in melanoma 0.2.0" in r.stderr
    r = melanoma_cli("predict", image, "--engine", "onnx")  # the bundled .safetensors file: say what to give instead, in one line
    assert r.returncode == 2 and "give --model FILE.onnx" in r.stderr and "Traceback" not in r.stderr


def test_the_kept_int8_export_keeps_the_float_verdicts_on_the_test_images():
    """Issue 37's bar: the bundled model's int8 export (docs/int8/kaggle, `melanoma evaluate --model FILE.onnx`) gives the
    float model's verdict (docs/results), each at its own threshold, on at least 99% of the 2,000 test images."""
    import csv
    import json

    from .conftest import ROOT

    def verdicts(folder: str) -> dict[str, bool]:
        threshold = json.loads((ROOT / folder / "metrics.json").read_text())["test"]["threshold"]
        with open(ROOT / folder / "predictions.csv", newline="") as f:
            return {r["path"]: float(r["p_malignant"]) >= threshold for r in csv.DictReader(f)}

    exact, quantised = verdicts("docs/results"), verdicts("docs/int8/kaggle")
    assert len(exact) == len(quantised) == 2000 and exact.keys() == quantised.keys()
    assert np.mean([exact[p] == quantised[p] for p in exact]) >= 0.99
