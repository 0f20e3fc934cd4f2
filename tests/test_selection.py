"""`melanoma select` (docs/selection.md) on synthetic scored folders: no model, only predictions.csv,
metrics.json and labels CSVs written as `melanoma evaluate` and `describe --validation-csv` write them."""

import csv
import json
import math
import zlib
from pathlib import Path

import numpy as np
import pytest
from scipy.stats import norm
from sklearn.metrics import roc_auc_score

from melanoma import selection
from melanoma.cli import main
from melanoma.errors import UsageError

from .conftest import ROOT, require


def separation(auc: float) -> float:
    """The gap between the classes' means (unit normal scores) that gives this ROC AUC."""
    return math.sqrt(2) * norm.ppf(auc)


def images(name: str, melanomas: int, benign: int, per_lesion: int = 1) -> list[dict]:
    """The images of one set: key, label, lesion (each lesion `per_lesion` images of one class)."""
    out = []
    for label, n in ((1, melanomas), (0, benign)):
        for i in range(n):
            lesion = f"{name}-{label}-{i // per_lesion}"
            out.append({"file": f"{name}/{'Malignant' if label else 'Benign'}/{i}.jpg", "label": label, "lesion": lesion})
    return out


def scores(imgs: list[dict], auc: float, seed: int, own_noise: float = 0.3) -> dict[str, float]:
    """Scores whose ROC AUC is about `auc`; a lesion's shared noise is the same for every model (seeded by the lesion),
    so two models differ by their separation and a little noise of their own (`seed`)."""
    rng = np.random.default_rng(seed)
    d = separation(auc)
    out = {}
    for im in imgs:
        common = np.random.default_rng(zlib.crc32(im["lesion"].encode())).normal() + np.random.default_rng(zlib.crc32(im["file"].encode())).normal()
        out[im["file"]] = float(1 / (1 + np.exp(-(d * im["label"] + common / math.sqrt(2) + own_noise * rng.normal()))))
    return out


def write_set(folder: Path, set_name: str, labels_csv: Path, imgs: list[dict], p: dict[str, float], prefix: str = "",
              lesions: bool = True, source_of=None, group_of=None) -> None:
    """DIR/<set>/{predictions.csv,metrics.json} and the labels CSV they name (paths: `prefix` + the image's file)."""
    labels_csv.parent.mkdir(parents=True, exist_ok=True)
    if not labels_csv.exists():
        with open(labels_csv, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["path", "label", "source", "lesion_id"])
            for im in imgs:
                lesion = (group_of(im) if group_of else im["lesion"]) if lesions else ""
                w.writerow([prefix + im["file"], "Malignant" if im["label"] else "Benign", source_of(im) if source_of else "", lesion])
    out = folder / set_name
    out.mkdir(parents=True, exist_ok=True)
    (out / "metrics.json").write_text(json.dumps({"data": str(labels_csv), "layout": "csv"}))
    with open(out / "predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "label", "p_malignant", "ood_score"])
        for im in imgs:
            w.writerow([prefix + im["file"], "Malignant" if im["label"] else "Benign", f"{p[im['file']]:.6f}", ""])


ISIC, PAD = images("isic", 200, 800), images("pad", 200, 800, per_lesion=2)
KAGGLE, ISIC2017 = images("kaggle", 200, 800, per_lesion=3), images("isic2017", 5, 40)


def scored(tmp_path: Path, name: str, aucs: dict[str, float], seed: int, val_depth: int = 1, val_drop: int = 0) -> Path:
    """A model's scored folder: isic, pad and val (kaggle and isic2017 sources) at the given ROC AUCs. Its validation
    CSV lies `val_depth` folders below tmp_path (paths climb back with '..'); it holds out all but the first `val_drop` images."""
    folder = tmp_path / name
    write_set(folder, "isic", tmp_path / "data" / "isic.csv", ISIC, scores(ISIC, aucs["isic"], seed), lesions=False)
    write_set(folder, "pad", tmp_path / "data" / "pad.csv", PAD, scores(PAD, aucs["pad"], seed + 1))
    val = (KAGGLE + ISIC2017)[val_drop:]
    p = {**scores(KAGGLE, aucs["val"], seed + 2), **scores(ISIC2017, aucs["val"], seed + 3)}
    csv_file = tmp_path.joinpath(*[f"{name}-val"] * val_depth) / "validation.csv"
    write_set(folder, "val", csv_file, val, p, prefix="../" * val_depth + "sources/", source_of=lambda im: im["file"].split("/")[0],
              group_of=lambda im: f"{name}-g{im['lesion']}")  # each split numbers its groups its own way
    return folder


BASE = {"isic": 0.85, "pad": 0.85, "val": 0.85}
BETTER = {"isic": 0.90, "pad": 0.90, "val": 0.90}


def test_ranking_figures_match_roc_auc_and_the_written_threshold():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(20, 60))
        y = (rng.random(n) < 0.3).astype(int)
        y[:2] = 1, 0
        s = np.round(rng.random(n) + 0.3 * y, 1)  # ties, between and within the classes
        w = rng.integers(0, 3, size=(2, n))
        w[:, :2] = 1
        auc, spec = selection.ranking_figures(y, s, w)
        for r in range(2):
            yy, ss = np.repeat(y, w[r]), np.repeat(s, w[r])
            melanomas = np.sort(ss[yy == 1])[::-1]
            threshold = melanomas[math.ceil(0.9 * len(melanomas)) - 1]
            assert auc[r] == pytest.approx(roc_auc_score(yy, ss), abs=1e-12)
            assert spec[r] == pytest.approx(np.mean(ss[yy == 0] < threshold), abs=1e-12)


