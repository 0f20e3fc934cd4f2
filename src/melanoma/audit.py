"""Data audit: counts, unreadable files, image sizes, and near-duplicate photos.

Near-duplicates (re-encoded or slightly altered copies of one photo) are found with a
low-resolution hash: each image becomes two 16x16 grayscale thumbnails, of the whole image and of
its central half, each with its mean removed and its norm scaled to 1, so that one matrix product
gives the Pearson correlation of every pair. A pair is a near-duplicate when, under one of the 8
flips/90-degree rotations, the whole images correlate at least WHOLE_CORRELATION and their centres
at least CENTRE_CORRELATION. The centre test matters: many photos taken through the same round
dermoscope are mostly a black vignette and correlate highly as wholes, though the lesions in the
middle differ. On this data set no test/Benign image passes both tests, 663 test/Malignant
images do, and the lowest-scoring of those (0.985-0.99) are, checked by eye, the same photo
with its brightness or crop changed.
Written by hand because it is a few lines of numpy; perceptual-hash libraries compare one pair at
a time, which is slow for the 12k x 12k comparisons of a train split.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
from PIL import Image

from .data import CLASS_NAMES, SPLITS, Sample, read_samples, scan
from .images import ImageError

THUMB = 16
WHOLE_CORRELATION = 0.985
CENTRE_CORRELATION = 0.9


def thumbnail(im: Image.Image) -> np.ndarray:
    """2 x 16 x 16: the whole image and its central half, grayscale."""
    g = im.convert("L")
    w, h = g.size
    centre = g.crop((w // 4, h // 4, w - w // 4, h - h // 4))
    return np.stack([np.asarray(x.resize((THUMB, THUMB), Image.Resampling.BOX), dtype=np.float32) for x in (g, centre)])


def _normalise(t: np.ndarray) -> np.ndarray:
    x = t.reshape(len(t), -1)
    x = x - x.mean(1, keepdims=True)
    return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)


def _variants(thumbs: np.ndarray):
    """(whole, centre) normalised thumbnails under each of the 8 flips/90-degree rotations."""
    for flip in (False, True):
        for k in range(4):
            v = np.rot90(thumbs, k, axes=(2, 3))
            v = v[..., ::-1] if flip else v
            yield _normalise(np.ascontiguousarray(v[:, 0])), _normalise(np.ascontiguousarray(v[:, 1]))


def _similarity(query: np.ndarray, ref: np.ndarray, chunk: int = 2048):
    """Yield (start, S) for query chunks: S = whole-image correlation where the centres also
    match, else -inf; the best over the 8 orientations."""
    rw, rc = _normalise(ref[:, 0]), _normalise(ref[:, 1])
    variants = list(_variants(query))
    for start in range(0, len(query), chunk):
        best = None
        for vw, vc in variants:
            s = vw[start : start + chunk] @ rw.T
            s[vc[start : start + chunk] @ rc.T < CENTRE_CORRELATION] = -np.inf
            best = s if best is None else np.maximum(best, s)
        yield start, best


def _pairs(thumbs: np.ndarray, chunk: int = 2048):
    """Yield (i, j) index arrays of the near-duplicate pairs among `thumbs` (i <= j), orientation by
    orientation: the rule of `_similarity` at a fraction of its cost. The whole-image correlations
    come from one matrix product against the images from the chunk's first on (the 8 orientations
    form a group, so j turned to match i is i turned back to match j), the centres' only for the
    few pairs whose whole images pass."""
    rw, rc = _normalise(thumbs[:, 0]), _normalise(thumbs[:, 1])
    for vw, vc in _variants(thumbs):
        for start in range(0, len(thumbs), chunk):
            i, j = np.nonzero(vw[start : start + chunk] @ rw[start:].T >= WHOLE_CORRELATION)
            i += start
            j += start
            centres = np.einsum("ij,ij->i", vc[i], rc[j])
            yield i[centres >= CENTRE_CORRELATION], j[centres >= CENTRE_CORRELATION]


def near_duplicate_groups(thumbs: np.ndarray, chunk: int = 2048) -> np.ndarray:
    """Connected components of the near-duplicate graph: a group id per image."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    pairs = list(_pairs(thumbs, chunk))
    i, j = np.concatenate([p[0] for p in pairs]), np.concatenate([p[1] for p in pairs])
    graph = coo_matrix((np.ones(len(i), dtype=np.int8), (i, j)), shape=(len(thumbs), len(thumbs)))
    _, labels = connected_components(graph, directed=False)
    return labels


