"""What the model names besides melanoma: the differential, the estimate of another skin cancer and the
verdict in words (kinds.py); a model file with a kinds head, read by the one loader, exported to ONNX
with it, and made by `melanoma fit-kinds` (kinds_fit.py)."""

import csv
import json
from dataclasses import replace
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from torch import nn

from melanoma.explain import infer
from melanoma.kinds import MELANOMA_SUSPECTED, NO_MELANOMA_SIGN, NO_SIGN, OTHER_SUSPECTED, OTHER_TARGET, code_of, differential, other_cancer, verdict
from melanoma.model import build, load, other_weights, save
from melanoma.modelinfo import ModelFileError, ModelInfo
from melanoma.predict import CSV_COLUMNS, predictions

from .conftest import lesion_image, melanoma_cli, to_batch
from .test_sources import small_source, write

KINDS = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]


def test_the_differential_is_the_kinds_heads_softmax_and_the_other_cancer_estimate_its_share_of_them():
    logits = np.random.default_rng(0).normal(size=(5, 7)) * 3
    diff = differential(logits, KINDS)
    assert np.allclose(diff, np.exp(logits) / np.exp(logits).sum(1, keepdims=True))
    assert np.allclose(differential(logits + 100, KINDS), diff)  # no overflow
    assert np.allclose(other_cancer(diff, KINDS), diff[:, 0] + diff[:, 1])


def test_correcting_for_the_training_prior_divides_the_heads_softmax_by_it():
    """Logit adjustment (kinds_fit.correct_for_prior): the corrected softmax is the old one divided by the prior, renormalised."""
    from melanoma.kinds_fit import correct_for_prior

    torch.manual_seed(0)
    net = SimpleNamespace(kinds=nn.Linear(4, 3), kind_codes=["bcc", "bkl", "nv"])
    x = torch.randn(6, 4)
    with torch.no_grad():
        before = torch.softmax(net.kinds(x), 1).numpy()
    prior = np.array([0.1, 0.6, 0.3])
    info = correct_for_prior(net, ModelInfo(arch="seed_cnn", preprocess=None), prior)  # type: ignore[arg-type]
    with torch.no_grad():
        after = torch.softmax(net.kinds(x), 1).numpy()
    expected = before / prior
    assert np.allclose(after, expected / expected.sum(1, keepdims=True), atol=1e-6)
    assert info.kinds_prior == {"bcc": 0.1, "bkl": 0.6, "nv": 0.3}
    with pytest.raises(AssertionError):  # once only
        correct_for_prior(net, info, prior)


def test_the_verdict_names_melanoma_first_then_another_cancer_and_no_sign_only_below_both():
    info = SimpleNamespace(threshold=0.3, other_threshold=0.2)
    assert verdict(0.3, 0.9, info) == MELANOMA_SUSPECTED
    assert verdict(0.29, 0.2, info) == OTHER_SUSPECTED
    assert verdict(0.29, 0.19, info) == NO_SIGN
    # a model without a kinds head cannot speak for other skin cancers
    assert verdict(0.1, None, SimpleNamespace(threshold=0.3, other_threshold=None)) == NO_MELANOMA_SIGN


def test_other_archives_names_map_to_the_seven_kinds():
    assert [code_of(n) for n in ("seborrheic_keratosis", "nevus", "BCC", "ACK", "SCC", "nv", "other", "")] == \
        ["bkl", "nv", "bcc", "akiec", "akiec", "nv", None, None]


def kinds_model(tmp_path, threshold=0.45, other_threshold=0.3):
    """An EfficientNet-Lite0 at 64 px with a random kinds head, saved."""
    torch.manual_seed(0)
    model, pre = build("efficientnet_lite0", image_size=64)
    with torch.no_grad():
        model.head[-1].weight.normal_(0, 0.05)
    model.kinds = nn.Linear(1280, len(KINDS))
    with torch.no_grad():
        model.kinds.weight.normal_(0, 0.05)
    info = ModelInfo("efficientnet_lite0", pre, threshold=threshold, kinds=list(KINDS), other_threshold=other_threshold, other_target_sensitivity=0.9)
    save(tmp_path / "k.safetensors", model.eval(), info)
    return tmp_path / "k.safetensors"


