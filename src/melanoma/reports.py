"""The evaluation's figures (metrics.json) as text: the console summary and the Markdown tables
written beside it (kinds.md, verdicts.md, seven_kinds.md, shifts.md, ood.md)."""

from __future__ import annotations

import numpy as np


def kinds_table(rows: list[dict]) -> str:
    """`kinds_report` as a Markdown table."""
    lines = ["| class | kind | images | called right | ROC AUC against the other class (95% CI) |", "| --- | --- | --- | --- | --- |"]
    for r in rows:
        auc = "n/a" if r["roc_auc"] is None else f"{r['roc_auc']:.3f}" + (
            f" ({r['roc_auc_ci95'][0]:.3f}-{r['roc_auc_ci95'][1]:.3f})" if r["roc_auc_ci95"] else "")
        lines.append(f"| {r['class']} | {r['kind'] or '(none)'} | {r['images']} | {r['called_right']:.1%} | {auc} |")
    return "\n".join(lines)


def verdict_table(rows: list[dict]) -> str:
    """`metrics.verdict_report` as a Markdown table."""
    lines = ["| class | kind | images | sent to a doctor (95% CI) | named another skin cancer | melanoma suspected |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        ci = f" ({r['sent_to_doctor_ci95'][0]:.1%}-{r['sent_to_doctor_ci95'][1]:.1%})" if r["sent_to_doctor_ci95"] else ""
        lines.append(f"| {r['class']} | {r['kind']} | {r['images']} | {r['sent_to_doctor']:.1%}{ci} | {r['named_other_cancer']:.1%} | "
                     f"{r['melanoma_suspected']:.1%} |")
    return "\n".join(lines)


def seven_kinds_table(task: dict) -> str:
    """`metrics.seven_kinds` in Markdown: the balanced accuracy and each kind's recall."""
    ci = task["balanced_accuracy_ci95"]
    head = (f"{task['images']} images of {len(task['recall'])} kinds; balanced multi-class accuracy of the top kind {task['balanced_accuracy']:.3f}"
            + (f" (95% CI {ci[0]:.3f}-{ci[1]:.3f})" if ci else ""))
    lines = [head, "", "| kind | images | recall |", "| --- | --- | --- |"]
    counts = dict(zip(task["kinds"], np.array(task["confusion_matrix"]).sum(1)))
    lines += [f"| {k} | {int(counts[k])} | {r:.1%} |" for k, r in task["recall"].items()]
    return "\n".join(lines)


def shift_table(suite: dict) -> str:
    """The shift suite as a Markdown table: one row per change, mild and strong side by side."""
    f = lambda v, fmt: fmt.format(v) if v is not None else "n/a"  # noqa: E731
    u = suite["unchanged"]
    lines = [f"{suite['images']} images ({suite['benign']} benign, {suite['malignant']} malignant), threshold {suite['threshold']:.3f}; "
             f"unchanged: ROC AUC {f(u['roc_auc'], '{:.3f}')}, sensitivity {f(u['sensitivity'], '{:.1%}')}, "
             f"specificity {f(u['specificity'], '{:.1%}')}", "",
             "| change | mild | ROC AUC | sensitivity | specificity | flipped | strong | ROC AUC | sensitivity | specificity | flipped |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    rows = suite["shifts"]
    for mild, strong in zip(rows[::2], rows[1::2]):
        cells = [mild["shift"]]
        for r in (mild, strong):
            cells += [r["detail"], f(r["roc_auc"], "{:.3f}"), f(r["sensitivity"], "{:.1%}"), f(r["specificity"], "{:.1%}"), f(r["flipped"], "{:.1%}")]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def ood_table(m: dict) -> str:
    """The OOD report as Markdown: the flagged share of each set beside this one and how well the
    score tells it from this one (the other folders, then the shift suite's changes)."""
    o = m["ood"]
    pct = lambda v: f"{v:.1%}" if v is not None else "n/a"  # noqa: E731
    na, nf = o["all"], o["not_flagged"]
    lines = [f"cut-off {o['cutoff']:.4g}: {pct(o['flagged'])} of these {o['images']} images flagged; balanced accuracy "
             f"{pct(nf['balanced_accuracy'])} on the {nf['images']} not flagged against {pct(na['balanced_accuracy'])} on all", "",
             "| images | count | flagged | ROC AUC against these |", "| --- | --- | --- | --- |"]
    rows = [(name, a["images"], a["flagged"], a["roc_auc"]) for name, a in o["against"].items()]
    if "shifts" in m:
        rows += [(f"{r['shift']} ({r['severity']}: {r['detail']})", m["shifts"]["images"], r["ood_flagged"], r["ood_roc_auc"])
                 for r in m["shifts"]["shifts"]]
    lines += [f"| {name} | {n} | {pct(f)} | {a:.3f} |" if a is not None else f"| {name} | {n} | {pct(f)} | n/a |" for name, n, f, a in rows]
    return "\n".join(lines if rows else lines[:1]) + "\n"


def format_table(m: dict) -> str:
    rows = [("accuracy", "{:.2%}"), ("sensitivity", "{:.2%}"), ("specificity", "{:.2%}"), ("balanced_accuracy", "{:.2%}"),
            ("roc_auc", "{:.4f}"), ("ece", "{:.4f}"), ("brier", "{:.4f}")]
    columns = [("test" if m["layout"] == "kaggle" else "images", m["test"])] + ([("clean test", m["clean_test"])] if m["clean_test"] else [])
    t = m["test"]
    lines = [f"{m['arch']} on {m['data']} ({m['layout']}) at threshold {t['threshold']:.3f} (temperature {m['temperature']:.3f})",
             f"{'metric':<18}" + "".join(f" {name + ' (' + str(d['images']) + ')':>20}" for name, d in columns)]
    for key, fmt in rows:
        f = lambda v: fmt.format(v) if v is not None else "n/a"  # noqa: E731
        lines.append(f"{key:<18}" + "".join(f" {f(d[key]):>20}" for _, d in columns))
    for name, d in columns:
        if d["roc_auc_ci95"]:
            lines.append(f"ROC AUC 95% CI ({name}): {d['roc_auc_ci95'][0]:.4f}-{d['roc_auc_ci95'][1]:.4f}")
    lines += [f"note: {n}" for n in m["notes"]]
    a = m.get("attention_clean_test") or m.get("attention")
    where = "clean test" if "attention_clean_test" in m else "all images"
    if a and a["images_with_spot"]:
        lines.append(f"Grad-CAM on the spot ({where}, {a['images_with_spot']} images with a spot and a map): {a['cam_on_spot']:.1%} of the map "
                     f"on {a['spot_area']:.1%} of the image; peak on the spot in {a['cam_peak_on_spot']:.1%}")
    if a and a["images_with_vignette"]:
        lines.append(f"Grad-CAM on the black vignette ({a['images_with_vignette']} with a vignette and a map): {a['cam_on_vignette']:.1%} "
                     f"of the map on {a['vignette_area']:.1%} of the image")
    if m.get("kinds"):
        lines += ["", kinds_table(m["kinds"])]
    if m.get("verdicts"):
        lines += ["", "The verdict in words:", verdict_table(m["verdicts"])]
    if m.get("seven_kinds"):
        lines += ["", "The top kind against the diagnosis (ISIC 2018 task 3's metric, over the kinds the labels name):",
                  seven_kinds_table(m["seven_kinds"])]
    if "shifts" in m:
        lines += ["", "Shift suite (" + ("clean test" if m["clean_test"] else "all images") + "):", shift_table(m["shifts"])]
    if m.get("faithfulness"):
        f = m["faithfulness"]
        lines.append(f"Deletion test of the maps ({f['images']} images, {f['cells']} cells; mean P(malignant) as 0-50% of the cells are "
                     "blurred away, most relevant first (lower = more faithful) / least relevant first (higher)): "
                     + ", ".join(f"{k} {f[k]['deletion_score']:.3f}" + (f" / {f[k]['lerf_score']:.3f}" if "lerf_score" in f[k] else "")
                                 for k in ("margin", "malignant_logit", "random"))
                     + f"; margin lower than the malignant logit's on {f['margin_lower_share']:.0%} of images, than random on "
                     f"{f['margin_below_random_share']:.0%}")
    if m.get("ood"):
        lines += ["", "Out-of-distribution score (" + ("clean test" if m["clean_test"] else "all images") + "):", ood_table(m)]
    return "\n".join(lines)
