"""`melanoma select`: the rule that decides whether a candidate replaces the bundled model
(docs/selection.md). Two scored folders (each DIR/{isic,pad,val}/ as `melanoma evaluate` writes them)
are paired image by image; per set F = (ROC AUC + specificity at 90% sensitivity) / 2, M is the mean
of F over the sets that count, and a paired bootstrap over lesions or groups (within each class) gives
the intervals of the gains. Also `write_validation_csv`: a model's own validation images as a labels CSV.
Over 300 lines because it is the whole rule docs/selection.md states, in its order: pairing the scored
images, the bootstrap, the decision and its clauses, the log line and the report, each checked by
tests/test_selection.py against planted gains.
"""

from __future__ import annotations

import csv
import json
import os
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import numpy as np

from .data import csv_column, read_csv_rows
from .errors import UsageError

SETS = ("isic", "pad", "val")
MIN_UNITS = 10  # melanoma units and benign units a set needs to count
RESAMPLES, SEED = 2000, 0
CHUNK = 250  # resamples scored at once (memory: a few arrays of CHUNK x images)
LOG_HEADER = "| date | candidate | against | M (ΔM, 95% CI) | F per set, candidate (bundled) | decision |"


@dataclass(frozen=True)
class ScoredImage:
    """One scored image of a set: its label (1 melanoma), the model's score, its unit and source."""

    label: int
    score: float
    unit: str
    source: str


def path_key(path: str) -> str:
    """The image's identity across labels CSVs at different depths: the normalised path without '..' parts."""
    parts = Path(os.path.normpath(path.strip())).parts
    return "/".join(p for p in parts if p != "..")


def read_labels(path: Path) -> dict[str, tuple[str, str]]:
    """A labels CSV: image key -> (unit, source); the unit is the row's lesion_id, else the image."""
    rows = read_csv_rows(path, "labels CSV")
    if not rows:
        raise UsageError(f"{path}: the labels CSV has no rows")
    file, lesion, source = csv_column(rows, "path", "file"), csv_column(rows, "lesion_id"), csv_column(rows, "source")
    if file is None:
        raise UsageError(f"{path}: a labels CSV needs a path (or file) column")
    out = {}
    for row in rows:
        key = path_key(row[file] or "")
        unit = ((row.get(lesion) or "") if lesion else "").strip()
        out[key] = (f"lesion:{unit}" if unit else f"image:{key}", ((row.get(source) or "") if source else "").strip())
    return out


def read_set(folder: Path) -> dict[str, ScoredImage]:
    """One scored set: DIR/<set>/predictions.csv joined with the labels CSV its metrics.json names."""
    metrics_file, predictions = folder / "metrics.json", folder / "predictions.csv"
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder (score the set with `melanoma evaluate --out {folder}`)")
    try:
        metrics = json.loads(metrics_file.read_text())
        data = Path(metrics["data"])
    except OSError as exc:
        raise UsageError(f"{metrics_file}: cannot read it ({exc.strerror})") from None
    except (ValueError, KeyError, TypeError):
        raise UsageError(f"{metrics_file}: not a metrics.json of `melanoma evaluate` (no \"data\" field)") from None
    if metrics.get("layout", "csv") == "csv":
        if not data.is_file():
            raise UsageError(f"{data}: the labels CSV {metrics_file} names is not there (a path relative to the working directory)")
        labels = read_labels(data)
    else:
        labels = {}  # a folder of Benign/ and Malignant/: each image its own unit
    rows = read_csv_rows(predictions, "predictions CSV")
    if not rows:
        raise UsageError(f"{predictions}: the predictions CSV has no rows")
    file, score = csv_column(rows, "path", "file"), csv_column(rows, "p_malignant")
    label = csv_column(rows, "label")
    if file is None or score is None or label is None:
        raise UsageError(f"{predictions}: needs path, label and p_malignant columns (as `melanoma evaluate` writes them)")
    out: dict[str, ScoredImage] = {}
    for n, row in enumerate(rows, start=2):
        key = path_key(row[file] or "")
        y = {"malignant": 1, "1": 1, "benign": 0, "0": 0}.get((row[label] or "").strip().lower())
        try:
            p = float(row[score])
        except (TypeError, ValueError):
            p = float("nan")
        if y is None or not np.isfinite(p) or not key:
            raise UsageError(f"{predictions}, row {n}: not a path, a Benign/Malignant label and a probability")
        if key in out:
            raise UsageError(f"{predictions}, row {n}: {row[file]} is listed twice")
        if labels and key not in labels:
            raise UsageError(f"{predictions}, row {n}: {row[file]} is not in {data} (the labels CSV changed since it was scored?)")
        unit, source = labels.get(key, (f"image:{key}", ""))
        out[key] = ScoredImage(y, p, unit, source)
    return out