def read_thumbnails(samples: list[Sample], sizes: Counter | None = None) -> tuple[list[Sample], np.ndarray, list[ImageError]]:
    """Thumbnails of the readable samples (the unreadable ones are returned as errors)."""
    ok, thumbs = [], []
    bad: list[ImageError] = []
    for s, im in read_samples(samples, bad):
        thumbs.append(thumbnail(im))
        ok.append(s)
        if sizes is not None:
            sizes[f"{im.width}x{im.height}"] += 1
    return ok, np.stack(thumbs) if thumbs else np.zeros((0, 2, THUMB, THUMB), np.float32), bad


def copies_in_train(train_thumbs: np.ndarray, test_thumbs: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Boolean mask of test images with a near-duplicate in train, plus best correlation and match."""
    corr = np.full(len(test_thumbs), -np.inf, dtype=np.float32)
    arg = np.zeros(len(test_thumbs), dtype=np.int64)
    if len(train_thumbs):
        for start, s in _similarity(test_thumbs, train_thumbs):
            arg[start : start + len(s)] = s.argmax(1)
            corr[start : start + len(s)] = s.max(1)
    return corr >= WHOLE_CORRELATION, corr, arg


def run_audit(root: Path, out: Path) -> dict:
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {
        "data": str(root),
        "near_duplicate_rule": f"16x16 grayscale correlation >= {WHOLE_CORRELATION} for the whole image and >= "
        f"{CENTRE_CORRELATION} for its central half, under one of the 8 flips/90-degree rotations",
    }
    thumbs, samples = {}, {}
    unreadable = []
    counts = {}
    sizes: Counter = Counter()
    for split in SPLITS:
        found = scan(root, split)
        ok, th, bad = read_thumbnails(found, sizes)
        samples[split], thumbs[split] = ok, th
        unreadable += [{"file": e.name, "reason": e.reason} for e in bad]
        counts[split] = {c: sum(s.label == i for s in ok) for i, c in enumerate(CLASS_NAMES)}
        counts[split]["unreadable"] = len(bad)
    report["counts"] = counts
    report["unreadable"] = unreadable
    report["image_sizes"] = dict(sizes.most_common(20))

    groups = near_duplicate_groups(thumbs["train"]) if len(thumbs["train"]) else np.zeros(0, int)
    members: dict[int, list[str]] = {}
    for s, g in zip(samples["train"], groups):
        members.setdefault(int(g), []).append(s.rel)
    dup_groups = sorted((m for m in members.values() if len(m) > 1), key=len, reverse=True)
    report["train_near_duplicates"] = {
        "groups": len(dup_groups),
        "images_in_groups": sum(map(len, dup_groups)),
        "by_class": {c: sum(1 for m in dup_groups for r in m if f"/{c}/" in r) for c in CLASS_NAMES},
        "largest_group": len(dup_groups[0]) if dup_groups else 0,
    }
    mask, corr, arg = copies_in_train(thumbs["train"], thumbs["test"])
    leaked = [
        {"test": s.rel, "train": samples["train"][a].rel, "correlation": round(float(c), 4)}
        for s, m, c, a in zip(samples["test"], mask, corr, arg)
        if m
    ]
    report["test_near_duplicates_of_train"] = {
        "images": len(leaked),
        "by_class": {c: sum(f"/{c}/" in d["test"] for d in leaked) for c in CLASS_NAMES},
        "clean_test_images": int(len(samples["test"]) - len(leaked)),
    }
    (out / "audit.json").write_text(json.dumps({**report, "train_groups": dup_groups, "test_leaks": leaked}, indent=1))
    (out / "test_near_duplicates.txt").write_text("".join(d["test"] + "\n" for d in leaked))
    (out / "audit.md").write_text(audit_markdown(report))
    return report


def audit_markdown(r: dict) -> str:
    lines = ["# Data audit", "", f"Data: `{r['data']}`", "", "| split | " + " | ".join(CLASS_NAMES) + " | unreadable |", "| --- | --- | --- | --- |"]
    for split, c in r["counts"].items():
        lines.append(f"| {split} | " + " | ".join(str(c[k]) for k in CLASS_NAMES) + f" | {c['unreadable']} |")
    td, tl = r["train_near_duplicates"], r["test_near_duplicates_of_train"]
    lines += [
        "",
        f"Image sizes (most common): {', '.join(f'{k} ({v})' for k, v in r['image_sizes'].items())}",
        "",
        f"Near-duplicates ({r['near_duplicate_rule']}):",
        f"- within train: {td['groups']} groups holding {td['images_in_groups']} images "
        f"({', '.join(f'{k} {v}' for k, v in td['by_class'].items())}); largest group {td['largest_group']}",
        f"- test images with a near-duplicate in train: {tl['images']} "
        f"({', '.join(f'{k} {v}' for k, v in tl['by_class'].items())}); clean test subset: {tl['clean_test_images']} images",
    ]
    if r["unreadable"]:
        lines += ["", "Unreadable files:"] + [f"- {u['file']}: {u['reason']}" for u in r["unreadable"]]
    return "\n".join(lines) + "\n"
