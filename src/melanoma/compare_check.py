"""How well `melanoma compare` reads change, on pairs whose truth is known: `melanoma check-compare`.

- **Grown pairs**: a real dermoscopy photo and a copy of it with the spot grown by a known share of its
  area (the spot's region scaled about its centre, blending back to the skin around it), then turned
  (up to 30 degrees), scaled (0.8-1.25), shifted, with its brightness and white balance changed and
  saved again as JPEG. The truth is the growth, whatever the outline finds: the whole spot is scaled.
- **Light pairs**: the same photo under a brightness and white-balance change alone (truth: no change).
- **Same lesion**: two photos HAM10000 lists under one lesion id (should read as one spot).
- **Different lesions**: two photos of two lesion ids (should not).

Photos for the grown pairs are drawn from the Kaggle train folders among those whose spot (the
project's segmentation) is 2-25% of the photo and clear of its edges, so that the grown spot stays in
frame. Written as one JSON file with every pair's figures and the shares the issue asks for."""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from .compare import compare, rough_spot
from .images import load_image

GROWTH = (0.0, 0.40)  # share of the spot's area added
ROTATION = 30.0  # degrees, either way
SCALE = (0.8, 1.25)
SHIFT = 0.05  # share of the side, either way
BRIGHTNESS = (0.8, 1.2)
WHITE_BALANCE = 0.1  # each channel's gain within 1 +- this


def grow(rgb: np.ndarray, mask: np.ndarray, growth: float) -> np.ndarray:
    """`rgb` with the spot (`mask`) scaled about its centroid so its area grows by `growth` (a share).
    In each direction from the centroid, everything out to 1.05 times the spot's farthest pixel that way
    is scaled; the skin beyond is squeezed back to the unchanged photo by 1.2 times that radius (1.1
    times the grown one, if farther)."""
    s = np.sqrt(1 + growth)
    ys, xs = np.nonzero(mask)
    cy, cx = ys.mean(), xs.mean()
    bins = 360
    reach = np.zeros(bins)
    np.maximum.at(reach, (np.degrees(np.arctan2(ys - cy, xs - cx)) % 360).astype(int) % bins, np.hypot(ys - cy, xs - cx) + 1)
    reach = np.maximum.reduce([np.roll(reach, k) for k in range(-3, 4)])  # a pixel covers more than one degree near the centre
    h, w = mask.shape
    gy, gx = np.mgrid[0:h, 0:w].astype(np.float64)
    big_r = np.hypot(gy - cy, gx - cx)
    r0 = 1.05 * reach[(np.degrees(np.arctan2(gy - cy, gx - cx)) % 360).astype(int) % bins]
    r1 = np.maximum(1.2 * r0, 1.1 * s * r0)
    with np.errstate(divide="ignore", invalid="ignore"):  # directions without spot pixels: r0 = 0, left as they are
        r = np.where(big_r <= s * r0, big_r / s, np.where(big_r < r1, r0 + (big_r - s * r0) * (r1 - r0) / (r1 - s * r0), big_r))
    ratio = np.divide(r, big_r, out=np.ones_like(r), where=(big_r > 0) & np.isfinite(r))
    mx, my = (cx + (gx - cx) * ratio).astype(np.float32), (cy + (gy - cy) * ratio).astype(np.float32)
    return cv2.remap(rgb, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)


def relight(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    gains = rng.uniform(*BRIGHTNESS) * rng.uniform(1 - WHITE_BALANCE, 1 + WHITE_BALANCE, 3)
    return np.clip(rgb.astype(np.float64) * gains, 0, 255).astype(np.uint8)


def jpeg(rgb: np.ndarray) -> Image.Image:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=90)
    return Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")


def similarity(shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    h, w = shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), rng.uniform(-ROTATION, ROTATION), float(np.exp(rng.uniform(*np.log(SCALE)))))
    m[:, 2] = m[:, 2] + rng.uniform(-SHIFT, SHIFT, 2) * (w, h)
    return m