def test_a_planted_gain_is_found(tmp_path):
    ref = scored(tmp_path, "ref", BASE, seed=1)
    cand = scored(tmp_path, "cand", BETTER, seed=2, val_depth=2, val_drop=30)  # its validation CSV one folder deeper
    r = selection.compare(ref, cand, resamples=500)
    sets = r["sets"]
    assert set(sets) == {"isic", "pad", "val:kaggle", "val:isic2017"} and r["counted_sets"] == ["isic", "pad", "val:kaggle"]
    assert sets["val:kaggle"]["images"] == len(KAGGLE) - 30  # held out by both
    assert (sets["pad"]["melanoma_units"], sets["pad"]["benign_units"]) == (100, 400)
    assert (sets["isic"]["melanoma_units"], sets["isic"]["benign_units"]) == (200, 800)
    assert sets["val:kaggle"]["melanoma_units"] == math.ceil(200 / 3) - 10  # 30 of the first melanomas dropped: 10 lesions
    assert not sets["val:isic2017"]["counted"] and "5 melanoma and 40 benign units" in sets["val:isic2017"]["note"]
    for name in r["counted_sets"]:
        s = sets[name]
        assert s["candidate"]["auc"] - s["reference"]["auc"] == pytest.approx(0.05, abs=0.03)
        assert s["delta_F"] > 0 and s["delta_F_ci"][0] < s["delta_F"] < s["delta_F_ci"][1]
    assert r["delta_M"] == pytest.approx(np.mean([sets[n]["delta_F"] for n in r["counted_sets"]]))
    assert r["delta_M_ci"][0] > 0 and r["decision"]["replace"] and r["verdict"].startswith("replace")
    assert r["decision"]["above_members_spread"] is None
    assert selection.compare(ref, cand, resamples=500) == r  # seed 0: the same intervals every time


def test_a_copy_of_the_model_gains_nothing(tmp_path):
    ref = scored(tmp_path, "ref", BASE, seed=1)
    copy = scored(tmp_path, "copy", BASE, seed=1, val_depth=3)
    r = selection.compare(ref, copy, resamples=300)
    assert r["delta_M"] == 0 and r["delta_M_ci"] == [0, 0]
    assert all(s["delta_F"] == 0 for s in r["sets"].values())
    assert not r["decision"]["lower_bound_above_zero"] and r["decision"]["no_counted_set_falls"] and not r["decision"]["replace"]
    assert "not above zero" in r["verdict"]


def test_a_loss_on_one_set_is_refused_whatever_the_mean(tmp_path):
    ref = scored(tmp_path, "ref", {"isic": 0.75, "pad": 0.90, "val": 0.85}, seed=1)
    cand = scored(tmp_path, "cand", {"isic": 0.95, "pad": 0.84, "val": 0.87}, seed=2)
    r = selection.compare(ref, cand, resamples=500)
    assert r["delta_M_ci"][0] > 0 and r["sets"]["pad"]["delta_F_ci"][1] < 0
    assert not r["decision"]["no_counted_set_falls"] and not r["decision"]["replace"]
    assert "falls on pad" in r["verdict"]


def test_a_gain_within_the_members_spread_is_refused(tmp_path):
    ref = scored(tmp_path, "ref", BASE, seed=1)
    cand = scored(tmp_path, "cand", BETTER, seed=2)
    wide = [scored(tmp_path, "m1", BASE, seed=5), scored(tmp_path, "m2", {"isic": 0.96, "pad": 0.96, "val": 0.96}, seed=6)]
    r = selection.compare(ref, cand, wide, resamples=300)
    assert r["decision"]["lower_bound_above_zero"] and r["decision"]["no_counted_set_falls"]
    assert r["members_spread"] > r["delta_M"] and r["decision"]["above_members_spread"] is False and not r["decision"]["replace"]
    assert "members' spread" in r["verdict"] and len(r["members"]) == 2
    assert r["members_mean"] == pytest.approx(np.mean([m["M"] for m in r["members"]]))
    tight = [scored(tmp_path, "m3", BETTER, seed=2), scored(tmp_path, "m4", BETTER, seed=2)]  # copies: no spread
    r = selection.compare(ref, cand, tight, resamples=300)
    assert r["members_spread"] == 0 and r["decision"]["above_members_spread"] and r["decision"]["replace"]


