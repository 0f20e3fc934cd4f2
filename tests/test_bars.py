"""The bundled model against issue 20's bar, from the files `melanoma evaluate` kept for it.

Floors set from the issue before the model was measured; a known miss is an expected failure that
names its bar (never a moved floor). Each file must name the bundled model's exact SHA-256, so the
figures are this model's (test_bundled_model.py checks docs/results against the test split itself).
"""

import json

import pytest

from melanoma.modelinfo import file_sha256

from .conftest import ROOT

DOCS = ROOT / "docs"
FILES = {"kaggle": DOCS / "results" / "metrics.json", "isic": DOCS / "external" / "isic2018" / "metrics.json",
         "pad": DOCS / "external" / "pad-ufes-20" / "metrics.json"}
# Candidate E (bundled 2026-11-29) on the clean test shift suite (its docs/results/metrics.json, since kept in
# docs/candidates/robust_e/test): 5 of 14 mild changes failed; mean share of verdicts flipped 4.66% mild, 8.91% strong
E_MILD_FAILURES, E_FLIPS_MILD, E_FLIPS_STRONG = 5, 0.046640, 0.089113


def metrics(name: str) -> dict:
    m = json.loads(FILES[name].read_text())
    assert m["model_sha256"] == file_sha256(), f"{FILES[name]} was not written for the bundled model"
    return m


def kind_auc(m: dict, kind: str) -> float:
    auc = next((k["roc_auc"] for k in m.get("kinds") or [] if k["kind"] == kind), None)
    assert auc is not None, f"no ROC AUC for kind {kind} (evaluate --by-kind source_label)"
    return auc


def mild_failures(m: dict) -> int:
    """Mild changes that take specificity down more than 5 points, sensitivity under 93% or ROC AUC under 0.97."""
    s = m["shifts"]
    return sum(x["specificity"] < s["unchanged"]["specificity"] - 0.05 or x["sensitivity"] < 0.93 or x["roc_auc"] < 0.97
               for x in s["shifts"] if x["severity"] == "mild")


def mean_flips(m: dict, severity: str) -> float:
    flips = [x["flipped"] for x in m["shifts"]["shifts"] if x["severity"] == severity]
    return sum(flips) / len(flips)


BARS = {
    "ISIC 2018 ROC AUC >= 0.93": lambda: metrics("isic")["test"]["roc_auc"] >= 0.93,
    "ISIC 2018 sensitivity >= 0.85": lambda: metrics("isic")["test"]["sensitivity"] >= 0.85,
    "ISIC 2018 specificity >= 0.75": lambda: metrics("isic")["test"]["specificity"] >= 0.75,
    "ISIC 2018 melanoma vs benign keratosis ROC AUC >= 0.85": lambda: kind_auc(metrics("isic"), "BKL") >= 0.85,
    "ISIC 2018 melanoma vs dermatofibroma ROC AUC >= 0.85": lambda: kind_auc(metrics("isic"), "DF") >= 0.85,
    "PAD-UFES-20 ROC AUC >= 0.85": lambda: metrics("pad")["test"]["roc_auc"] >= 0.85,
    "PAD-UFES-20 sensitivity >= 0.85": lambda: metrics("pad")["test"]["sensitivity"] >= 0.85,
    "PAD-UFES-20 specificity >= 0.50": lambda: metrics("pad")["test"]["specificity"] >= 0.50,
    "Kaggle clean test ROC AUC >= 0.97": lambda: metrics("kaggle")["clean_test"]["roc_auc"] >= 0.97,
    "Kaggle clean test sensitivity >= 0.93": lambda: metrics("kaggle")["clean_test"]["sensitivity"] >= 0.93,
    "Kaggle full test ROC AUC >= 0.964 (the original project's)": lambda: metrics("kaggle")["test"]["roc_auc"] >= 0.964,
    "Kaggle clean balanced accuracy >= 0.919 (the original project's)": lambda: metrics("kaggle")["clean_test"]["balanced_accuracy"] >= 0.919,
    "shift suite: no more mild failures than candidate E": lambda: mild_failures(metrics("kaggle")) <= E_MILD_FAILURES,
    "shift suite: no more flips than candidate E (mild)": lambda: mean_flips(metrics("kaggle"), "mild") <= E_FLIPS_MILD,
    "shift suite: no more flips than candidate E (strong)": lambda: mean_flips(metrics("kaggle"), "strong") <= E_FLIPS_STRONG,
}
# bar -> what was measured (filled in only after the model was measured; docs/results.md "Which model is bundled, and why")
MISSED: dict[str, str] = {
    "ISIC 2018 ROC AUC >= 0.93": "0.888 (k12full_t94 0.880, multi_a 0.882, E 0.864): keratoses still read as melanoma",
    "ISIC 2018 specificity >= 0.75": "58.3% at sensitivity 96.4% (k12full_t94 63.2% at 94.0%; multi_a 57.4%, E 51.9%)",
    "ISIC 2018 melanoma vs benign keratosis ROC AUC >= 0.85": "0.759 (k12full_t94 0.738, multi_a 0.708, E 0.676)",
    "PAD-UFES-20 ROC AUC >= 0.85": "0.825 (k12full_t94 0.796, multi_a 0.779, E 0.740)",
    "Kaggle clean balanced accuracy >= 0.919 (the original project's)": "0.885 (k12full_t94 0.898, multi_a 0.896, E 0.919): "
                                                                         "the archive-look shortcut the test split rewards",
    "shift suite: no more mild failures than candidate E": "12 of 14 (k12full_t94 11, multi_a 8, E 5): eleven bring ROC AUC "
                                                            "under 0.97 from an unchanged 0.974",
    "shift suite: no more flips than candidate E (mild)": "6.9% (k12full_t94 6.0%, multi_a 5.4%, E 4.7%)",
    "shift suite: no more flips than candidate E (strong)": "12.5% (k12full_t94 10.8%, multi_a 9.7%, E 8.9%)",
}


@pytest.mark.parametrize("bar", [pytest.param(b, marks=pytest.mark.xfail(strict=True, reason=MISSED[b])) if b in MISSED else b
                                 for b in BARS])
def test_bundled_model_meets_the_bar(bar):
    assert BARS[bar](), bar
