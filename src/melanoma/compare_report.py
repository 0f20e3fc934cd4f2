"""What `melanoma compare`, the page and `POST /v1/compare` give back for two photos of one spot: one
object (`answer`, the `--json` output and the API's body), its words (`text`) and one picture (`picture`:
the two photos aligned side by side with both outlines, and where the spot grew or shrank)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import cv2
import numpy as np
from PIL import Image

from .compare import Comparison, compare
from .predict import NOT_A_DIAGNOSIS, predict_views
from .preprocess import model_view

if TYPE_CHECKING:
    from .inference import Engine
    from .model import Classifier
    from .modelinfo import ModelInfo

ADVICE = ("A change of size, shape or colour is the strongest sign a mole may be a melanoma: any change worth asking "
          "about goes to a doctor, whatever these figures say. " + NOT_A_DIAGNOSIS)
CHANGE_KEYS = ("area_change_pct", "diameter_change_pct", "delta_e", "border_change", "asymmetry_change")
BEFORE_COLOUR, AFTER_COLOUR = (0, 200, 255), (255, 0, 200)  # outlines: cyan before, magenta after
GROWN, SHRUNK = (230, 40, 40), (40, 90, 230)


def answer(before: Image.Image, after: Image.Image, model: Classifier | Engine, info: ModelInfo) -> tuple[dict, Comparison]:
    """The comparison and both melanoma estimates (each photo as the model sees it on its own), as one object."""
    result = compare(before, after)
    preds = predict_views(model, info, np.stack([model_view(before, info.preprocess), model_view(after, info.preprocess)]))
    a = result.alignment
    body: dict = {
        "same_spot": result.same_spot,
        "reason": result.reason,
        **{k: None for k in CHANGE_KEYS},
        **result.change(),
        "p_before": round(preds[0].p_malignant, 4), "p_after": round(preds[1].p_malignant, 4),
        "verdict_before": preds[0].verdict, "verdict_after": preds[1].verdict,
        "unreliable": [name for name, p in (("before", preds[0]), ("after", preds[1])) if p.ood],
        "before": result.before.as_dict() if result.same_spot and result.before else None,
        "after": result.after.as_dict() if result.same_spot and result.after else None,
        "overlap": None if result.overlap is None else round(result.overlap, 3),
        "alignment": {"matches": a.matches, "inliers": a.inliers, "on_skin": a.on_skin, "refined": a.refined,
                      "scale": None if a.matrix is None else round(a.scale, 4),
                      "rotation_deg": None if a.matrix is None else round(a.rotation, 2)},
        "notes": result.notes,
        "advice": ADVICE,
    }
    return body, result


def text(body: dict, before_name: str, after_name: str) -> str:
    """The object in words, for the terminal and the page."""
    lines = [f"before: {before_name}: {body['verdict_before']} (melanoma estimate {body['p_before']:.0%})",
             f"after:  {after_name}: {body['verdict_after']} (melanoma estimate {body['p_after']:.0%})"]
    if body["unreliable"]:
        lines.append(f"note: the {' and '.join(body['unreliable'])} photo is unlike the images the model was trained on: its estimate is unreliable")
    if not body["same_spot"]:
        lines.append(f"not compared: {body['reason']}. No change is reported for two photos that may show two spots.")
    else:
        lines += [f"area: {body['area_change_pct']:+.1f}%   longest diameter: {body['diameter_change_pct']:+.1f}%   "
                  f"colour: Delta E {body['delta_e']:.1f} (about 1 is just noticeable)",
                  f"border irregularity: {body['before']['border']:.2f} -> {body['after']['border']:.2f} (1 is a circle)   "
                  f"asymmetry: {body['before']['asymmetry']:.2f} -> {body['after']['asymmetry']:.2f}"]
        lines += [f"limit: {n}" for n in body["notes"]]
    lines.append(ADVICE)
    return "\n".join(lines)


def outline(rgb: np.ndarray, mask: np.ndarray, colour: tuple[int, int, int], width: int) -> np.ndarray:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
    out = rgb.copy()
    cv2.drawContours(out, contours, -1, colour, width)
    return out


def picture(result: Comparison) -> Image.Image | None:
    """BEFORE, AFTER aligned onto it, and the difference (BEFORE faded; red where the spot grew, blue where
    it shrank), each with both outlines (cyan before, magenta after). None when not the same spot."""
    if not result.same_spot or result.views is None:
        return None
    before, after, mb, ma = result.views
    width = max(2, round(max(before.shape) / 200))
    diff = (0.55 * before + 0.45 * 255).astype(np.uint8)
    diff[ma & ~mb], diff[mb & ~ma] = GROWN, SHRUNK
    panels = []
    for rgb in (before, after, diff):
        panels.append(outline(outline(rgb, mb, BEFORE_COLOUR, width), ma, AFTER_COLOUR, width))
    gap = np.full((before.shape[0], 8, 3), 255, np.uint8)
    return Image.fromarray(np.hstack([panels[0], gap, panels[1], gap, panels[2]]))
