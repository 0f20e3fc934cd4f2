"""The bundled model on the whole real test split: the figures the README states must hold."""

import csv
import json
import re

import numpy as np
import pytest

from melanoma.data import fingerprint, scan
from melanoma.metrics import binary_metrics
from melanoma.model import load
from melanoma.modelinfo import BUNDLED_MODEL, BUNDLED_ONNX, file_sha256
from melanoma.scoring import score_images
from melanoma.sources import kaggle_source, read_sources_file, scan_sources, source_record

from .conftest import ROOT

RESULTS = ROOT / "docs" / "results"


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


def test_the_bundled_onnx_graph_is_the_bundled_model(bundled, data_dir):
    """What an install without torch runs (loader.default_model_path) is the bundled model exported anew: the same
    record, exported from this exact file (so it shows its measured figures), the same estimates and verdicts."""
    from melanoma.images import load_image
    from melanoma.onnx_model import OnnxModel
    from melanoma.predict import predict_views
    from melanoma.preprocess import model_view

    model, info = bundled
    graph = OnnxModel(BUNDLED_ONNX)
    assert graph.info.to_json() == info.to_json() and not graph.int8 and graph.maps, "re-export: melanoma export --onnx " + str(BUNDLED_ONNX)
    assert graph.exported_from == file_sha256(BUNDLED_MODEL), "the ONNX graph was exported from another file: melanoma export --onnx"
    views = np.stack([model_view(load_image(f), info.preprocess) for c in ("Benign", "Malignant")
                      for f in sorted((data_dir / "test" / c).glob("*.jpg"))[:8]])
    ours, theirs = predict_views(model, info, views), predict_views(graph, info, views)
    assert max(abs(a.p_malignant - b.p_malignant) for a, b in zip(ours, theirs)) < 1e-4
    assert [a.verdict for a in ours] == [b.verdict for b in theirs]


def test_bundled_model_file(bundled):
    _, info = bundled
    assert BUNDLED_MODEL.stat().st_size + BUNDLED_ONNX.stat().st_size < 30 * 2**20  # the weights, and the same as an ONNX graph
    assert info.arch == "efficientnet_lite0" and info.class_names == ("Benign", "Malignant")
    assert 0 < info.threshold <= 0.5 and info.temperature > 0
    assert info.train_config["epochs"] <= 30


def test_bundled_model_was_trained_on_this_train_split(bundled, data_dir):
    """All of the training images its sources name (the Kaggle train split alone for a model without a sources
    file), as the model file records them, and a licence that says what they allow."""
    _, info = bundled
    assert info.train_config.get("limit") is None  # all of it
    named = info.train_config.get("sources")
    sources = read_sources_file(ROOT / named) if named else [kaggle_source(data_dir)]
    samples = scan_sources(sources)
    assert info.data_fingerprint == fingerprint(samples)
    assert info.sources == [source_record(src, samples) for src in sources]
    assert "non-commercial purposes only" in info.licence  # the Kaggle train split holds HAM10000 copies (CC BY-NC 4.0)
    for doc in ("README.md", "MODEL_CARD.md"):  # the same sentence, word for word
        assert info.licence in " ".join((ROOT / doc).read_text().split()), doc


@pytest.mark.slow
def test_figures_on_the_real_test_split_match_their_file_the_readme_and_the_model_card(bundled, data_dir):
    """docs/results/metrics.json (written by `melanoma evaluate --out docs/results` for this exact file: its
    SHA-256) against the predictions that run kept (predictions.csv), full split and clean subset (the images
    it marks as having no near-duplicate in train); each kept probability and OOD score against the model
    scoring the image again, for every fifth image (test_onnx.py holds the ONNX export to all 2,000, within
    1e-4); then the README's results row and the model card's table against that file."""
    model, info = bundled
    m = json.loads((RESULTS / "metrics.json").read_text())
    assert m["model_sha256"] == file_sha256() == json.loads(BUNDLED_MODEL.with_name("metrics.json").read_text())["model_sha256"]
    with open(RESULTS / "predictions.csv") as f:
        kept = {row["path"]: row for row in csv.DictReader(f)}
    everything = scan(data_dir, "test")
    assert len(everything) == m["test"]["images"] == 2000 and [s.rel for s in everything] == list(kept)
    samples, p, _, _, ood, _ = score_images(model, info, everything[::5])
    assert len(samples) == 400 and {s.label for s in samples} == {0, 1}
    assert np.abs(p - [float(kept[s.rel]["p_malignant"]) for s in samples]).max() <= 1e-5  # written with 6 decimals
    assert np.abs(ood / [float(kept[s.rel]["ood_score"]) for s in samples] - 1).max() < 1e-5
    y = np.array([s.label for s in everything])
    p = np.array([float(r["p_malignant"]) for r in kept.values()])
    clean = np.array([r["near_duplicate_in_train"] != "1" for r in kept.values()])
    assert clean.sum() == m["clean_test"]["images"] == 2000 - m["near_duplicates_excluded"]
    keys = ("accuracy", "sensitivity", "specificity", "balanced_accuracy", "roc_auc", "ece", "brier")
    for name, mask in (("test", np.ones(len(y), bool)), ("clean_test", clean)):
        now = binary_metrics(y[mask], p[mask], info.threshold, bootstrap=0)
        for key in keys:
            assert now[key] == pytest.approx(m[name][key], abs=2e-4), (name, key)

    c, t = m["clean_test"], m["test"]
    for column, value, places in (("test accuracy", 100 * t["accuracy"], 2), ("test ROC AUC", t["roc_auc"], 4),
                                  ("clean accuracy", 100 * c["accuracy"], 2), ("clean sensitivity", 100 * c["sensitivity"], 2),
                                  ("clean specificity", 100 * c["specificity"], 2), ("clean balanced accuracy", 100 * c["balanced_accuracy"], 2),
                                  ("clean ROC AUC", c["roc_auc"], 4), ("clean ECE", c["ece"], 3), ("clean Brier", c["brier"], 3),
                                  ("threshold", info.threshold, 3)):
        assert readme_figure(column) == pytest.approx(round(value, places), abs=10 ** -places / 2 + 1e-9), column
    card = (ROOT / "MODEL_CARD.md").read_text()
    for label, full, cleaned in (("sensitivity", f"{100 * t['sensitivity']:.2f}%", f"{100 * c['sensitivity']:.2f}%"),
                                 ("specificity", f"{100 * t['specificity']:.2f}%", f"{100 * c['specificity']:.2f}%"),
                                 ("expected calibration error", f"{t['ece']:.3f}", f"{c['ece']:.3f}"),
                                 ("Brier score", f"{t['brier']:.3f}", f"{c['brier']:.3f}")):
        assert f"| {label} | {full} | {cleaned} |" in card, label