def test_a_model_file_with_a_kinds_head_round_trips_and_predicts_the_three_verdicts(tmp_path):
    path = kinds_model(tmp_path)
    model, info = load(path)
    assert info.kinds == KINDS and model.kind_codes == KINDS
    x = to_batch([lesion_image(seed=s) for s in range(4)], info.preprocess)
    out = infer(model, x, cam=False)
    assert out.kinds is not None and out.kinds.shape == (4, 7)
    with torch.no_grad():
        assert np.allclose(out.kinds, model.kinds(model.features(x).mean((2, 3))).numpy(), atol=1e-5)
    for pred in predictions(out, info):
        assert pred.verdict == verdict(pred.p_malignant, pred.p_other, info)
        assert [k for k, _ in pred.differential] and pred.top_kind == pred.differential[0][0]
        assert sum(p for _, p in pred.differential) == pytest.approx(1) and pred.p_other == pytest.approx(sum(
            p for k, p in pred.differential if k in ("bcc", "akiec")))
    assert np.allclose([[dict(p.differential)[k] for k in KINDS] for p in predictions(out, info)], differential(out.kinds, KINDS))
    # the map of the other-cancer estimate is the class activation map of its margin
    cam = infer(model, x, target=OTHER_TARGET).cam
    with torch.no_grad():
        raw = torch.einsum("c,bchw->bhw", other_weights(model.kinds, KINDS), model.features(x)).clamp(min=0)
    resized = nn.functional.interpolate(raw[:1, None], size=64, mode="bilinear").ravel().numpy()
    assert cam.shape == (4, 64, 64) and np.corrcoef(cam[0].ravel(), resized)[0, 1] > 0.99


def test_kinds_tensors_without_their_list_are_refused_in_one_line(tmp_path):
    path = kinds_model(tmp_path)
    model, info = load(path)
    save(tmp_path / "bad.safetensors", model, replace(info, kinds=KINDS[:6]))
    with pytest.raises(ModelFileError, match="kinds head's tensors and its list of kinds"):
        load(tmp_path / "bad.safetensors")


def test_a_model_without_a_kinds_head_says_no_sign_of_melanoma_never_benign(tiny_model_file):
    model, info = load(tiny_model_file)
    preds = predictions(infer(model, to_batch([lesion_image(seed=s) for s in range(3)], info.preprocess), cam=False), info)
    for p in preds:
        assert p.verdict in (MELANOMA_SUSPECTED, NO_MELANOMA_SIGN) and p.p_other is None and p.differential is None


def test_an_ensemble_of_members_with_kinds_heads_averages_them_and_its_file_keeps_the_head(tmp_path):
    from melanoma.ensemble import member_record
    from melanoma.model import Ensemble

    members = []
    for seed in (1, 2):
        (tmp_path / str(seed)).mkdir()
        torch.manual_seed(seed)
        members.append(load(kinds_model(tmp_path / str(seed)))[0])
        with torch.no_grad():
            members[-1].kinds.weight.normal_(0, 0.05)  # members differ
    ens = Ensemble(members).eval()
    info = load(kinds_model(tmp_path))[1]
    x = to_batch([lesion_image(seed=s) for s in range(3)], info.preprocess)
    mean = np.mean([infer(m, x, cam=False).kinds for m in members], 0)
    assert ens.kind_codes == KINDS and np.allclose(infer(ens, x, cam=False).kinds, mean, atol=1e-5)
    save(tmp_path / "ens.safetensors", ens, replace(info, members=[member_record(f"m{i}", info) for i in range(2)]))
    back, _ = load(tmp_path / "ens.safetensors")
    assert np.allclose(infer(back, x, cam=False).kinds, mean, atol=1e-5)


def melanoma_margin(model, x) -> tuple[np.ndarray, np.ndarray]:
    """The melanoma head's margin and the kinds head's margin of melanoma against the mean of the other kinds."""
    with torch.no_grad():
        logits, kinds = model(x), model.kinds(model.features(x).mean((2, 3)))
    mel = model.kind_codes.index("mel")
    others = [i for i, k in enumerate(model.kind_codes) if k != "mel"]
    return (logits[:, 1] - logits[:, 0]).numpy(), (kinds[:, mel] - kinds[:, others].mean(1)).numpy()


