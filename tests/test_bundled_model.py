"""The bundled model on the whole real test split: the figures the README states must hold."""

import re

import numpy as np
import pytest

from melanoma.data import fingerprint, scan
from melanoma.evaluate import binary_metrics, score_images
from melanoma.model import BUNDLED_MODEL, load

from .conftest import ROOT


def readme_figure(column: str) -> float:
    """A figure from the README's results table: the bundled model's row, the column named so."""
    text = (ROOT / "README.md").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| model |"))
    row = next(line for line in text.splitlines() if line.startswith("| efficientnet_lite0 (bundled)"))
    cells = [c.strip() for c in header.strip("|").split("|")]
    values = [c.strip() for c in row.strip("|").split("|")]
    index = next(i for i, c in enumerate(cells) if c.startswith(column))
    return float(re.search(r"[\d.]+", values[index]).group())


@pytest.fixture(scope="module")
def bundled():
    assert BUNDLED_MODEL.is_file(), f"bundled model missing: {BUNDLED_MODEL}"
    return load()


def test_bundled_model_file(bundled):
    _, info = bundled
    assert BUNDLED_MODEL.stat().st_size < 30 * 2**20
    assert info.arch == "efficientnet_lite0" and info.class_names == ("Benign", "Malignant")
    assert 0 < info.threshold <= 0.5 and info.temperature > 0
    assert info.train_config["epochs"] <= 30


def test_bundled_model_was_trained_on_this_train_split(bundled, data_dir):
    _, info = bundled
    if info.train_config.get("limit") is None:
        assert info.data_fingerprint == fingerprint(scan(data_dir, "train"))


def test_accuracy_on_the_real_test_split_matches_the_readme(bundled, data_dir):
    model, info = bundled
    samples, p, _, _ = score_images(model, info, scan(data_dir, "test"))
    assert len(samples) == 2000
    y = np.array([s.label for s in samples])
    m = binary_metrics(y, p, info.threshold, bootstrap=0)
    assert m["accuracy"] * 100 == pytest.approx(readme_figure("test accuracy"), abs=0.5)
    assert m["roc_auc"] == pytest.approx(readme_figure("test ROC AUC"), abs=0.005)
