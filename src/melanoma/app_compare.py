"""The page's "Compare two photos" part: two uploads of one spot, months apart; the aligned picture,
what changed, and the two melanoma estimates (compare_report.answer, as `melanoma compare`). Widgets
only; uploads stay in memory."""

from __future__ import annotations

import hashlib

import streamlit as st
from PIL import Image

from melanoma.compare_report import ADVICE, answer, picture
from melanoma.images import UPLOAD_TYPES, ImageError, load_image


def cached_comparison(before: bytes, after: bytes, model, info) -> tuple[dict, Image.Image | None]:
    """One comparison a session keeps (the last pair), so a rerun of the page does not redo it."""
    key = hashlib.sha256(before).hexdigest() + hashlib.sha256(after).hexdigest()
    kept = st.session_state.get("comparison")
    if kept is None or kept[0] != key:
        body, result = answer(load_image(before, "before"), load_image(after, "after"), model, info)
        kept = (key, body, picture(result))
        st.session_state["comparison"] = kept
    return kept[1], kept[2]


def show_compare(model, info) -> None:
    st.markdown("Upload two photos of **the same spot**, taken weeks or months apart, ideally the same way (same distance, "
                "same light). The later one is turned and scaled onto the earlier one by the skin around the spot, "
                "the spot is outlined in both, and the change is measured.")
    left, right = st.columns(2)
    before = left.file_uploader("Earlier photo (before)", type=UPLOAD_TYPES, key="before")
    after = right.file_uploader("Later photo (after)", type=UPLOAD_TYPES, key="after")
    if before is None or after is None:
        st.caption(ADVICE)
        return
    try:
        with st.spinner("Aligning and measuring…"):
            body, drawn = cached_comparison(before.getvalue(), after.getvalue(), model, info)
    except ImageError as exc:
        name = before.name if exc.name == "before" else after.name
        st.error(f"**{name}** could not be used: {exc.reason}.")
        return
    st.markdown(f"**Earlier photo:** {body['verdict_before']} (melanoma estimate {body['p_before']:.0%})  \n"
                f"**Later photo:** {body['verdict_after']} (melanoma estimate {body['p_after']:.0%})")
    if body["unreliable"]:
        st.warning(f"The {' and '.join(body['unreliable'])} photo is unlike the images the model was trained on: its estimate is unreliable.")
    if not body["same_spot"]:
        st.warning(f"**These photos were not compared:** {body['reason']}. Two photos that may show two different spots "
                   "are never read as one spot that changed.")
    else:
        a, b, c = st.columns(3)
        a.metric("Area", f"{body['area_change_pct']:+.0f}%")
        b.metric("Longest diameter", f"{body['diameter_change_pct']:+.0f}%")
        c.metric("Colour change (Delta E)", f"{body['delta_e']:.1f}", help="CIE Delta E 2000 of the spot's mean colour: about 1 is just "
                                                                          "noticeable, over 10 clearly another colour")
        if drawn is not None:
            st.image(drawn, caption="Earlier photo, later photo aligned onto it, and the difference (red: grown, blue: shrunk). "
                                    "Outlines: cyan earlier, magenta later.", width="stretch")
        st.markdown(f"Border irregularity {body['before']['border']:.2f} → {body['after']['border']:.2f} (1 is a circle); "
                    f"asymmetry {body['before']['asymmetry']:.2f} → {body['after']['asymmetry']:.2f} (0 is symmetric).")
        st.markdown("\n".join(f"- {n[0].upper()}{n[1:]}." for n in body["notes"]))
    st.warning(ADVICE)
