"""The web page: upload skin-spot photos, see the verdict, the probability and the Grad-CAM overlay;
or compare two photos of one spot taken months apart (app_compare.py).

Only widgets here: images are read by `images.load_image`, predictions and maps come from
`predict` / `explain`, warnings from `quality`. Uploads stay in memory; nothing is written to disk
or logged. Start it with `melanoma serve` (or `streamlit run` on this file; MELANOMA_MODEL picks
the model file).
"""

from __future__ import annotations

import hashlib
import os

import numpy as np
import streamlit as st

from melanoma import predict
from melanoma.explain import overlay
from melanoma.images import MAX_FILE_BYTES, UPLOAD_TYPES, ImageError, load_image
from melanoma.kinds import KINDS, MELANOMA_SUSPECTED, OTHER_SUSPECTED, OTHER_TARGET, SENT_TO_DOCTOR
from melanoma.loader import load_model
from melanoma.modelinfo import ModelFileError
from melanoma.preprocess import overlay_copy
from melanoma.quality import assess

NOT_A_DIAGNOSIS = predict.NOT_A_DIAGNOSIS.replace("This is not a diagnosis.", "**This is not a diagnosis.**", 1)


@st.cache_resource(show_spinner="Loading the model…")
def get_model(path: str | None):
    """Loaded once per server process and shared by all sessions (.safetensors or .onnx)."""
    return load_model(path, threads=1)


def check_upload(data: bytes, name: str, model, info) -> dict:
    """Everything the page shows for one upload, except the overlay blend (which follows the slider)."""
    image = load_image(data, name=name)
    # One torch thread: Streamlit runs the page in threads other than the main one, where torch's
    # OpenMP team of 2 was slower than 1 thread on these 2 cores (predict + Grad-CAM, bundled model,
    # a new thread per image: median 47 ms with 1 thread, 80-89 ms with 2; two sessions at once 68 vs 83).
    with predict.torch_threads(1):
        pred, cam, view = predict.analyse(model, info, image)
    shown, box = overlay_copy(image, info.preprocess)  # kept instead of the full-resolution photo
    return {"image": np.asarray(shown), "box": box, "cam": cam, "pred": pred, "quality": assess(image, view), "view": view}


def extra_map(r: dict, model, info, target: int) -> np.ndarray:
    """Another map of the same view, computed once on request: what lowered the melanoma estimate
    (target 0, the benign margin, explain.py) or what raised the estimate of another skin cancer
    (kinds.OTHER_TARGET)."""
    key = f"cam_{target}"
    if key not in r:
        from melanoma.explain import infer
        from melanoma.predict import model_input

        with predict.torch_threads(1):
            cam = infer(model, model_input(model, r["view"][None], info.preprocess), target=target).cam
            assert cam is not None  # infer gives the maps by default
            r[key] = cam[0]
    return r[key]


SESSION_CACHE = 8  # analyses a session keeps (each holds the photo at most preprocess.OVERLAY_SIDE px on its longest side)


def cached_analysis(data: bytes, name: str, model, info) -> dict:
    """Per-session memory cache, so that moving the slider does not recompute Grad-CAM; it keeps the
    SESSION_CACHE most recently used analyses, so a long session does not hold every upload's arrays."""
    from collections import OrderedDict

    key = hashlib.sha256(data).hexdigest() + name
    cache = st.session_state.setdefault("analyses", OrderedDict())
    if key not in cache:
        cache[key] = check_upload(data, name, model, info)
        while len(cache) > SESSION_CACHE:
            cache.popitem(last=False)
    cache.move_to_end(key)
    return cache[key]


UNLIKE_TRAINING = ("**Unlike the images this model was trained on: the estimate is unreliable.** "
                   "The model's own features put this photo outside what it has seen (out-of-distribution check).")