def test_the_melanoma_estimate_read_from_the_kinds_head_is_its_margin_in_a_file_and_in_an_ensemble(tmp_path):
    from melanoma.ensemble import member_record
    from melanoma.model import Ensemble, kinds_margin_head

    model, info = load(kinds_model(tmp_path))
    x = to_batch([lesion_image(seed=s) for s in range(3)], info.preprocess)
    head, margin = melanoma_margin(model, x)
    assert not np.allclose(head, margin, atol=1e-3)  # a head of its own, before
    kinds_margin_head(model)
    assert np.allclose(*melanoma_margin(model, x), atol=1e-5) and np.allclose(melanoma_margin(model, x)[1], margin, atol=1e-5)
    # a file flagged so reads it from the kinds head, whatever melanoma head it keeps
    trained, _ = load(kinds_model(tmp_path))
    save(tmp_path / "flagged.safetensors", trained, replace(info, melanoma_from_kinds=True))
    back, back_info = load(tmp_path / "flagged.safetensors")
    assert back_info.melanoma_from_kinds and np.allclose(melanoma_margin(back, x)[0], margin, atol=1e-5)
    # an ensemble's file keeps its members' own heads; loaded flagged, it reads its averaged kinds head's margin
    members = []
    for seed in (1, 2):
        (tmp_path / str(seed)).mkdir()
        torch.manual_seed(seed)
        members.append(load(kinds_model(tmp_path / str(seed)))[0])
        with torch.no_grad():
            members[-1].kinds.weight.normal_(0, 0.05)
    ens = Ensemble(members).eval()
    save(tmp_path / "ens.safetensors", ens, replace(info, members=[member_record(f"m{i}", info) for i in range(2)], melanoma_from_kinds=True))
    back, _ = load(tmp_path / "ens.safetensors")
    assert np.allclose(*melanoma_margin(back, x), atol=1e-5) and np.allclose(melanoma_margin(back, x)[1], melanoma_margin(ens, x)[1], atol=1e-5)
    # without a kinds head there is nothing to read it from: refused in one line when the file is loaded
    plain, plain_info = load(kinds_model(tmp_path))
    plain.kinds = None
    save(tmp_path / "plain.safetensors", plain, replace(plain_info, kinds=[], other_threshold=None, melanoma_from_kinds=True))
    with pytest.raises(ModelFileError, match="needs a kinds head"):
        load(tmp_path / "plain.safetensors")


def test_onnx_export_carries_the_kinds_and_the_other_cancer_map(tmp_path):
    from melanoma.onnx_model import OnnxModel, export
    from melanoma.preprocess import model_view, normalize_nhwc

    model, info = load(kinds_model(tmp_path))
    export(model, info, tmp_path / "k.onnx")
    onnx = OnnxModel(tmp_path / "k.onnx")
    views = np.stack([model_view(lesion_image(seed=s), info.preprocess) for s in range(3)])
    x = to_batch([lesion_image(seed=s) for s in range(3)], info.preprocess)
    torch_out, onnx_out = infer(model, x, target=OTHER_TARGET), infer(onnx, normalize_nhwc(views, info.preprocess), target=OTHER_TARGET)
    assert np.allclose(onnx_out.kinds, torch_out.kinds, atol=1e-4) and np.allclose(onnx_out.cam, torch_out.cam, atol=1e-3)
    assert [p.verdict for p in predictions(onnx_out, onnx.info)] == [p.verdict for p in predictions(torch_out, info)]


def test_predict_csv_keeps_its_columns_and_adds_the_verdict_and_the_differential(tmp_path):
    path = kinds_model(tmp_path)
    lesion_image(seed=3).save(tmp_path / "spot.png")
    r = melanoma_cli("predict", tmp_path / "spot.png", "--model", path, "--csv", tmp_path / "out.csv")
    assert r.returncode == 0, r.stderr
    rows = list(csv.DictReader(open(tmp_path / "out.csv")))
    assert list(rows[0]) == CSV_COLUMNS and CSV_COLUMNS[:5] == ["path", "p_malignant", "label", "ood_score", "ood"]
    row = rows[0]
    pairs = [kp.split(":") for kp in row["differential"].split(";")]
    assert [k for k, _ in pairs] == sorted(KINDS, key=lambda k: -float(dict(pairs)[k])) and row["top_kind"] == pairs[0][0]
    assert row["verdict"] in (MELANOMA_SUSPECTED, OTHER_SUSPECTED, NO_SIGN) and row["verdict"] in r.stdout
    assert "Benign" not in r.stdout