def read_folder(folder: str | Path, sets: tuple[str, ...] = SETS) -> dict[str, dict[str, ScoredImage]]:
    """A model's scored folder: set name -> its images."""
    folder = Path(folder)
    if not folder.is_dir():
        raise UsageError(f"{folder}: no such folder (a model's scored folder holds {', '.join(s + '/' for s in sets)})")
    return {s: read_set(folder / s) for s in sets}


@dataclass
class PairedSet:
    """One set's images scored by both models, and their units (lesions, groups or images)."""

    name: str
    keys: list[str]
    y: np.ndarray
    reference: np.ndarray
    candidate: np.ndarray
    unit: np.ndarray  # unit index of each image
    unit_class: np.ndarray  # class of each unit (its first image's label)

    @property
    def units(self) -> tuple[int, int]:
        """Melanoma units and benign units."""
        return int(self.unit_class.sum()), int((self.unit_class == 0).sum())

    @property
    def counted(self) -> bool:
        return min(self.units) >= MIN_UNITS


def _units(keys: list[str], *unit_lists: list[str]) -> np.ndarray:
    """Unit index per image: images that share a unit in any of the lists are one unit (both models' groups joined)."""
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    if not keys:
        return np.zeros(0, dtype=int)
    rows, cols = [], []
    for units in unit_lists:
        first: dict[str, int] = {}
        for i, u in enumerate(units):
            rows.append(i)
            cols.append(first.setdefault(u, i))
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(keys), len(keys)))
    order: dict[int, int] = {}  # numbered in order of their first image
    return np.array([order.setdefault(int(c), len(order)) for c in connected_components(graph, directed=False)[1]])


def pair(reference: dict[str, dict[str, ScoredImage]], candidate: dict[str, dict[str, ScoredImage]]) -> list[PairedSet]:
    """Per set, the images both models scored (for `val`: held out by both), `val` split by source into `val:<source>`."""
    out = []
    for name in reference:
        ref, cand = reference[name], candidate.get(name, {})
        keys = sorted(set(ref) & set(cand))
        for k in keys:
            if ref[k].label != cand[k].label:
                raise UsageError(f"{name}: {k} is labelled {ref[k].label} in one folder and {cand[k].label} in the other")
        if name == "val":
            groups: dict[str, list[str]] = {}
            for k in keys:
                groups.setdefault(ref[k].source or cand[k].source, []).append(k)
            parts = [(f"val:{source}" if source else "val", ks) for source, ks in sorted(groups.items())] or [("val", [])]
        else:
            parts = [(name, keys)]
        for set_name, ks in parts:
            unit = _units(ks, [ref[k].unit for k in ks], [cand[k].unit for k in ks])
            y = np.array([ref[k].label for k in ks], dtype=int)
            unit_class = y[np.unique(unit, return_index=True)[1]]  # each unit's first image's label
            out.append(PairedSet(set_name, ks, y, np.array([ref[k].score for k in ks]), np.array([cand[k].score for k in ks]), unit, unit_class))
    return out


