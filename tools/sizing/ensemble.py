"""How far do test-time flips and ensembles of trained models go? (developer tooling, not the product)

    python tools/sizing/ensemble.py runs/lite0_v2/model.safetensors runs/gpu_s5/model.safetensors … \
        [--flips id,h,v,hv] [--cache .dev/logits] [--data ../shared/data/melanoma]

Scores the validation split (the models must share it: same data, --seed, --val-fraction) and the test
split with every model and flip, caching logits in --cache (named after each model's run folder),
then prints for each model alone, with all flips averaged, and for all models together: validation
ROC AUC; test accuracy at the threshold picked on validation for 95% sensitivity (after a temperature
fitted on validation), test ROC AUC, the best accuracy any threshold gives on test (an oracle, only to
size the problem); clean-test balanced accuracy, sensitivity and ROC AUC. Logits are averaged.
The product ships one network; these figures say what more compute at inference would buy.
"""

import argparse
from pathlib import Path

import numpy as np
from sklearn.metrics import roc_auc_score

from melanoma import model as models
from melanoma.audit import near_duplicate_groups, test_duplicates_in_train, thumbnail
from melanoma.calibration import calibrated_probability, fit_temperature, threshold_for_sensitivity
from melanoma.data import read_samples, scan, split_train_val
from melanoma.lineage import split_digest
from melanoma.metrics import binary_metrics
from melanoma.preprocess import model_view
from melanoma.split import load_split
from melanoma.train import predict_logits

FLIPS = {"id": lambda a: a, "h": lambda a: a[:, :, ::-1], "v": lambda a: a[:, ::-1], "hv": lambda a: a[:, ::-1, ::-1]}


def views(data: Path, cache: Path, pre, val_fraction: float, seed: int):
    path = cache / "views.npz"
    if not path.exists():
        samples, train_views, train_thumbs, labels, _ = load_split(scan(data, "train"), pre)
        _, va = split_train_val(labels, near_duplicate_groups(train_thumbs), val_fraction, seed)
        test_views, test_thumbs, test_labels = [], [], []
        for s, im in read_samples(scan(data, "test"), []):
            test_views.append(model_view(im, pre))
            test_thumbs.append(thumbnail(im))
            test_labels.append(s.label)
        leaked, _, _ = test_duplicates_in_train(train_thumbs, np.stack(test_thumbs))
        np.savez(path, vv=np.stack([train_views[i] for i in va]), vl=labels[va], tv=np.stack(test_views), tl=np.array(test_labels),
                 clean=~leaked, split=split_digest([samples[i].rel for i in va]))
    return np.load(path)


def report(tag: str, parts: list, z) -> None:
    vl, tl, clean = z["vl"], z["tl"], z["clean"]
    lv, lt = sum(p["val"] for p in parts) / len(parts), sum(p["test"] for p in parts) / len(parts)
    t = fit_temperature(lv, vl)
    pv, pt = calibrated_probability(lv, t), calibrated_probability(lt, t)
    threshold = threshold_for_sensitivity(pv, vl, 0.95)
    full, cm = binary_metrics(tl, pt, threshold, bootstrap=0), binary_metrics(tl[clean], pt[clean], threshold, bootstrap=0)
    oracle = max(((pt >= x) == tl).mean() for x in np.unique(pt))
    print(f"| {tag} | {roc_auc_score(vl, pv):.4f} | {full['accuracy']:.2%} | {full['roc_auc']:.4f} | {oracle:.2%} | "
          f"{cm['balanced_accuracy']:.2%} | {cm['sensitivity']:.2%} | {cm['roc_auc']:.4f} |")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--flips", default="id,h,v,hv")
    ap.add_argument("--cache", default=".dev/logits")
    ap.add_argument("--data", default="../shared/data/melanoma")
    a = ap.parse_args()
    cache = Path(a.cache)
    cache.mkdir(parents=True, exist_ok=True)
    flips = a.flips.split(",")
    logits = {}
    for path in a.models:
        model, info = models.load(path)
        tc = info.train_config
        z = views(Path(a.data), cache, info.preprocess, tc["val_fraction"], tc["seed"])
        if info.validation.get("split_sha256", str(z["split"])) != str(z["split"]):  # older files: --seed and --val-fraction only
            raise SystemExit(f"error: {path}: another validation split than the cached one ({cache / 'views.npz'})")
        name = Path(path).parent.name
        for f in flips:
            file = cache / f"{name}_{f}.npz"
            if not file.exists():
                np.savez(file, val=predict_logits(model, list(np.ascontiguousarray(FLIPS[f](z["vv"]))), info.preprocess),
                         test=predict_logits(model, list(np.ascontiguousarray(FLIPS[f](z["tv"]))), info.preprocess))
            logits[name, f] = np.load(file)
    print("| models (flips) | val AUC | test acc | test AUC | test acc, best threshold | clean bal acc | clean sens | clean AUC |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    names = [Path(p).parent.name for p in a.models]
    first = flips[0]
    for n in names:
        report(f"{n} ({first})", [logits[n, first]], z)
        if len(flips) > 1:
            report(f"{n} ({a.flips})", [logits[n, f] for f in flips], z)
    if len(names) > 1:
        report(f"all {len(names)} ({first})", [logits[n, first] for n in names], z)
        if len(flips) > 1:
            report(f"all {len(names)} ({a.flips})", [logits[n, f] for n in names for f in flips], z)


if __name__ == "__main__":
    main()