def test_the_page_names_another_skin_cancer_with_its_differential_and_its_own_map(tmp_path, monkeypatch):
    from .test_app import page, text_of

    path = kinds_model(tmp_path, threshold=1.0, other_threshold=0.0)  # every spot: other skin cancer suspected
    at = page(path, monkeypatch)
    png = tmp_path / "spot.png"
    lesion_image(seed=3).save(png)
    at.file_uploader[0].set_value([("spot.png", png.read_bytes(), "image/png")]).run()
    assert not at.exception
    assert any(e.value.startswith("**Other skin cancer suspected**") for e in at.error), text_of(at)
    assert "of another skin cancer (basal cell carcinoma" in text_of(at)
    assert len(at.get("progress")) == 3 and "What it most resembles" in text_of(at)
    captions = [c for im in at.get("image") for c in im.captions]
    assert sum("raised the estimate of another skin cancer" in c for c in captions) == 1


def test_evaluate_reports_the_verdicts_by_class_and_kind_and_the_seven_kind_task(tmp_path):
    import json

    path = kinds_model(tmp_path)
    rows = ["file,label,dx"]
    for i, (label, dx) in enumerate([("Benign", "NV"), ("Benign", "BKL"), ("Malignant", "MEL"), ("Other", "BCC"), ("Other", "AKIEC"),
                                     ("Benign", "NV"), ("Malignant", "MEL"), ("Other", "BCC")]):
        lesion_image(seed=i).save(tmp_path / f"{i}.png")
        rows.append(f"{i}.png,{label},{dx}")
    (tmp_path / "labels.csv").write_text("\n".join(rows) + "\n")
    r = melanoma_cli("evaluate", "--model", path, "--labels", tmp_path / "labels.csv", "--by-kind", "dx", "--out", tmp_path / "ev",
                     "--bootstrap", "50")
    assert r.returncode == 0, r.stderr[-2000:]
    m = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert m["test"]["images"] == 8 and m["test"]["malignant"] == 2  # Other counts as not melanoma in the melanoma figures
    other = next(v for v in m["verdicts"] if v["class"] == "Other" and v["kind"] == "all")
    preds = {row["path"]: row for row in csv.DictReader(open(tmp_path / "ev" / "predictions.csv"))}
    sent = [preds[f"{i}.png"]["verdict"] in (MELANOMA_SUSPECTED, OTHER_SUSPECTED) for i in (3, 4, 7)]
    assert other["images"] == 3 and other["sent_to_doctor"] == pytest.approx(np.mean(sent))
    task = m["seven_kinds"]
    tops = [preds[f"{i}.png"]["top_kind"] for i in range(8)]
    truth = ["nv", "bkl", "mel", "bcc", "akiec", "nv", "mel", "bcc"]
    recalls = [np.mean([t == k for t, d in zip(tops, truth) if d == k]) for k in dict.fromkeys(truth)]
    assert task["balanced_accuracy"] == pytest.approx(np.mean(recalls)) and np.array(task["confusion_matrix"]).sum() == 8
    assert (tmp_path / "ev" / "kinds_confusion.png").stat().st_size > 1000 and "balanced multi-class accuracy" in r.stdout


