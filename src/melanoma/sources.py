"""Training sources: which labelled image folders a training run reads, and under which licence.

A run reads one source by default: the Kaggle data (`--data`, its train/ split). A sources file
(TOML, `train --sources FILE`; the repository keeps `sources/kaggle+archives.toml`) names several:

    [[source]]
    name = "ham10000"                      # unique; images are known as "ham10000:Benign/x.jpg"
    path = "../../shared/data/extra-train/ham10000"   # relative to the sources file
    licence = "CC-BY-NC-4.0"               # the licence of its images
    contains = []                          # licences of images copied into it from elsewhere
    note = "..."                           # one sentence shown with the licence (optional)
    per_epoch = { nv = 2000 }              # at most this many images of a diagnosis in each epoch
    weight = 1.0                           # weight of its images in the loss, before class balancing
    diagnosis_weight = { bkl = 3.0 }       # this diagnosis's images weigh that much more (times weight)
    read_other = false                     # true: Other/ is read too, as not melanoma (the Benign class)

A source is either the Kaggle layout (train/{Benign,Malignant}; only train/ is read, never test/)
or a folder with Benign/ and Malignant/ (Other/, cancers that are not melanoma, is read only with
read_other: then as not melanoma, the model's target), optionally with labels.csv (`file,label[,diagnosis,lesion_id]`, file relative to
the folder): then the CSV lists the images, its diagnosis is each image's kind and its lesion_id
keeps the images of one lesion on one side of the validation split.

The weights are bound by every duty of every source's licence: `weights_licence`.
"""

from __future__ import annotations

import hashlib
import logging
import math
import tomllib
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from .data import CLASS_NAMES, Sample, read_csv_rows, scan
from .errors import UsageError
from .images import IMAGE_SUFFIXES

LOG = logging.getLogger(__name__)

# What is known of the Kaggle "Melanoma Cancer Dataset" (shared/data/extra-train/README.md, its staging audit):
# labelled CC0 on Kaggle, but 3,149 of its train images (1,799 Benign, 1,350 Malignant) are copies of
# HAM10000 images, whose licence (CC BY-NC 4.0) re-uploading does not change.
KAGGLE_LICENCE = "CC0-1.0"
KAGGLE_CONTAINS = ("CC-BY-NC-4.0",)
KAGGLE_NOTE = ("labelled CC0 on Kaggle, but 3,149 of its train images are copies of HAM10000 images, "
               "which are CC BY-NC 4.0")

# What each licence asks of a work made from its images: attribution (BY), non-commercial use only (NC),
# the same licence for adaptations (SA). A model is bound by every duty of every image it learned from.
LICENCES = {
    "CC0-1.0": set(),
    "CC-BY-4.0": {"BY"},
    "CC-BY-SA-4.0": {"BY", "SA"},
    "CC-BY-NC-4.0": {"BY", "NC"},
    "CC-BY-NC-SA-4.0": {"BY", "NC", "SA"},
}


@dataclass(frozen=True)
class Source:
    name: str
    path: Path
    licence: str
    contains: tuple[str, ...] = ()
    note: str = ""
    per_epoch: dict = field(default_factory=dict)  # diagnosis -> at most this many images in each epoch
    weight: float = 1.0
    diagnosis_weight: dict = field(default_factory=dict)  # diagnosis -> factor on `weight` for its images
    read_other: bool = False  # Other/ (cancers that are not melanoma) read as not melanoma

    def weight_of(self, kind: str) -> float:
        return self.weight * self.diagnosis_weight.get(kind, 1.0)

    @property
    def kaggle_layout(self) -> bool:
        return (self.path / "train").is_dir()


def kaggle_source(data: Path) -> Source:
    """The default run's one source: the Kaggle download at `data`."""
    return Source("kaggle", data, KAGGLE_LICENCE, KAGGLE_CONTAINS, KAGGLE_NOTE)