def warnings_for(r: dict) -> list[str]:
    """The two kinds of warning, together: the model's own check (its features, ood.py) and the photo
    checks (simple image statistics, quality.py). Either can fire without the other."""
    model_check = [UNLIKE_TRAINING] if r["pred"].ood else []
    return model_check + [f"Photo check: {w}" for w in r["quality"].warnings]


def probability_text(p: float, threshold: float | None = None) -> str:
    """Rounded to 5 points, never 0% or 100%: the model cannot be that sure. Where the rounding would
    cross the threshold (0.279 shown as "about 30%" beside a threshold of 28%), it says which side."""
    if p < 0.05:
        return "under 5%"
    if p > 0.95:
        return "over 95%"
    rounded = round(p * 20) / 20
    if threshold is not None and (p >= threshold) != (rounded >= threshold):
        return f"just {'above' if p >= threshold else 'below'} {threshold:.0%}"
    return f"about {int(rounded * 100 + 0.5)}%"


def probability_bar(p: float, threshold: float) -> str:
    colour = "#c0392b" if p >= threshold else "#2e86c1"
    return f"""
<div style="position:relative;height:22px;background:linear-gradient(90deg,#d6eaf8,#fadbd8);border-radius:4px;margin:4px 0 2px">
  <div style="position:absolute;left:0;top:0;height:100%;width:{p * 100:.1f}%;background:{colour};opacity:.75;border-radius:4px"></div>
  <div title="decision threshold" style="position:absolute;left:{threshold * 100:.1f}%;top:-4px;height:30px;border-left:3px dashed #000"></div>
</div>
<div style="display:flex;justify-content:space-between;font-size:.8em;color:#555">
  <span>0%</span><span>dashed line: threshold {threshold:.0%}</span><span>100%</span></div>"""


def show_result(name: str, r: dict, alpha: float, info, model) -> None:
    pred = r["pred"]
    st.subheader(name)
    for w in warnings_for(r):
        st.warning(w, icon="⚠️")
    malignant = pred.verdict == MELANOMA_SUSPECTED
    other = pred.verdict == OTHER_SUSPECTED
    verdict = (
        f"**{pred.verdict.capitalize()}** — the model's estimate of melanoma is {probability_text(pred.p_malignant, info.threshold)}, "
        + ("at or above" if malignant else "below") + f" its threshold of {info.threshold:.0%}"
        + ("." if pred.p_other is None or info.other_threshold is None else
           f"; of another skin cancer (basal cell carcinoma, actinic keratosis / Bowen's disease, squamous cell carcinoma) "
           f"{probability_text(pred.p_other, info.other_threshold)}, {'at or above' if pred.p_other >= info.other_threshold else 'below'} "
           f"its threshold of {info.other_threshold:.0%}.")
    )
    (st.error if pred.verdict in SENT_TO_DOCTOR else st.success)(verdict)
    st.markdown(probability_bar(pred.p_malignant, info.threshold), unsafe_allow_html=True)
    if malignant or other:
        st.caption("The thresholds are set low on purpose, to miss few skin cancers; many spots above them are harmless. Show it to a doctor.")
    elif pred.p_other is None or info.other_threshold is None:
        st.caption("This model speaks for melanoma only: it cannot say whether a spot is another kind of skin cancer.")
    if pred.differential:
        show_differential(pred.differential)
    left, right = st.columns(2)
    left.image(r["image"], caption="Your photo (upright, as the model reads it)", width="stretch")
    if r["cam"] is None:
        right.info("This model file carries no Grad-CAM map, so no overlay is shown.")
        return
    lowered = model.lowering_maps and right.toggle("Show what lowered the melanoma estimate instead", key=f"lowered-{name}")
    if lowered:
        cam, what = extra_map(r, model, info, 0), "lowered the melanoma estimate"
    elif other:  # the map of the verdict's own estimate
        cam, what = extra_map(r, model, info, OTHER_TARGET), "raised the estimate of another skin cancer"
    else:
        cam, what = r["cam"], "raised the melanoma estimate"
    right.image(overlay(r["image"], cam, r["box"], alpha), caption=f"Grad-CAM: red = regions that {what}; "
                "darkened = outside the square the model looks at", width="stretch")


