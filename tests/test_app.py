"""The page, through streamlit's AppTest (no browser): real uploads, a bad file, the summary table."""

import io
import re
from pathlib import Path

import pytest
from PIL import Image

import melanoma

APP = str(Path(melanoma.__file__).with_name("app.py"))

pytest.importorskip("streamlit")


def page(model_file, monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.setenv("MELANOMA_MODEL", str(model_file))
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    return at


def text_of(at) -> str:
    return "\n".join(e.value for kind in ("markdown", "success", "error", "warning", "info", "caption") for e in getattr(at, kind))


def test_page_before_upload_says_not_a_diagnosis(tiny_model_file, monkeypatch):
    at = page(tiny_model_file, monkeypatch)
    assert "not a diagnosis" in text_of(at)
    assert "not stored or logged" in text_of(at)


def test_real_benign_and_malignant_uploads_bad_file_and_summary(tiny_model_file, monkeypatch, data_dir):
    from melanoma.app import probability_text
    from melanoma.model import load
    from melanoma.predict import analyse

    at = page(tiny_model_file, monkeypatch)
    benign = sorted((data_dir / "test" / "Benign").glob("*.jpg"))[0]
    malignant = sorted((data_dir / "test" / "Malignant").glob("*.jpg"))[0]
    uploads = [(p.name.replace(".jpg", f"_{p.parent.name}.jpg"), p.read_bytes(), "image/jpeg") for p in (benign, malignant)]
    uploads.append(("broken.jpg", b"\xff\xd8\xff\xe0 not a jpeg", "image/jpeg"))
    at.file_uploader[0].set_value(uploads).run()
    assert not at.exception
    text = text_of(at)
    model, info = load(tiny_model_file)
    for (name, data, _), path in zip(uploads, (benign, malignant)):
        pred = analyse(model, info, Image.open(io.BytesIO(data)).convert("RGB"))[0]
        verdicts = [e.value for e in (at.error if pred.verdict == "melanoma suspected" else at.success)]
        assert any(f"**{pred.verdict.capitalize()}**" in v and probability_text(pred.p_malignant, info.threshold) in v for v in verdicts), text
    # the page never calls a spot plain "Benign": a model without a kinds head says "no sign of melanoma"
    assert not any("**Benign" in e.value or "**Malignant" in e.value for e in [*at.success, *at.error])
    assert "broken.jpg** could not be used" in text
    images = at.get("image")
    assert len(images) == 4  # original + overlay for each good upload
    assert sum("Grad-CAM" in c for im in images for c in im.captions) == 2
    at.toggle[0].set_value(True).run()  # the first photo: what lowered the estimate, on request
    assert not at.exception
    captions = [c for im in at.get("image") for c in im.captions]
    assert sum("lowered the melanoma estimate" in c for c in captions) == 1 and sum("raised the melanoma estimate" in c for c in captions) == 1
    table = at.dataframe[0].value
    assert list(table["file"]) == [u[0] for u in uploads]
    assert list(table["verdict"])[2] == "not read"
    for (name, data, _), estimate in zip(uploads[:2], table["melanoma estimate"]):  # rounded as the verdict is
        pred = analyse(model, info, Image.open(io.BytesIO(data)).convert("RGB"))[0]
        assert estimate == probability_text(pred.p_malignant, info.threshold)
    assert "Traceback" not in text


def test_the_sidebar_describes_the_model_file_it_runs(tiny_model_file, monkeypatch, tmp_path):
    """Framing words and training description come from the model file, not from text written for the bundled model."""
    from dataclasses import replace

    from melanoma.model import load, save

    model, info = load(tiny_model_file)
    lesion = tmp_path / "lesion.safetensors"
    save(lesion, model, replace(info, preprocess=replace(info.preprocess, framing="lesion")))
    for path, framing in ((tiny_model_file, "the centre square of the photo"), (lesion, "a square around the spot")):
        sidebar = "\n".join(e.value for e in page(path, monkeypatch).sidebar.markdown)
        assert f"px ({framing})" in sidebar
        assert "Kaggle" in sidebar and "keratoses" not in sidebar  # this file records no sources: the Kaggle data alone


def test_bundled_page_shows_measured_test_figures(monkeypatch):
    from streamlit.testing.v1 import AppTest

    monkeypatch.delenv("MELANOMA_MODEL", raising=False)
    at = AppTest.from_file(APP, default_timeout=120)
    at.run()
    assert not at.exception
    assert "Kaggle test images with no copy in the training data" in text_of(at)
    assert "the ones the threshold was chosen on" in text_of(at).replace("\n", " ")  # validation figures labelled so
    # the bundled model read HAM10000's Other/ as not melanoma: the sidebar names those kinds apart from the benign ones
    assert "taught as not melanoma, though not harmless: actinic keratoses, basal cell carcinomas" in text_of(at).replace("\n", " ")


def test_test_figures_are_shown_only_beside_the_file_they_were_measured_on(monkeypatch, tmp_path, tiny_model_file):
    """The figures are bound to the model file by its SHA-256: a copy of the bundled model with its
    metrics.json shows them; another model with that same metrics.json beside it does not."""
    import shutil

    from streamlit.testing.v1 import AppTest

    from melanoma.modelinfo import BUNDLED_MODEL

    for name, source, shown in (("same", BUNDLED_MODEL, True), ("swapped", tiny_model_file, False)):
        folder = tmp_path / name
        folder.mkdir()
        shutil.copy(source, folder / "model.safetensors")
        shutil.copy(BUNDLED_MODEL.with_name("metrics.json"), folder / "metrics.json")
        monkeypatch.setenv("MELANOMA_MODEL", str(folder / "model.safetensors"))
        at = AppTest.from_file(APP, default_timeout=120)
        at.run()
        assert not at.exception
        assert ("Kaggle test images with no copy in the training data" in text_of(at)) == shown, name


def test_probability_is_never_shown_with_false_precision():
    from melanoma.app import probability_text

    assert probability_text(0.001) == "under 5%" and probability_text(0.999) == "over 95%"
    assert probability_text(0.4371) == "about 45%"
    # near the threshold the rounding never contradicts the verdict's "above" or "below"
    assert probability_text(0.279, 0.2804) == "just below 28%" and probability_text(0.27, 0.26) == "just above 26%"
    assert probability_text(0.26, 0.2804) == "about 25%" and probability_text(0.33, 0.2804) == "about 35%"


def test_a_session_keeps_a_bounded_number_of_analyses(monkeypatch):
    import streamlit as st

    from melanoma import app

    calls = []
    monkeypatch.setattr(app, "check_upload", lambda data, name, model, info: calls.append(name) or {"name": name})
    st.session_state.clear() if hasattr(st.session_state, "clear") else None
    for i in range(app.SESSION_CACHE + 5):
        app.cached_analysis(bytes([i]), f"{i}.jpg", None, None)
    app.cached_analysis(bytes([app.SESSION_CACHE + 4]), f"{app.SESSION_CACHE + 4}.jpg", None, None)  # the latest: from the cache
    assert len(st.session_state["analyses"]) == app.SESSION_CACHE and len(calls) == app.SESSION_CACHE + 5
    app.cached_analysis(bytes([0]), "0.jpg", None, None)  # the oldest was let go: computed again
    assert len(calls) == app.SESSION_CACHE + 6


def test_page_inference_runs_on_one_torch_thread(tiny_model_file, data_dir, monkeypatch):
    import threading

    import torch

    from melanoma import app, predict
    from melanoma.model import load

    model, info = load(tiny_model_file)
    seen = []
    real = predict.analyse
    monkeypatch.setattr(predict, "analyse", lambda *a: seen.append(torch.get_num_threads()) or real(*a))
    data = next((data_dir / "test" / "Malignant").glob("*.jpg")).read_bytes()
    after = []

    def session():  # as Streamlit runs the page: in a thread of its own
        torch.set_num_threads(2)
        r = app.check_upload(data, "spot.jpg", model, info)
        after.append((torch.get_num_threads(), r["pred"].label))

    t = threading.Thread(target=session)
    t.start()
    t.join()
    assert seen == [1] and after[0][0] == 2 and after[0][1] in info.class_names


def test_trained_on_names_only_the_kinds_a_source_records():
    """A source without diagnoses records its images under "all": no kind is named for it, in the benign list or the Other/ one."""
    from types import SimpleNamespace

    from melanoma.app import trained_on

    info = SimpleNamespace(sources=[{"name": "plain", "images": {"Benign": {"all": 3}, "Other": {"all": 4}}},
                                    {"name": "archive", "images": {"Benign": {"nv": 2}, "Other": {"bcc": 1}}}])
    line = trained_on(info)
    assert not re.search(r"\ball\b", line)
    assert "benign ones include moles (nevi); taught as not melanoma, though not harmless: basal cell carcinomas." in line


def test_compare_two_photos_of_one_spot_and_a_bad_file(tiny_model_file, monkeypatch, data_dir):
    """The page's compare part: the same photo under other light reads as the same spot with next to no change and
    shows the aligned picture; two different spots are not compared; a file that is not an image is named."""
    at = page(tiny_model_file, monkeypatch)
    at.radio[0].set_value("Compare two photos of one spot").run()
    assert not at.exception and len(at.file_uploader) == 2
    photo = sorted((data_dir / "train" / "Malignant").glob("*.jpg"))[0]
    brighter = io.BytesIO()
    Image.eval(Image.open(photo).convert("RGB"), lambda v: min(255, int(v * 1.1))).save(brighter, "JPEG", quality=95)
    at.file_uploader[0].set_value([(photo.name, photo.read_bytes(), "image/jpeg")])
    at.file_uploader[1].set_value([("brighter.jpg", brighter.getvalue(), "image/jpeg")]).run()
    assert not at.exception
    text = text_of(at)
    assert "goes to a doctor" in text and "Earlier photo:" in text, text
    assert "were not compared" not in text, text
    area = [m for m in at.metric if m.label == "Area"]
    assert area and abs(float(area[0].value.rstrip("%"))) < 5
    assert len(at.get("image")) == 1
    other = sorted((data_dir / "train" / "Benign").glob("*.jpg"))[5]
    at.file_uploader[1].set_value([(other.name, other.read_bytes(), "image/jpeg")]).run()
    assert "were not compared" in text_of(at) and not at.get("image")
    at.file_uploader[1].set_value([("broken.jpg", b"not an image", "image/jpeg")]).run()
    assert not at.exception and "**broken.jpg** could not be used" in text_of(at)