def read_sources_file(path: str | Path) -> list[Source]:
    """The sources a TOML file names; anything wrong with it is refused in one line naming the file."""
    path = Path(path)
    try:
        with open(path, "rb") as f:  # TOML is UTF-8 whatever the locale
            spec = tomllib.load(f)
    except OSError as exc:
        raise UsageError(f"{path}: cannot read the sources file ({exc.strerror})") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise UsageError(f"{path}: not a TOML sources file ({exc})") from None
    entries = spec.get("source")
    if not isinstance(entries, list) or not entries:
        raise UsageError(f"{path}: no [[source]] tables (each needs name, path and licence)")
    known = {"name", "path", "licence", "contains", "note", "per_epoch", "weight", "diagnosis_weight", "read_other"}
    sources, names = [], set()
    for n, e in enumerate(entries, start=1):
        if not isinstance(e, dict):
            raise UsageError(f"{path}, source {n}: not a table (write each source as [[source]] with name, path and licence)")
        where = f"{path}, source {n}" + (f" ({e['name']})" if isinstance(e.get("name"), str) else "")
        missing = [k for k in ("name", "path", "licence") if not isinstance(e.get(k), str) or not e[k].strip()]
        if missing:
            raise UsageError(f"{where}: needs {', '.join(missing)} (text)")
        if set(e) - known:
            raise UsageError(f"{where}: unknown setting(s) {', '.join(sorted(set(e) - known))} (known: {', '.join(sorted(known))})")
        if e["name"] in names:
            raise UsageError(f"{where}: two sources are named {e['name']!r}; names must differ")
        if ":" in e["name"] or "/" in e["name"]:
            raise UsageError(f"{where}: a source name may not hold ':' or '/'")
        names.add(e["name"])
        per_epoch = e.get("per_epoch", {})
        if not isinstance(per_epoch, dict) or not all(type(v) is int and v > 0 for v in per_epoch.values()):
            raise UsageError(f"{where}: per_epoch maps a diagnosis to a positive whole number of images")
        weight = e.get("weight", 1.0)
        if type(weight) not in (int, float) or not math.isfinite(weight) or weight <= 0:
            raise UsageError(f"{where}: weight must be a positive number")
        diagnosis_weight = e.get("diagnosis_weight", {})
        if not isinstance(diagnosis_weight, dict) or not all(
                type(v) in (int, float) and math.isfinite(v) and v > 0 for v in diagnosis_weight.values()):
            raise UsageError(f"{where}: diagnosis_weight maps a diagnosis to a positive number")
        contains = e.get("contains", [])
        if not isinstance(contains, list) or not all(isinstance(c, str) and c.strip() for c in contains):
            raise UsageError(f"{where}: contains is a list of licence names, e.g. [\"CC-BY-NC-4.0\"]")
        if not isinstance(e.get("note", ""), str):
            raise UsageError(f"{where}: note must be text")
        if not isinstance(e.get("read_other", False), bool):
            raise UsageError(f"{where}: read_other is true or false")
        for lic in [e["licence"], *contains]:
            if lic not in LICENCES:
                LOG.warning(f"note: {where}: licence {lic!r} is not one this program knows ({', '.join(LICENCES)}); "
                            "the weights' licence will say its terms are unknown")
        sources.append(Source(e["name"], (path.parent / e["path"]).resolve(), e["licence"], tuple(contains),
                              e.get("note", ""), dict(per_epoch), float(weight),
                              {k: float(v) for k, v in diagnosis_weight.items()}, e.get("read_other", False)))
    return sources


@dataclass(frozen=True)
class SourceSample(Sample):
    source: str = ""
    lesion: str = ""  # images of one lesion stay on one side of the split
    other: bool = False  # from Other/ (read_other): not melanoma, but not a harmless lesion either