def show_differential(differential: list[tuple[str, float]], top: int = 3) -> None:
    """The kinds the spot most resembles, as bars, with a plain line on each (kinds.KINDS)."""
    st.markdown("**What it most resembles** (seven kinds, each counted as if equally common: a likeness, not a probability):")
    for code, p in differential[:top]:
        name, line = KINDS.get(code, (code, ""))
        st.progress(min(max(p, 0.0), 1.0), text=f"{name}: {probability_text(p)}")
        if line:
            st.caption(line)


@st.cache_data(show_spinner=False)
def measured_test_figures(model_path: str | None) -> str:
    """The model's measured test figures, from the metrics.json that names this exact file, or the file a float
    ONNX graph was exported from (modelinfo.measured_figures)."""
    from melanoma.loader import default_model_path
    from melanoma.modelinfo import measured_figures

    c = (measured_figures(model_path or default_model_path(), getattr(get_model(model_path)[0], "exported_from", None)) or {}).get("clean_test")
    if not c:
        return ""
    return (
        f"- **Test** ({c['images']:,} Kaggle test images with no copy in the training data): sensitivity "
        f"{c['sensitivity']:.0%}, specificity {c['specificity']:.0%}, ROC AUC {c['roc_auc']:.3f}.\n"
    )


KIND_NAMES = {"nv": "moles (nevi)", "bkl": "benign keratoses", "seborrheic_keratosis": "seborrheic keratoses",
              "df": "dermatofibromas", "vasc": "vascular lesions", "bcc": "basal cell carcinomas",
              "akiec": "actinic keratoses"}  # the archives' diagnosis codes


FRAMING_WORDS = {"centre": "the centre square of the photo", "lesion": "a square around the spot"}  # Preprocess.framing


def trained_on(info) -> str:
    """The training sources the model file records, in a line (older files: the Kaggle data, as they were)."""
    if not info.sources:
        return ("the Kaggle *Melanoma Cancer Dataset* — dermoscopy images (taken through a skin microscope) of benign moles "
                "and melanomas, mostly light skin.")
    parts = [f"{r['name']} ({sum(n for kinds in r['images'].values() for n in kinds.values()):,} images)" for r in info.sources]
    def kinds_of(label: str) -> list[str]:  # the named kinds ("all": a source without diagnoses names none)
        return list(dict.fromkeys(KIND_NAMES.get(k, k) for r in info.sources for k in r["images"].get(label, {}) if k != "all"))

    kinds, other = kinds_of("Benign"), kinds_of("Other")  # Other: read_other
    return ("dermoscopy images (taken through a skin microscope), mostly light skin, from " + ", ".join(parts)
            + (f"; benign ones include {', '.join(kinds)}" if kinds else "")
            + (f"; taught as not melanoma, though not harmless: {', '.join(other)}" if other else "") + ".")


def network(info) -> str:
    """The network in words: one, or an ensemble naming its members."""
    if not info.members:
        return info.arch
    names = ", ".join(m["name"] for m in info.members)
    return f"the average of {len(info.members)} {info.arch} networks trained alike with different seeds or recipes ({names})"


