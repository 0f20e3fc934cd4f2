"""Serving without PyTorch: `pip install melanoma[app,api]` holds no torch (it is the `train` extra), and the bundled
model then runs as its ONNX graph (loader.default_model_path). tests/torchless.py runs predict --cam, compare, the API
and the page on the default model in a child Python and reports; these tests read its report."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from melanoma.modelinfo import BUNDLED_MODEL

from .conftest import ROOT

SCRIPT = Path(__file__).with_name("torchless.py")


def served(python: str, data_dir: Path, out: Path, *flags: str) -> dict:
    images = [str(sorted((data_dir / "test" / c).glob("*.jpg"))[0]) for c in ("Malignant", "Benign")]
    r = subprocess.run([python, str(SCRIPT), str(out), *images, *flags], capture_output=True, text=True, timeout=600, cwd=out.parent)
    assert r.returncode == 0, r.stderr[-3000:]
    report = json.loads((out / "report.json").read_text())
    assert report["predict_rc"] == 0 and report["cams"] == 2 and len((out / "p.csv").read_text().splitlines()) == 3
    assert report["compare_rc"] == 0 and "compare.json" in report["compare_files"]
    about = report["api_model"]
    measured = json.loads(BUNDLED_MODEL.with_name("metrics.json").read_text())["clean_test"]
    assert about["engine"] == "onnx" and about["maps"] and about["clean_test"] == measured  # the bundled model's own figures
    for entry in report["api_predict"]["results"]:
        assert entry["verdict"] in ("melanoma suspected", "no sign of melanoma") and entry["cam_png"]
        assert (entry["p_malignant"] >= about["threshold"]) == (entry["verdict"] == "melanoma suspected")
    assert report["api_compare"]["same_spot"] is True and abs(report["api_compare"]["area_change_pct"]) < 1
    assert not report["page_exception"] and report["page_images"] == 2  # the photo and its Grad-CAM overlay
    assert "Kaggle test images with no copy in the training data" in report["page_text"]
    assert report["api_predict"]["results"][0]["verdict"].capitalize() in report["page_text"]
    assert report["evaluate_rc"] == 0 and json.loads((out / "evaluate" / "metrics.json").read_text())["test"]["images"] == 2
    assert report["torch_imported"] is False
    # what needs PyTorch says so in one line, naming the extra
    assert report["calibrate_rc"] == 1 and "error: melanoma calibrate needs the train extra (torch not installed): pip install 'melanoma[train]'" in r.stderr
    return report


@pytest.mark.slow
def test_serving_the_bundled_model_never_imports_torch(data_dir, tmp_path):
    """Here (torch installed) with the train extra's modules blocked, as if absent."""
    served(sys.executable, data_dir, tmp_path / "out", "--block")


@pytest.mark.slow
def test_the_built_wheel_serves_in_a_bare_venv_without_torch(data_dir, tmp_path):
    """As a new user installs it: the built wheel with [app,api] into a fresh venv (no constraints file), where
    `import torch` fails; `melanoma predict --cam`, `compare`, `api` and `serve` answer on the bundled model."""
    run = lambda *cmd, timeout=900: subprocess.run([str(c) for c in cmd], capture_output=True, text=True, timeout=timeout)  # noqa: E731
    r = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "--wheel-dir", tmp_path / "wheel", ROOT)
    assert r.returncode == 0, r.stderr[-3000:]
    wheel = next((tmp_path / "wheel").glob("melanoma-*.whl"))
    assert run(sys.executable, "-m", "venv", tmp_path / "venv").returncode == 0
    python = tmp_path / "venv" / "bin" / "python"
    r = run(python, "-m", "pip", "install", "--quiet", "--no-compile", f"{wheel}[app,api]")
    assert r.returncode == 0, r.stderr[-3000:]
    assert run(python, "-c", "import torch").returncode != 0, "the app and api extras pulled in torch"
    report = served(str(python), data_dir, tmp_path / "out", "--processes")
    assert report["api_process"]["verdict"] == report["api_predict"]["results"][0]["verdict"] and report["serve_health"] == "ok"
