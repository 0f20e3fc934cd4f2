"""Two photos of one spot (compare.py, compare_report.py): change read on pairs whose truth is known,
two spots never read as one, and the command and the API endpoint as a user meets them. The full
check (200 pairs of each kind) is `melanoma check-compare`, kept in docs/compare/check.json (seed 0) and docs/compare/check_seed3.json (a fresh draw)."""

import json
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from melanoma import compare_check as cc
from melanoma.compare import compare
from melanoma.images import load_image

from .conftest import melanoma_cli


@pytest.fixture(scope="module")
def spots(data_dir):
    """Eight Kaggle train photos whose spot lies clear of the edges (as check-compare draws them; seed 7)."""
    return cc.candidates(data_dir, 8, seed=7)


def test_growth_is_read_within_five_points_through_turn_scale_and_light(spots):
    """Each photo against a copy with its spot grown by a known share, turned, scaled, shifted, relit and saved as JPEG."""
    rng = np.random.default_rng(7)
    errors = []
    for _, rgb, mask in spots:
        after, truth = cc.grown_pair(rgb, mask, rng)
        result = compare(Image.fromarray(rgb), after)
        assert result.same_spot, result.reason
        errors.append(result.change()["area_change_pct"] - truth)
    assert np.mean(np.abs(errors) <= 5) >= 0.75, errors  # check-compare holds the issue's 90% over 200 pairs


def test_a_light_change_alone_reads_as_no_change(spots):
    rng = np.random.default_rng(8)
    changes = [compare(Image.fromarray(rgb), cc.jpeg(cc.relight(rgb, rng))).change().get("area_change_pct") for _, rgb, _ in spots]
    assert all(c is not None for c in changes) and np.mean(np.abs(changes) < 5) >= 0.75, changes


def test_two_different_spots_are_never_read_as_one(extra_dir):
    _, different = cc.lesion_pairs(extra_dir / "ham10000", 12, seed=7)
    results = [compare(load_image(a), load_image(b)) for a, b in different]
    assert not any(r.same_spot for r in results)
    assert all(r.reason and not r.change() for r in results)  # a reason, and no change figures


def test_spot_growth_shows_in_the_outline_measures():
    """A drawn dark disc on textured skin, grown by 30% of its area: area, diameter and colour as drawn."""
    rng = np.random.default_rng(0)
    skin = np.clip(rng.normal(200, 12, (400, 400, 3)), 0, 255).astype(np.uint8)
    skin = np.asarray(Image.fromarray(skin).resize((400, 400)))
    import cv2

    before, after = skin.copy(), skin.copy()
    cv2.circle(before, (200, 200), 60, (90, 60, 40), -1)
    cv2.circle(after, (200, 200), round(60 * np.sqrt(1.3)), (90, 60, 40), -1)
    result = compare(Image.fromarray(before), Image.fromarray(after))
    assert result.same_spot, result.reason
    change = result.change()
    assert change["area_change_pct"] == pytest.approx(30, abs=4)
    assert change["diameter_change_pct"] == pytest.approx(100 * (np.sqrt(1.3) - 1), abs=3)
    assert change["delta_e"] < 2 and result.before.border < 1.2 and result.before.asymmetry < 0.05


def pair_files(tmp_path, spots) -> tuple:
    rgb = spots[0][1]
    before, after = tmp_path / "before.png", tmp_path / "after.jpg"
    Image.fromarray(rgb).save(before)
    cc.jpeg(cc.relight(rgb, np.random.default_rng(1))).save(after)
    return before, after


def test_command_json_picture_and_one_line_errors(tmp_path, spots):
    before, after = pair_files(tmp_path, spots)
    r = melanoma_cli("compare", before, after, "--json", "--out", tmp_path / "out")
    assert r.returncode == 0, r.stderr
    body = json.loads(r.stdout)
    for key in ("same_spot", "area_change_pct", "p_before", "p_after", "delta_e", "reason"):
        assert key in body
    assert body["same_spot"] and abs(body["area_change_pct"]) < 5 and body["reason"] is None
    assert json.loads((tmp_path / "out" / "compare.json").read_text()) == body
    picture = Image.open(tmp_path / "out" / "compare.png")
    assert picture.width > 3 * picture.height * 0.9  # three panels side by side
    words = melanoma_cli("compare", before, after)
    assert words.returncode == 0 and "area:" in words.stdout and "goes to a doctor" in words.stdout
    (tmp_path / "notes.txt").write_text("not an image")
    for bad, reason in ((tmp_path / "notes.txt", "not a recognised image format"), (tmp_path / "missing.jpg", "cannot be read")):
        r = melanoma_cli("compare", before, bad)
        assert r.returncode == 1 and r.stderr.startswith(f"error: {bad}: {reason}") and len(r.stderr.strip().splitlines()) == 1, r.stderr
    one = melanoma_cli("compare", before)
    assert one.returncode == 2 and "AFTER" in one.stderr