def sidebar(info, model_path: str | None) -> None:
    v = info.validation or {}
    measured = (
        f"- **Validation** (held-out training images, the ones the threshold was chosen on, so they flatter it a little): "
        f"ROC AUC {v['auc']:.3f}, sensitivity {v['sensitivity']:.0%}, specificity {v['specificity']:.0%} at the threshold of {info.threshold:.0%}. "
        if all(v.get(k) is not None for k in ("auc", "sensitivity", "specificity"))
        else f"- **Threshold:** {info.threshold:.0%}. "
    ) + "More in the project's README and model card."
    with st.sidebar:
        st.header("About the model")
        st.warning(NOT_A_DIAGNOSIS)
        st.markdown(
            f"""
- **Network:** {network(info)}, input {info.preprocess.image_size} px ({FRAMING_WORDS.get(info.preprocess.framing, info.preprocess.framing)}).
- **Trained on:** {trained_on(info)}
- **Licence of the weights:** {info.licence}
{measured_test_figures(model_path)}{measured}
- **Intended use:** research and teaching; a second look, never a decision.
- **Limitations:** photos unlike its training images (phone photos without dermoscopy, kinds of
  spot it has not seen) are less reliable: the README and model card say what was measured and
  where it fails; untested on darker skin; two classes only (no other skin cancers); any picture
  gets a number.
- **Two checks before you trust a number:** the model's own check flags photos whose features are
  unlike its training images; the photo checks flag photos that are small, blurred, dark, off-centre
  or show little skin. Either warning means the estimate is less reliable; neither catches everything.
"""
        )
        st.caption("Privacy: uploads are processed in memory and are not stored or logged.")


def main() -> None:
    st.set_page_config(page_title="Skin spot check — not a diagnosis", page_icon="🔍", layout="wide")
    model_path = os.environ.get("MELANOMA_MODEL") or None
    try:
        model, info = get_model(model_path)
    except ModelFileError as exc:
        st.error(f"The model could not be loaded: {exc}")
        return
    sidebar(info, model_path)
    st.title("Skin spot check")
    st.info(NOT_A_DIAGNOSIS)
    with st.expander("Tips for a useful photo", expanded=False):
        st.markdown(
            "- Close-up: the spot fills the middle of the frame.\n- In focus: hold still, tap to focus.\n"
            "- Good, even light; no flash glare, no shadows.\n- One spot per photo; no rulers or ink marks if you can.\n"
            "- The model was trained on dermoscopy images; ordinary phone photos are less reliable."
        )
    compare = "Compare two photos of one spot"
    if st.radio("What would you like to do?", ["Check photos", compare], horizontal=True) == compare:
        from melanoma.app_compare import show_compare

        show_compare(model, info)
        return
    files = st.file_uploader(
        f"Upload one or more photos (JPEG, PNG, WebP, BMP, TIFF, HEIC; up to {MAX_FILE_BYTES // 2**20} MB each)",
        type=UPLOAD_TYPES, accept_multiple_files=True,
    )
    if not files:
        return
    alpha = st.slider("Overlay opacity", 0.0, 1.0, 0.45, 0.05)
    rows = []
    for f in files:
        try:
            with st.spinner(f"Looking at {f.name}…"):
                r = cached_analysis(f.getvalue(), f.name, model, info)
        except ImageError as exc:
            st.error(f"**{f.name}** could not be used: {exc.reason}.")
            rows.append({"file": f.name, "verdict": "not read", "melanoma estimate": None, "notes": exc.reason})
            continue
        except Exception as exc:  # noqa: BLE001 - one bad upload must not take the page down
            st.error(f"**{f.name}** could not be processed ({type(exc).__name__}).")
            rows.append({"file": f.name, "verdict": "failed", "melanoma estimate": None, "notes": type(exc).__name__})
            continue
        show_result(f.name, r, alpha, info, model)
        rows.append({"file": f.name, "verdict": r["pred"].verdict, "melanoma estimate": probability_text(r["pred"].p_malignant, info.threshold),
                     "notes": " ".join((["Unlike the training images."] if r["pred"].ood else [])
                                       + [w.split(";")[0].split(".")[0] + "." for w in r["quality"].warnings])})
    if len(files) > 1:
        import pandas as pd

        st.subheader("Summary")
        table = pd.DataFrame(rows)
        st.dataframe(table, hide_index=True, width="stretch")
        st.download_button("Download as CSV", table.to_csv(index=False), "skin_spot_check.csv", "text/csv")


if __name__ == "__main__":  # streamlit runs this file as __main__; importing it (tests, tools) runs nothing
    main()
