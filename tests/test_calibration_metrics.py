import numpy as np
import pytest

from melanoma.calibration import fit_temperature, threshold_for_sensitivity
from melanoma.evaluate import binary_metrics, expected_calibration_error


def test_temperature_recovers_overconfidence():
    rng = np.random.default_rng(0)
    true_logit = rng.normal(0, 2, 5000)
    y = (rng.random(5000) < 1 / (1 + np.exp(-true_logit))).astype(int)
    logits = np.stack([np.zeros(5000), true_logit * 3.0], 1)  # three times too confident
    assert fit_temperature(logits, y) == pytest.approx(3.0, rel=0.1)


def test_threshold_reaches_target_sensitivity_and_never_exceeds_half():
    rng = np.random.default_rng(1)
    y = np.r_[np.ones(500, int), np.zeros(500, int)]
    p = np.r_[rng.beta(2, 5, 500), rng.beta(1, 8, 500)]  # weak positives: threshold must drop
    t = threshold_for_sensitivity(p, y, 0.95)
    assert t < 0.5 and (p[y == 1] >= t).mean() >= 0.95
    assert (p[y == 1] >= t + 1e-3).mean() < 0.95  # the highest such threshold
    strong = np.r_[np.full(500, 0.9), np.full(500, 0.1)]
    assert threshold_for_sensitivity(strong, y, 0.95) == 0.5


def test_binary_metrics_by_hand():
    y = np.array([1, 1, 1, 1, 0, 0, 0, 0])
    p = np.array([0.9, 0.8, 0.6, 0.2, 0.7, 0.3, 0.1, 0.05])
    m = binary_metrics(y, p, threshold=0.5, bootstrap=200)
    assert m["confusion_matrix"] == {"tn": 3, "fp": 1, "fn": 1, "tp": 3}
    assert m["accuracy"] == 0.75 and m["sensitivity"] == 0.75 and m["specificity"] == 0.75
    assert m["roc_auc"] == pytest.approx(13 / 16)  # 4 + 4 + 3 + 2 of 16 pairs ranked right
    lo, hi = m["roc_auc_ci95"]
    assert 0 <= lo <= m["roc_auc"] <= hi <= 1
    assert m["brier"] == pytest.approx(np.mean((p - y) ** 2))


def test_ece_zero_when_calibrated_and_large_when_not():
    p = np.repeat([0.15, 0.85], 100)
    y = np.r_[np.r_[np.ones(15), np.zeros(85)], np.r_[np.ones(85), np.zeros(15)]].astype(int)
    assert expected_calibration_error(y, p) == pytest.approx(0.0, abs=1e-9)
    assert expected_calibration_error(y, 1 - p) == pytest.approx(0.7)