@pytest.mark.slow
def test_train_diagnosis_keeps_a_kinds_head_and_fit_kinds_refits_one_leaving_the_melanoma_head_alone(tmp_path, small_data, extra_dir):
    ham = small_source(tmp_path / "data", extra_dir, "ham10000", per_diagnosis=8)
    sources = write(tmp_path / "sources.toml", f"""
[[source]]
name = "kaggle"
path = "{small_data}"
licence = "CC0-1.0"
[[source]]
name = "ham"
path = "{ham}"
licence = "CC-BY-NC-4.0"
read_other = true
""")
    run = tmp_path / "run"
    r = melanoma_cli("train", "--sources", sources, "--out", run, "--img-size", "64", "--epochs", "1", "--batch-size", "8", "--val-fraction", "0.333",
                     "--diagnosis", "0.5", "--other-target-sensitivity", "0.75")
    assert r.returncode == 0, r.stderr[-2000:]
    trained, info = load(run / "model.safetensors")  # trained end to end: the file keeps the head, its threshold chosen on validation
    assert info.kinds == trained.kind_codes and {"akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"} == set(info.kinds)
    assert info.other_target_sensitivity == 0.75 and 0 < info.other_threshold <= 0.5 and info.kinds_validation["images"] > 0
    # its bias corrected for the training prior: each kind's share of the loss, here (no weights, every image drawn each
    # epoch, the two classes balanced) its benign training images' share among the benign ones, times the benign share
    prior = info.kinds_prior
    assert set(prior) == set(info.kinds) and sum(prior.values()) == pytest.approx(1, abs=1e-5)
    train_files = set(json.loads((run / "split.json").read_text())["train"])
    with open(ham / "labels.csv") as f:
        benign = [r["diagnosis"] for r in csv.DictReader(f) if r["label"] == "Benign" and f"ham:{r['file']}" in train_files]
    assert prior["nv"] / prior["bkl"] == pytest.approx(benign.count("nv") / benign.count("bkl"), rel=1e-4)
    # a head trained before the correction (taken out again here) gets the same from fit-kinds --keep-head
    legacy = trained.state_dict()
    legacy["kinds.bias"] = legacy["kinds.bias"] + torch.tensor([np.log(prior[k]) for k in info.kinds], dtype=torch.float32)
    trained.load_state_dict(legacy)
    save(tmp_path / "legacy.safetensors", trained, replace(info, kinds_prior={}))
    r = melanoma_cli("fit-kinds", "--keep-head", "--model", tmp_path / "legacy.safetensors", "--out", tmp_path / "kept.safetensors",
                     "--target-sensitivity", "0.75")
    assert r.returncode == 0, r.stderr[-2000:]
    kept, kept_info = load(tmp_path / "kept.safetensors")
    assert kept_info.kinds_prior == pytest.approx(prior) and kept_info.other_threshold == pytest.approx(info.other_threshold, rel=1e-5)
    assert torch.allclose(kept.state_dict()["kinds.bias"], load(run / "model.safetensors")[0].state_dict()["kinds.bias"], atol=1e-5)
    r = melanoma_cli("fit-kinds", "--keep-head", "--model", tmp_path / "kept.safetensors", "--out", tmp_path / "twice.safetensors")
    assert r.returncode != 0 and "already corrected" in r.stderr and "Traceback" not in r.stderr
    r = melanoma_cli("fit-kinds", "--model", run / "model.safetensors", "--out", tmp_path / "k.safetensors", "--target-sensitivity", "0.8")
    assert r.returncode == 0, r.stderr[-2000:]
    before, info0 = load(run / "model.safetensors")
    after, info = load(tmp_path / "k.safetensors")
    assert info.kinds == sorted(info.kinds) and {"bcc", "akiec", "nv", "mel"} <= set(info.kinds)
    assert 0 < info.other_threshold <= 0.5 and info.other_target_sensitivity == 0.8 and info.kinds_prior == {}  # a balanced fit
    other = {k: f for k, f in info.kinds_validation["by_kind"].items() if k in ("bcc", "akiec")}
    sent = sum(f["images"] * f["sent_to_doctor"] for f in other.values()) / sum(f["images"] for f in other.values())
    assert sent >= 0.8  # the threshold keeps the target on the validation images it was chosen on
    assert (info.threshold, info.temperature, info.validation) == (info0.threshold, info0.temperature, info0.validation)
    same = {k: v for k, v in after.state_dict().items() if not k.startswith("kinds.")}
    was = {k: v for k, v in before.state_dict().items() if not k.startswith("kinds.")}
    assert same.keys() == was.keys() and all(torch.equal(v, was[k]) for k, v in same.items())
    d = melanoma_cli("describe", "--model", tmp_path / "k.safetensors")
    assert "kinds head: akiec, bcc" in d.stdout and "balanced accuracy of the top kind" in d.stdout
    # --unnamed-kinds label: the Kaggle images teach the kinds head too, their label as a set of kinds, and count in its prior
    from melanoma.kinds_fit import training_prior
    from melanoma.split import model_data_dir, model_split

    r = melanoma_cli("train", "--sources", sources, "--out", tmp_path / "labelled", "--img-size", "64", "--epochs", "1", "--batch-size", "8",
                     "--val-fraction", "0.333", "--diagnosis", "0.5", "--unnamed-kinds", "label")
    assert r.returncode == 0, r.stderr[-2000:]
    assert "without a diagnosis (their label as a set of kinds)" in r.stderr
    labelled, linfo = load(tmp_path / "labelled" / "model.safetensors")
    assert linfo.train_config["unnamed_kinds"] == "label"
    split = model_split(linfo, model_data_dir(linfo, None), keep_views=False)
    lprior, named_only = linfo.kinds_prior, training_prior(split, linfo.kinds, False, "ignore")
    assert list(lprior.values()) == pytest.approx(training_prior(split, linfo.kinds, False, "label"), abs=1e-5)
    mel = linfo.kinds.index("mel")
    assert lprior["mel"] > named_only[mel] and lprior["nv"] / lprior["bkl"] == pytest.approx(named_only[linfo.kinds.index("nv")] / named_only[
        linfo.kinds.index("bkl")], rel=1e-4)
    r = melanoma_cli("train", "--sources", sources, "--out", tmp_path / "bad", "--unnamed-kinds", "label")
    assert r.returncode == 2 and "label needs --diagnosis" in r.stderr and "Traceback" not in r.stderr
    # the melanoma estimate read from the trained kinds head: its temperature and threshold chosen again on validation
    r = melanoma_cli("calibrate", "--melanoma-from-kinds", "--model", run / "model.safetensors", "--target-sensitivity", "0.8",
                     "--out", tmp_path / "from_kinds.safetensors")
    assert r.returncode == 0, r.stderr[-2000:]
    read, read_info = load(tmp_path / "from_kinds.safetensors")
    x = to_batch([lesion_image(seed=s) for s in range(3)], read_info.preprocess)
    assert read_info.melanoma_from_kinds and read_info.target_sensitivity == 0.8 and np.allclose(*melanoma_margin(read, x), atol=1e-5)
    assert read_info.validation["sensitivity"] >= 0.8 and read_info.other_threshold is not None
    assert "melanoma estimate: read from the kinds head" in melanoma_cli("describe", "--model", tmp_path / "from_kinds.safetensors").stdout