def scan_source(src: Source, prefix: bool) -> list[SourceSample]:
    """A source's training images. With `prefix` (several sources), each image is known as
    "name:path"; a single source keeps its plain relative path (so a Kaggle-only run is unchanged)."""
    if not src.path.is_dir():
        raise UsageError(f"source {src.name}: {src.path} is not a folder")
    tag = f"{src.name}:" if prefix else ""
    if src.kaggle_layout:
        found = [SourceSample(s.path, tag + s.rel, s.split, s.label, "", src.name, "") for s in scan(src.path, "train")]
    elif (src.path / "labels.csv").is_file():
        found = _from_labels_csv(src, tag)
    elif any((src.path / c).is_dir() for c in CLASS_NAMES):
        found = [SourceSample(s.path, tag + s.rel, "train", s.label, "", src.name, "") for s in scan(src.path, "")]
        if src.read_other:
            found += [SourceSample(f, tag + f.relative_to(src.path).as_posix(), "train", 0, "other", src.name, "", True)
                      for f in sorted((src.path / "Other").rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES and f.is_file()]
    else:
        raise UsageError(f"source {src.name}: {src.path} holds neither train/ (the Kaggle layout) nor Benign/ and Malignant/")
    if not found:
        raise UsageError(f"source {src.name}: no images in {src.path}")
    counts = Counter(s.label for s in found)
    for label, cls in enumerate(CLASS_NAMES):
        if not counts[label]:
            LOG.warning(f"note: source {src.name} has no {cls} images")
    return found


def _from_labels_csv(src: Source, tag: str) -> list[SourceSample]:
    path = src.path / "labels.csv"
    try:
        rows = read_csv_rows(path)
    except UsageError as exc:
        raise UsageError(f"source {src.name}: {exc}") from None
    if not rows or not {"file", "label"} <= set(rows[0]):
        raise UsageError(f"source {src.name}: {path} needs a header with file and label (and optionally diagnosis, lesion_id)")
    labels = {c.lower(): i for i, c in enumerate(CLASS_NAMES)}
    out, missing = [], []
    for n, row in enumerate(rows, start=2):
        label, rel = (row["label"] or "").strip(), (row["file"] or "").strip()
        if label.lower() == "other" and not src.read_other:
            continue  # not melanoma, not harmless: neither class, unless the source says to read it as not melanoma
        if label.lower() not in labels and label.lower() != "other":
            raise UsageError(f"source {src.name}: {path}, row {n}: unknown label {label!r} (Benign, Malignant or Other)")
        file = src.path / rel
        if not rel or Path(rel).is_absolute() or file.suffix.lower() not in IMAGE_SUFFIXES or not file.is_file():
            missing.append(f"row {n} {rel!r}")
            continue
        other = label.lower() == "other"
        out.append(SourceSample(file, tag + rel, "train", 0 if other else labels[label.lower()],
                                (row.get("diagnosis") or "").strip() or ("other" if other else ""), src.name,
                                (row.get("lesion_id") or "").strip(), other))
    if missing:
        raise UsageError(f"source {src.name}: {path} names {len(missing)} image(s) that are not there (first: {missing[0]})")
    return out


def scan_sources(sources: list[Source]) -> list[SourceSample]:
    """Every source's images, in source order. With several sources, a file whose bytes an earlier
    file gave (in any source) is left out with a note: it would count twice, and could fall on both
    sides of the split."""
    if len({s.name for s in sources}) < len(sources):
        raise UsageError("two sources have one name; names must differ")
    seen: dict[bytes, str] = {}
    out = []
    for src in sources:
        kept, dropped = [], []
        for s in scan_source(src, prefix=len(sources) > 1):
            digest = hashlib.sha256(s.path.read_bytes()).digest() if len(sources) > 1 else None
            if digest in seen:
                dropped.append((s.rel, seen[digest]))
                continue
            if digest is not None:
                seen[digest] = s.rel
            kept.append(s)
        if dropped:
            LOG.warning(f"note: source {src.name}: {len(dropped)} image(s) are byte-for-byte copies of an image read before and are "
                        f"left out (first: {dropped[0][0]} = {dropped[0][1]})")
        out += kept
    return out


def source_record(src: Source, samples: list[SourceSample]) -> dict:
    """What a model file says of one source: name, licence, images used per label and diagnosis,
    and a digest of the list of files (which images, not their bytes: the data fingerprint covers those)."""
    mine = sorted((s for s in samples if s.source == src.name), key=lambda s: s.rel)
    images: dict[str, dict[str, int]] = {}
    for s in mine:
        by_kind = images.setdefault("Other" if s.other else CLASS_NAMES[s.label], {})
        by_kind[s.kind or "all"] = by_kind.get(s.kind or "all", 0) + 1
    return {"name": src.name, "licence": src.licence, "contains": list(src.contains), "note": src.note,
            "images": images, "files_sha256": hashlib.sha256("\n".join(s.rel for s in mine).encode()).hexdigest(),
            "per_epoch": dict(src.per_epoch), "weight": src.weight,
            **({"diagnosis_weight": dict(src.diagnosis_weight)} if src.diagnosis_weight else {}),
            **({"read_other": True} if src.read_other else {})}


def weights_licence(records: list[dict]) -> str:
    """One plain sentence: what the licences of all the images the weights learned from ask of them
    (every duty of every licence: attribution, non-commercial use, share-alike), and the sources behind it."""
    if not records:
        return ("This model file does not record the images it was trained on, so the licence of its weights is unknown; "
                "treat it as non-commercial.")
    licences = list(dict.fromkeys(lic for r in records for lic in [r["licence"], *r.get("contains", [])]))
    duties = set().union(*(LICENCES.get(lic, set()) for lic in licences))
    unknown = [lic for lic in licences if lic not in LICENCES]
    named = "; ".join(f"{r['name']} ({r['licence']}" + (f", {r['note']}" if r.get("note") else "") + ")" for r in records)
    if "NC" in duties:
        use = "the weights may be used for non-commercial purposes only"
    elif duties or unknown:
        use = "the weights may be used"
    else:
        use = "the weights carry no restriction from their training images"
    if "BY" in duties:
        use += ", with attribution to those sources"
    if "SA" in duties:
        use += ", and shared only under the same licence where they count as an adaptation"
    if unknown:
        use += f", and only as {', '.join(unknown)} allow{'s' if len(unknown) == 1 else ''} (terms this program does not know: read them)"
    return f"Trained on {named}: {use}."


def join_lesions(groups, samples):
    """Near-duplicate group ids (audit.near_duplicate_groups) joined where images share a lesion id:
    a group per connected component of both relations."""
    import numpy as np
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components

    groups = np.asarray(groups)
    first: dict[tuple, int] = {}  # each group and each lesion -> its first image; every image is linked to those
    rows, cols = [], []
    for i, (g, s) in enumerate(zip(groups, samples)):
        for key in [("group", int(g))] + ([("lesion", s.source, s.lesion)] if s.lesion else []):
            rows.append(i)
            cols.append(first.setdefault(key, i))
    graph = coo_matrix((np.ones(len(rows), dtype=np.int8), (rows, cols)), shape=(len(groups), len(groups)))
    return connected_components(graph, directed=False)[1]