def test_a_missing_folder_or_file_is_named(tmp_path):
    ref = scored(tmp_path, "ref", BASE, seed=1)
    with pytest.raises(UsageError, match="nowhere: no such folder"):
        selection.compare(ref, tmp_path / "nowhere")
    (ref / "pad" / "predictions.csv").unlink()
    with pytest.raises(UsageError, match=r"pad/predictions.csv: cannot read"):
        selection.compare(ref, ref)
    (ref / "pad" / "predictions.csv").write_text("path,label,p_malignant\nx.jpg,Benign,high\n")
    with pytest.raises(UsageError, match=r"pad/predictions.csv, row 2"):
        selection.compare(ref, ref)


def test_the_command_prints_writes_the_json_and_logs_one_line(tmp_path, capsys, monkeypatch):
    scored(tmp_path, "ref", BASE, seed=1)
    scored(tmp_path, "cand", BETTER, seed=2)
    log = tmp_path / "selection.md"
    log.write_text((ROOT / "docs" / "selection.md").read_text())
    before = log.read_text().rstrip().splitlines()
    monkeypatch.chdir(tmp_path)
    code = main(["select", "ref", "cand", "--name", "better", "--out", "out/better.json", "--log", str(log), "--resamples", "200"])
    out = capsys.readouterr().out
    assert code == 0 and "val:isic2017" in out and "decision: replace" in out
    result = json.loads((tmp_path / "out" / "better.json").read_text())
    assert result["name"] == "better" and result["decision"]["replace"] and result["resamples"] == 200
    after = log.read_text().rstrip().splitlines()
    assert after[:len(before)] == before and len(after) == len(before) + 1
    header = next(line for line in before if line.startswith("| date |"))
    cells = [c.strip() for c in after[-1].strip("|").split(" | ")]
    assert len(cells) == header.count("|") - 1
    assert cells[1:3] == ["better", "ref"] and cells[3].startswith(f"{result['M']['candidate']:.4f} (+") and cells[5].startswith("replace")
    assert main(["select", "ref", "nowhere"]) == 1 and "nowhere: no such folder" in capsys.readouterr().err


@pytest.mark.slow
def test_describe_writes_the_models_own_validation_images(recorded_run, data_dir, tmp_path, monkeypatch):
    from melanoma.data import labelled_set

    monkeypatch.setenv("MELANOMA_DATA", str(data_dir))
    out = tmp_path / "deep" / "validation.csv"
    assert main(["describe", "--model", str(recorded_run / "model.safetensors"), "--validation-csv", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    split = json.loads((recorded_run / "split.json").read_text())
    assert len(rows) == len(split["validation"]) == 12
    assert {r["source"] for r in rows} == {"kaggle"} and all(r["lesion_id"].startswith("g") for r in rows)
    assert len(labelled_set(None, out).samples) == 12  # `evaluate --labels` reads it: paths relative to the CSV


def test_the_kept_decisions_come_from_the_kept_scored_folders(tmp_path, data_dir):
    """Every select.json under docs/selection/ is what `melanoma select` computes again from the kept folders
    (the labels CSVs they name: the repository's, and ISIC 2018's beside the Kaggle data), and the README quotes mean3's."""
    import shutil

    external = data_dir.parent / "external-dev"
    require((external / "isic2018-task3-test" / "labels.csv").is_file(), f"external development sets not found at {external}")
    kept = json.loads((ROOT / "docs" / "selection" / "mean3" / "select.json").read_text())
    for folder in [kept["reference"], kept["candidate"], *(m["folder"] for m in kept["members"])]:  # as kept, paths made absolute
        for part in ("isic", "pad", "val"):
            shutil.copytree(ROOT / folder / part, tmp_path / folder / part)
            m = json.loads((ROOT / folder / part / "metrics.json").read_text())
            data = m["data"].replace("../shared/data/external-dev", str(external), 1)
            m["data"] = data if Path(data).is_absolute() else str(ROOT / data)
            (tmp_path / folder / part / "metrics.json").write_text(json.dumps(m))
    again = selection.compare(tmp_path / kept["reference"], tmp_path / kept["candidate"],
                              [tmp_path / m["folder"] for m in kept["members"]], kept["resamples"], kept["seed"])
    for key in ("M", "delta_M", "delta_M_ci", "members_spread", "decision", "verdict"):
        assert again[key] == kept[key], key
    readme = (ROOT / "README.md").read_text().replace("\n", " ")
    lo, hi = kept["delta_M_ci"]
    quoted = (f"{kept['M']['candidate']:.3f} against the bundled model's {kept['M']['reference']:.3f} "
              f"(difference {kept['delta_M']:+.3f}, 95% CI {lo:+.3f} to {hi:+.3f}")
    assert quoted.replace("-", "−") in readme, quoted
    log = (ROOT / "docs" / "selection.md").read_text()
    assert sum(row.startswith("| 2026-") for row in log.splitlines()) == len(list((ROOT / "docs" / "selection").glob("*/select.json")))