def test_the_kinds_loss_is_cross_entropy_for_one_kind_and_the_set_probability_for_several():
    from melanoma.kinds import HARMLESS, kind_set
    from melanoma.train import kinds_loss

    names = ["akiec", "bcc", "bkl", "df", "mel", "nv", "vasc"]
    assert kind_set("bcc", 0, names, "ignore") == [k == "bcc" for k in names]
    assert kind_set(None, 1, names, "label") == [k == "mel" for k in names]
    assert kind_set(None, 0, names, "label") == [k in HARMLESS for k in names] and set(HARMLESS) == {"nv", "bkl", "df", "vasc"}
    assert not any(kind_set(None, 1, names, "ignore"))
    torch.manual_seed(0)
    logits = torch.randn(4, 7, requires_grad=True)
    sets = torch.tensor([kind_set("bcc", 0, names, "label"), kind_set(None, 1, names, "label"), kind_set(None, 0, names, "label"),
                         kind_set(None, 0, names, "ignore")])
    for eps in (0.0, 0.1):
        loss = kinds_loss(logits, sets, eps)
        ce = nn.functional.cross_entropy(logits[:2], torch.tensor([1, 4]), reduction="none", label_smoothing=eps)
        assert torch.allclose(loss[:2], ce, atol=1e-6)  # one allowed kind: cross-entropy's
        assert loss[3] == 0  # no allowed kind: no loss
    p = logits.softmax(1)
    assert torch.allclose(kinds_loss(logits, sets, 0.0)[2], -torch.log(p[2, sets[2]].sum()), atol=1e-6)
    kinds_loss(logits, sets, 0.1).sum().backward()
    assert logits.grad is not None and torch.isfinite(logits.grad).all() and (logits.grad[3] == 0).all()


def test_calibrate_melanoma_from_kinds_refuses_a_model_without_a_kinds_head_in_one_line(recorded_run, tmp_path):
    r = melanoma_cli("calibrate", "--melanoma-from-kinds", "--model", recorded_run / "model.safetensors", "--target-sensitivity", "0.9",
                     "--out", tmp_path / "m.safetensors")
    assert r.returncode != 0 and "needs a kinds head" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "m.safetensors").exists()


def test_fit_kinds_refuses_a_model_whose_sources_name_no_kind_in_one_line(recorded_run, tmp_path):
    r = melanoma_cli("fit-kinds", "--model", recorded_run / "model.safetensors", "--out", tmp_path / "k.safetensors")
    assert r.returncode != 0 and "name too few kinds" in r.stderr and "Traceback" not in r.stderr
    assert not (tmp_path / "k.safetensors").exists()