def ranking_figures(y: np.ndarray, s: np.ndarray, w: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """ROC AUC and specificity at 90% sensitivity of scores `s` for labels `y` (1 melanoma), each image
    counted `w` times (one row of whole counts per resample; None: once). Specificity at 90%
    sensitivity: the threshold is the score of the ceil(0.9 n)-th highest melanoma; benign images
    scoring at or above it are called malignant. Returns two arrays, one value per row of `w`."""
    w = np.ones((1, len(y))) if w is None else np.asarray(w, dtype=float)
    rows = np.arange(len(w))
    pos, neg = y == 1, y == 0
    order = np.argsort(s[neg], kind="stable")
    sn, wn = s[neg][order], w[:, neg][:, order]
    cn = np.concatenate([np.zeros((len(w), 1)), np.cumsum(wn, axis=1)], axis=1)  # weight of the first k benign images
    sp, wp = s[pos], w[:, pos]
    below, upto = cn[:, np.searchsorted(sn, sp, "left")], cn[:, np.searchsorted(sn, sp, "right")]
    n_pos, n_neg = wp.sum(axis=1), cn[:, -1]
    auc = (wp * (below + 0.5 * (upto - below))).sum(axis=1) / (n_pos * n_neg)
    desc = np.argsort(-sp, kind="stable")
    cp = np.cumsum(wp[:, desc], axis=1)
    k = (9 * np.rint(n_pos).astype(np.int64) + 9) // 10  # ceil(0.9 n) in whole numbers
    threshold = sp[desc][np.minimum((cp < k[:, None]).sum(axis=1), len(sp) - 1)]
    called = n_neg - cn[rows, np.searchsorted(sn, threshold, "left")]
    return auc, 1 - called / n_neg


def figure_f(y: np.ndarray, s: np.ndarray, w: np.ndarray | None = None) -> np.ndarray:
    """F = (ROC AUC + specificity at 90% sensitivity) / 2, one value per row of `w`."""
    auc, spec = ranking_figures(y, s, w)
    return (auc + spec) / 2


def _scores(y: np.ndarray, s: np.ndarray) -> dict:
    from sklearn.metrics import roc_auc_score

    if len(set(y.tolist())) < 2:
        return {"auc": None, "spec90": None, "F": None}
    _, spec = ranking_figures(y, s)
    auc = float(roc_auc_score(y, s))
    return {"auc": auc, "spec90": float(spec[0]), "F": (auc + float(spec[0])) / 2}


def resample_counts(ps: PairedSet, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """How often each unit is drawn in each resample (units drawn with replacement within each class)."""
    counts = np.zeros((resamples, len(ps.unit_class)), dtype=np.int32)
    for c in (1, 0):
        units = np.flatnonzero(ps.unit_class == c)
        counts[:, units] = rng.multinomial(len(units), np.full(len(units), 1 / len(units)), size=resamples)
    return counts


def bootstrap_delta_f(ps: PairedSet, resamples: int, rng: np.random.Generator) -> np.ndarray:
    """F(candidate) - F(reference) on each resample of the set, both scored on the same draw."""
    counts = resample_counts(ps, resamples, rng)
    out = np.empty(resamples)
    for start in range(0, resamples, CHUNK):
        w = counts[start:start + CHUNK][:, ps.unit]  # every image of a drawn unit, as often as the unit
        out[start:start + CHUNK] = figure_f(ps.y, ps.candidate, w) - figure_f(ps.y, ps.reference, w)
    return out


def _ci(values: np.ndarray) -> list[float]:
    lo, hi = np.percentile(values, [2.5, 97.5])
    return [float(lo), float(hi)]


def member_m(paired: list[PairedSet], member: dict[str, dict[str, ScoredImage]]) -> tuple[float | None, dict]:
    """A member's M on the candidate's pairing: each counted set's images that the member scored too."""
    per_set = {}
    for ps in paired:
        if not ps.counted:
            continue
        images = member.get(ps.name.split(":")[0], {})
        keep = [i for i, k in enumerate(ps.keys) if k in images]
        y = ps.y[keep]
        f = _scores(y, np.array([images[ps.keys[i]].score for i in keep]))["F"]
        ref = _scores(y, ps.reference[keep])["F"]
        per_set[ps.name] = {"images": len(keep), "F": f, "reference_F": ref}
    fs = [v["F"] for v in per_set.values() if v["F"] is not None]
    return (float(np.mean(fs)) if fs else None), per_set


def compare(reference_dir: str | Path, candidate_dir: str | Path, members: list[str | Path] | tuple = (), resamples: int = RESAMPLES,
            seed: int = SEED) -> dict:
    """The rule of docs/selection.md applied to two scored folders (and the candidate's members): every figure and the decision."""
    reference, candidate = read_folder(reference_dir), read_folder(candidate_dir)
    member_data = [(str(m), read_folder(m)) for m in members]
    paired = pair(reference, candidate)
    rng = np.random.default_rng(seed)
    sets: dict[str, dict[str, Any]] = {}
    deltas: dict[str, np.ndarray] = {}
    for ps in paired:
        melanoma_units, benign_units = ps.units
        entry: dict[str, Any] = {"images": len(ps.keys), "melanoma_images": int(ps.y.sum()), "benign_images": int((ps.y == 0).sum()),
                 "melanoma_units": melanoma_units, "benign_units": benign_units, "counted": ps.counted,
                 "reference": _scores(ps.y, ps.reference), "candidate": _scores(ps.y, ps.candidate), "delta_F": None, "delta_F_ci": None}
        if entry["reference"]["F"] is not None:
            entry["delta_F"] = entry["candidate"]["F"] - entry["reference"]["F"]
        if ps.counted:
            deltas[ps.name] = bootstrap_delta_f(ps, resamples, rng)
            entry["delta_F_ci"] = _ci(deltas[ps.name])
        else:
            entry["note"] = f"not counted: {melanoma_units} melanoma and {benign_units} benign units (at least {MIN_UNITS} of each needed)"
        sets[ps.name] = entry
    counted = [name for name, e in sets.items() if e["counted"]]
    result: dict[str, Any] = {"rule": "docs/selection.md", "reference": str(reference_dir), "candidate": str(candidate_dir), "resamples": resamples,
                    "seed": seed, "sets": sets, "counted_sets": counted}
    if not counted:
        result.update(M={"reference": None, "candidate": None}, delta_M=None, delta_M_ci=None, members=[], members_mean=None,
                      members_spread=None, decision={"lower_bound_above_zero": False, "no_counted_set_falls": False,
                                                     "above_members_spread": None, "replace": False},
                      verdict="keep the bundled model: no set holds 10 melanoma and 10 benign units")
        return result
    m_ref = float(np.mean([sets[n]["reference"]["F"] for n in counted]))
    m_cand = float(np.mean([sets[n]["candidate"]["F"] for n in counted]))
    delta_m = m_cand - m_ref
    delta_m_ci = _ci(np.mean([deltas[n] for n in counted], axis=0))
    members_out: list[dict[str, Any]] = []
    for name, data in member_data:
        m, per_set = member_m(paired, data)
        members_out.append({"folder": name, "M": m, "sets": per_set})
    ms = [m["M"] for m in members_out if m["M"] is not None]
    spread = float(max(ms) - min(ms)) if ms else None
    falls = [n for n in counted if sets[n]["delta_F_ci"][1] < 0]
    decision = {"lower_bound_above_zero": delta_m_ci[0] > 0, "no_counted_set_falls": not falls,
                "above_members_spread": (delta_m > spread) if spread is not None else None}
    decision["replace"] = bool(decision["lower_bound_above_zero"] and decision["no_counted_set_falls"]
                               and decision["above_members_spread"] is not False)
    result.update(M={"reference": m_ref, "candidate": m_cand}, delta_M=delta_m, delta_M_ci=delta_m_ci, members=members_out,
                  members_mean=float(np.mean(ms)) if ms else None, members_spread=spread, decision=decision)
    result["verdict"] = verdict(result, falls)
    return result


def verdict(result: dict, falls: list[str]) -> str:
    """The decision in one line."""
    d, lo = result["decision"], result["delta_M_ci"][0]
    if d["replace"]:
        return (f"replace: ΔM {result['delta_M']:+.4f}, its 95% lower bound {lo:+.4f} above zero, no counted set falls"
                + (f", above the members' spread {result['members_spread']:.4f}" if d["above_members_spread"] else ""))
    why = []
    if not d["lower_bound_above_zero"]:
        why.append(f"the 95% lower bound of ΔM is {lo:+.4f}, not above zero")
    if falls:
        why.append("falls on " + ", ".join(f"{n} (ΔF upper bound {result['sets'][n]['delta_F_ci'][1]:+.4f})" for n in falls))
    if d["above_members_spread"] is False:
        why.append(f"ΔM {result['delta_M']:+.4f} is not above the members' spread {result['members_spread']:.4f}")
    return "keep the bundled model: " + "; ".join(why)


def table(result: dict) -> str:
    """The figures per set and the decision, as text for the terminal."""
    def num(x, fmt=".4f"):
        return "-" if x is None else format(x, fmt)

    lines = [f"{'set':<22} {'images':>6} {'units mel/ben':>13} {'F reference':>11} {'F candidate':>11} {'ΔF (95% CI)':>30}  counted"]
    for name, e in result["sets"].items():
        ci = e["delta_F_ci"]
        delta = num(e["delta_F"], "+.4f") + (f" ({ci[0]:+.4f} to {ci[1]:+.4f})" if ci else "")
        lines.append(f"{name:<22} {e['images']:>6} {str(e['melanoma_units']) + '/' + str(e['benign_units']):>13} "
                     f"{num(e['reference']['F']):>11} {num(e['candidate']['F']):>11} {delta:>30}  {'yes' if e['counted'] else 'no'}")
    if result["delta_M"] is not None:
        lo, hi = result["delta_M_ci"]
        lines.append(f"M: reference {result['M']['reference']:.4f}, candidate {result['M']['candidate']:.4f}, "
                     f"ΔM {result['delta_M']:+.4f} (95% CI {lo:+.4f} to {hi:+.4f}; {result['resamples']} paired resamples)")
    for m in result["members"]:
        lines.append(f"  member {m['folder']}: M {num(m['M'])}")
    if result["members"]:
        lines.append(f"  members: mean M {num(result['members_mean'])}, spread {num(result['members_spread'])}")
    d = result["decision"]
    yes = {True: "yes", False: "no", None: "no members given"}
    lines += [f"1. 95% lower bound of ΔM above zero: {yes[d['lower_bound_above_zero']]}",
              f"2. no counted set falls (every ΔF upper bound at least zero): {yes[d['no_counted_set_falls']]}",
              f"3. ΔM above the members' spread: {yes[d['above_members_spread']]}",
              f"decision: {result['verdict']}"]
    return "\n".join(lines)


def log_row(result: dict, name: str, against: str, day: str | None = None) -> str:
    """The line of the log in docs/selection.md for this comparison."""
    def f(x):
        return "-" if x is None else f"{x:.3f}"

    if result["delta_M"] is not None:
        lo, hi = result["delta_M_ci"]
        m = f"{result['M']['candidate']:.4f} ({result['delta_M']:+.4f}, {lo:+.4f} to {hi:+.4f})"
    else:
        m = "- (no set counts)"
    per_set = "; ".join(f"{n} {f(e['candidate']['F'])} ({f(e['reference']['F'])})" + ("" if e["counted"] else " not counted")
                        for n, e in result["sets"].items())
    cells = [day or date.today().isoformat(), name, against, m, per_set, result["verdict"]]
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def append_log(path: str | Path, row: str) -> None:
    """Add `row` to the log table that ends the file (the table whose header is LOG_HEADER)."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the log ({exc.strerror})") from None
    body = text.rstrip()
    last = body.splitlines()[-1] if body else ""
    if LOG_HEADER not in text or not last.startswith("|"):
        raise UsageError(f"{path}: no log table at its end (a table headed {LOG_HEADER})")
    path.write_text(body + "\n" + row + "\n")


def write_validation_csv(split, path: str | Path) -> int:
    """A model's own validation images (`split.model_split`) as a labels CSV: path (relative to the CSV's
    folder), label, source (the training source's name) and lesion_id (the split's group, "g<id>")."""
    from .data import CLASS_NAMES

    path = Path(path)
    folder = os.path.abspath(path.parent)
    rows = [[os.path.relpath(os.path.abspath(s.path), folder), CLASS_NAMES[s.label], getattr(s, "source", "") or "kaggle", f"g{int(g)}"]
            for s, g in zip(split.samples_of(split.va), split.groups[split.va])]
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "source", "lesion_id"])
        w.writerows(rows)
    return len(rows)