def test_api_compare_answers_as_the_command_and_refuses_in_one_line(tmp_path, spots):
    from melanoma.api import Limits, create_app

    before, after = pair_files(tmp_path, spots)
    client = TestClient(create_app(limits=Limits(request_bytes=400_000)))
    files = [("before", ("before.png", before.read_bytes(), "image/png")), ("after", ("after.jpg", after.read_bytes(), "image/jpeg"))]
    r = client.post("/v1/compare", files=files)
    assert r.status_code == 200, r.text
    body = r.json()
    command = json.loads(melanoma_cli("compare", before, after, "--json").stdout)
    assert body["files"] == {"before": "before.png", "after": "after.jpg"}
    assert {k: v for k, v in body.items() if k != "files"} == command
    only_one = client.post("/v1/compare", files=files[:1])
    assert only_one.status_code == 422 and "exactly one image in each of the multipart fields 'before' and 'after'" in only_one.json()["error"]
    bad = client.post("/v1/compare", files=[files[0], ("after", ("x.jpg", b"not an image", "image/jpeg"))])
    assert bad.status_code == 422 and bad.json()["error"] == "after: x.jpg: not a recognised image format"
    huge = client.post("/v1/compare", files=[("before", ("a.bin", bytes(300_000), "image/png")), ("after", ("b.bin", bytes(300_000), "image/png"))])
    assert huge.status_code == 413 and "limit" in huge.json()["error"]
    none = client.post("/v1/compare", data={"x": "y"})
    assert none.status_code in (415, 422) and "'before' and 'after'" in none.json()["error"]
    assert "/v1/compare" in client.get("/openapi.json").json()["paths"]


CHECKS = Path(__file__).resolve().parents[1] / "docs" / "compare"
# Issue 38's bars, set before `melanoma check-compare` was run; a known miss is an expected failure naming its bar.
# Every kept draw is held to them: check.json (seed 0, the draw the docs report) and check_seed3.json (a fresh draw).
COMPARE_BARS = {"grown_within_5_points": 0.90, "same_lesion_read_same": 0.90, "different_read_different": 0.95}
COMPARE_MISSED = {
    ("check.json", "grown_within_5_points"): "86.4% of grown pairs within 5 points (seed 0's third look, 2026-12-07): bar 90%",
    ("check_seed3.json", "grown_within_5_points"): "87.5% of grown pairs within 5 points (seed 3, a fresh draw, 2026-12-07): bar 90%",
    ("check_seed3.json", "same_lesion_read_same"): "87.5% of same-lesion pairs read as one spot (seed 3, a fresh draw, 2026-12-07): bar 90%",
}


def check_summary(name: str) -> dict:
    result = json.loads((CHECKS / name).read_text())
    grown, lesions = result["grown"], result["lesions"]
    # the summary is what its rows say (so a figure cannot be written by hand)
    within = np.mean([abs(g.get("area_change_pct", np.inf) - g["true_area_change_pct"]) <= 5 for g in grown])
    assert result["summary"]["grown_within_5_points"] == pytest.approx(within)
    assert result["summary"]["same_lesion_read_same"] == pytest.approx(np.mean([r["same_spot"] for r in lesions if r["same_lesion"]]))
    assert result["summary"]["different_read_different"] == pytest.approx(np.mean([not r["same_spot"] for r in lesions if not r["same_lesion"]]))
    assert len(grown) >= 190 and sum(r["same_lesion"] for r in lesions) == 200 and sum(not r["same_lesion"] for r in lesions) == 200
    return result["summary"]


@pytest.mark.parametrize("name,bar", [pytest.param(n, b, marks=pytest.mark.xfail(strict=True, reason=COMPARE_MISSED[n, b]))
                                      if (n, b) in COMPARE_MISSED else (n, b)
                                      for n in ("check.json", "check_seed3.json") for b in COMPARE_BARS])
def test_the_kept_checks_meet_the_issues_bars(name, bar):
    assert check_summary(name)[bar] >= COMPARE_BARS[bar]


def test_one_to_one_keeps_a_collapsing_many_to_one_set_from_agreeing():
    """Many AFTER points matched to one BEFORE point (SIFT's keypoints, one per orientation, at one point) let RANSAC
    collapse AFTER onto it and count every match as agreeing; one match per point of either photo leaves nothing to agree."""
    import cv2

    from melanoma.compare import MIN_INLIERS, one_to_one, similarity

    rng = np.random.default_rng(0)
    after_points = rng.uniform(50, 450, (30, 2))
    ka = [cv2.KeyPoint(float(x), float(y), 4) for x, y in after_points]
    kb = [cv2.KeyPoint(200.0, 150.0, 4, angle) for angle in (0, 90, 180)]  # one point, three orientations
    many = [cv2.DMatch(i, i % 3, float(i)) for i in range(30)]
    pa = np.array([ka[m.queryIdx].pt for m in many], np.float32)
    pb = np.array([kb[m.trainIdx].pt for m in many], np.float32)
    assert similarity(pa, pb)[1] >= MIN_INLIERS  # the degenerate transform the ratio test alone lets through
    kept = one_to_one(many, ka, kb)
    assert [m.queryIdx for m in kept] == [0]  # the best match alone
    assert similarity(np.array([ka[m.queryIdx].pt for m in kept], np.float32), np.array([kb[m.trainIdx].pt for m in kept], np.float32))[1] < MIN_INLIERS
    # a true shift, one match per point, is left whole
    kb_shifted = [cv2.KeyPoint(float(x) + 7, float(y) - 3, 4) for x, y in after_points]
    assert len(one_to_one([cv2.DMatch(i, i, 1.0) for i in range(30)], ka, kb_shifted)) == 30
