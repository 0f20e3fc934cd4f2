import numpy as np
import pytest

from melanoma.calibration import fit_temperature, threshold_for_sensitivity
from melanoma.metrics import binary_metrics, expected_calibration_error


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


def _spot_photo(size: int = 224, vignette: bool = False) -> np.ndarray:
    """Skin-coloured square with a dark round spot in the middle; black corners with `vignette`."""
    yy, xx = np.mgrid[0:size, 0:size]
    r = np.hypot(yy - size / 2, xx - size / 2)
    img = np.empty((size, size, 3), np.uint8)
    img[:] = (215, 170, 150)
    img[r < size / 6] = (90, 55, 40)
    noisy = np.clip(img + np.random.default_rng(0).normal(0, 4, img.shape), 0, 255).astype(np.uint8)  # as photos are
    if vignette:
        noisy[r > size * 0.55] = 0
    return noisy


def test_cam_placement_on_the_spot_off_it_and_on_the_vignette():
    from melanoma.metrics import attention_summary, cam_placement

    size = 224
    yy, xx = np.mgrid[0:size, 0:size]
    centre = np.exp(-((yy - 112) ** 2 + (xx - 112) ** 2) / (2 * 12.0**2))  # 99% of it within the spot
    corner = np.exp(-((yy - 5) ** 2 + (xx - 5) ** 2) / (2 * 20.0**2))
    spot_area = np.pi * (size / 6) ** 2 / size**2

    on, area, peak_on, on_vig, vig_area = cam_placement(_spot_photo(), centre)
    assert on > 0.9 and peak_on == 1.0 and on_vig == 0.0 and vig_area == 0.0
    assert area == pytest.approx(spot_area, rel=0.05)
    off = cam_placement(_spot_photo(), corner)
    assert off[0] < 0.01 and off[2] == 0.0
    vig = cam_placement(_spot_photo(vignette=True), corner)
    assert vig[3] > 0.5 and vig[4] > 0.05 and vig[1] == pytest.approx(spot_area, rel=0.05)
    assert all(np.isnan(cam_placement(_spot_photo(), np.zeros((size, size)))))

    s = attention_summary(np.array([[on, area, peak_on, on_vig, vig_area], off, vig, [np.nan] * 5]))
    assert s["images_with_spot"] == 3 and s["images_with_vignette"] == 1
    assert s["cam_on_spot"] == pytest.approx((on + off[0] + vig[0]) / 3)
    assert s["cam_peak_on_spot"] == pytest.approx(1 / 3) and s["cam_on_vignette"] == pytest.approx(vig[3])
    empty = attention_summary(np.zeros((0, 5)))
    assert empty["images_with_spot"] == 0 and empty["cam_on_spot"] is None