def grown_pair(rgb: np.ndarray, mask: np.ndarray, rng: np.random.Generator) -> tuple[Image.Image, float] | None:
    """AFTER for `rgb` and the true area change (%), or None when no draw keeps the grown spot in frame."""
    growth = rng.uniform(*GROWTH)
    grown = grow(rgb, mask, growth)
    grown_mask = grow(mask.astype(np.uint8) * 255, mask, growth) > 127
    h, w = mask.shape
    for _ in range(10):
        m = similarity((h, w), rng)
        moved = cv2.warpAffine(grown_mask.astype(np.uint8), m, (w, h), flags=cv2.INTER_NEAREST, borderValue=0)
        inside = moved[4:-4, 4:-4].sum() == moved.sum() and moved.sum() >= 0.95 * grown_mask.sum() * abs(np.linalg.det(m[:, :2]))
        if inside:
            after = cv2.warpAffine(grown, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT_101)
            return jpeg(relight(after, rng)), 100 * growth
    return None


def candidates(data_dir: Path, n: int, seed: int) -> list[tuple[Path, np.ndarray, np.ndarray]]:
    """Up to `n` Kaggle train photos (both classes, shuffled) whose spot is 2-25% of the photo and clear of its edges."""
    files = sorted((data_dir / "train").glob("*/*.jpg"))
    rng = np.random.default_rng(seed)
    chosen = []
    for i in rng.permutation(len(files)):
        rgb = np.asarray(load_image(files[i]))
        mask = rough_spot(rgb)
        m = 6
        if 0.02 <= mask.mean() <= 0.25 and not (mask[:m].any() or mask[-m:].any() or mask[:, :m].any() or mask[:, -m:].any()):
            chosen.append((files[i], rgb, mask))
        if len(chosen) == n:
            break
    return chosen


def lesion_pairs(ham_dir: Path, n: int, seed: int) -> tuple[list[tuple[Path, Path]], list[tuple[Path, Path]]]:
    """`n` pairs of two photos of one HAM10000 lesion and `n` pairs of photos of two lesions."""
    with open(ham_dir / "labels.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    by_lesion: dict[str, list[Path]] = {}
    for row in rows:
        by_lesion.setdefault(row["lesion_id"], []).append(ham_dir / row["file"])
    rng = np.random.default_rng(seed)
    multi = sorted(k for k, v in by_lesion.items() if len(v) >= 2)
    same = [tuple(by_lesion[multi[i]][:2]) for i in rng.choice(len(multi), min(n, len(multi)), replace=False)]
    ids = sorted(by_lesion)
    different: list[tuple[Path, Path]] = []
    while len(different) < n:
        a, b = rng.choice(len(ids), 2, replace=False)
        different.append((by_lesion[ids[a]][0], by_lesion[ids[b]][0]))
    return same, different  # type: ignore[return-value]


def run(data_dir: Path, ham_dir: Path, out: Path, n: int = 200, seed: int = 0) -> dict:
    rng = np.random.default_rng(seed)
    grown, light = [], []
    for path, rgb, mask in candidates(data_dir, n, seed):
        before = Image.fromarray(rgb)
        pair = grown_pair(rgb, mask, rng)
        if pair is not None:
            c = compare(before, pair[0])
            grown.append({"file": path.name, "true_area_change_pct": round(pair[1], 2), "same_spot": c.same_spot, **c.change(),
                          "inliers": c.alignment.inliers})
        c = compare(before, jpeg(relight(rgb, rng)))
        light.append({"file": path.name, "same_spot": c.same_spot, **c.change()})
    same, different = lesion_pairs(ham_dir, n, seed)
    lesions = [{"before": a.name, "after": b.name, "same_lesion": truth, "same_spot": (c := compare(load_image(a), load_image(b))).same_spot,
                "reason": c.reason, "inliers": c.alignment.inliers}
               for truth, pairs in ((True, same), (False, different)) for a, b in pairs]
    within = [abs(g.get("area_change_pct", np.inf) - g["true_area_change_pct"]) <= 5 for g in grown]
    summary = {
        "grown_pairs": len(grown), "grown_within_5_points": float(np.mean(within)),
        "grown_median_abs_error_points": float(np.median([abs(g.get("area_change_pct", np.inf) - g["true_area_change_pct"]) for g in grown])),
        "light_pairs": len(light), "light_under_5_pct": float(np.mean([abs(g.get("area_change_pct", np.inf)) < 5 for g in light])),
        "same_lesion_pairs": len(same), "same_lesion_read_same": float(np.mean([r["same_spot"] for r in lesions if r["same_lesion"]])),
        "different_pairs": len(different), "different_read_different": float(np.mean([not r["same_spot"] for r in lesions if not r["same_lesion"]])),
    }
    result = {"summary": summary, "seed": seed, "grown": grown, "light": light, "lesions": lesions}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1) + "\n")
    return result
