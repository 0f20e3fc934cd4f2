"""Prediction on images: calibrated probability of melanoma, the verdict in words and the differential (kinds.py), Grad-CAM.

With an ONNX model (onnx_model.OnnxModel) nothing here imports torch."""

from __future__ import annotations

import contextlib
import csv
import os
import sys
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Executor, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, cast

import numpy as np
from PIL import Image

from .calibration import calibrated_probability
from .explain import infer, overlay
from .images import ImageError, find_images, load_image
from .inference import Inference
from .kinds import differential, other_cancer, verdict
from .preprocess import Preprocess, model_view, normalize, normalize_nhwc, view_box

if TYPE_CHECKING:
    from .inference import Engine
    from .model import Classifier
    from .modelinfo import ModelInfo

NOT_A_DIAGNOSIS = (
    "This is not a diagnosis. It is a research tool that can be wrong in both directions. "
    "If a spot is new, changing, itching or bleeding, or looks unlike your other moles, see a doctor or "
    "dermatologist, whatever this tool says."
)


@dataclass
class Prediction:
    p_malignant: float  # calibrated probability of the positive (last) class: melanoma
    label: str  # class name at the model's threshold: melanoma or not (kept for machine readers; people read `verdict`)
    ood_score: float | None = None  # how unlike the training images (ood.py); None: the model carries no fit
    ood: bool | None = None  # the score is above the model's cut-off: the estimate is unreliable
    verdict: str = ""  # in words (kinds.verdict)
    p_other: float | None = None  # estimate of another skin cancer (kinds.py); None: the model has no kinds head
    differential: list[tuple[str, float]] | None = None  # (kind code, probability), highest first; with a kinds head

    @property
    def top_kind(self) -> str | None:
        return self.differential[0][0] if self.differential else None


def label_of(p: float, info: ModelInfo) -> str:
    return info.class_names[-1] if p >= info.threshold else info.class_names[0]


def predictions(out: Inference, info: ModelInfo) -> list[Prediction]:
    ps = calibrated_probability(np.asarray(out.logits), info.temperature)
    scores = [None] * len(ps) if out.ood is None else [float(s) for s in out.ood]
    if out.kinds is not None and info.kinds:
        diffs = differential(out.kinds, info.kinds)
        others: list[float | None] = [float(o) for o in other_cancer(diffs, info.kinds)]
        ranked: list[list[tuple[str, float]] | None] = [sorted(zip(info.kinds, map(float, d)), key=lambda kp: -kp[1]) for d in diffs]
    else:
        others, ranked = [None] * len(ps), [None] * len(ps)
    return [Prediction(float(p), label_of(float(p), info), s, None if s is None else s > cast(float, info.ood_cutoff),
                       verdict(float(p), o, info), o, r) for p, s, o, r in zip(ps, scores, others, ranked)]


def model_input(model: Classifier | Engine, views: np.ndarray, pre: Preprocess):
    """A stack of model views (N x H x W x 3 uint8) normalised for `model`: numpy NHWC for ONNX
    Runtime (`normalize_nhwc`, no torch), a torch batch for the torch model (`normalize`)."""
    return normalize_nhwc(views, pre) if model.engine == "onnx" else normalize(views, pre)


def predict_views(model: Classifier | Engine, info: ModelInfo, views: np.ndarray) -> list[Prediction]:
    """Predictions for a stack of model views (N x H x W x 3 uint8, see preprocess.model_view)."""
    return predictions(infer(model, model_input(model, views, info.preprocess), cam=False), info)


def analyse(model: Classifier | Engine, info: ModelInfo, image: Image.Image) -> tuple[Prediction, np.ndarray | None, np.ndarray]:
    """Prediction, Grad-CAM map (model-view resolution; None for a model file without maps) and the
    model view, from one preprocessing."""
    view = model_view(image, info.preprocess)
    out = infer(model, model_input(model, view[None], info.preprocess), target=len(info.class_names) - 1, cam=model.maps)
    return predictions(out, info)[0], None if out.cam is None else out.cam[0], view


def explain(model: Classifier | Engine, info: ModelInfo, image: Image.Image, alpha: float = 0.45) -> tuple[Prediction, np.ndarray]:
    """Prediction and a Grad-CAM overlay at the image's own resolution."""
    pred, cam, _ = analyse(model, info, image)
    assert cam is not None  # a model with maps (callers check model.maps)
    return pred, overlay(np.asarray(image), cam, view_box(image, info.preprocess), alpha)


# `label` is melanoma (the positive class name) or not, at the melanoma threshold: kept for the scripts that
# read it, deprecated in favour of `verdict`, which also speaks for the other skin cancers (kinds.py).
CSV_COLUMNS = ["path", "p_malignant", "label", "ood_score", "ood", "verdict", "p_other_cancer", "top_kind", "differential"]


def csv_row(path: Path, pred: Prediction) -> list:
    """One image's row of `predict --csv` (CSV_COLUMNS; the kinds' columns empty for a model without a kinds head)."""
    return [str(path), f"{pred.p_malignant:.6f}", pred.label, "" if pred.ood is None else f"{pred.ood_score:.4f}",
            "" if pred.ood is None else int(pred.ood), pred.verdict, "" if pred.p_other is None else f"{pred.p_other:.6f}",
            pred.top_kind or "", ";".join(f"{k}:{p:.4f}" for k, p in pred.differential or [])]


def cam_path(cam_dir: str | os.PathLike, path: Path, root: Path) -> Path:
    """Where a path's overlay goes: the input's place under `root` (the inputs' common folder) mirrored
    in `cam_dir`, its name and extension kept: `root/a/Benign/1.jpg` -> `cam_dir/a/Benign/1.jpg.cam.png`.
    Two different inputs never share an overlay."""
    rel = Path(path).resolve().relative_to(root)
    return Path(cam_dir) / rel.parent / (rel.name + ".cam.png")


def common_folder(files: list[Path]) -> Path:
    return Path(os.path.commonpath([f.resolve().parent for f in files]))


def decode(file: Path, pre: Preprocess, keep_image: bool = False) -> tuple[np.ndarray | None, Image.Image | None, str | None]:
    """A file -> its model view, with the decoded image itself when `keep_image` (for the overlay);
    a bad file gives its error instead."""
    try:
        image = load_image(file)
        return model_view(image, pre), image if keep_image else None, None
    except ImageError as exc:
        return None, None, str(exc)


def ahead(pool: Executor | None, fn: Callable, items: Iterable, depth: int) -> Iterator:
    """fn(item) for each item, in order, computed in `pool` up to `depth` items ahead of the one the
    caller has (in the calling thread, one at a time, without a pool)."""
    if pool is None:
        yield from map(fn, items)
        return
    queue: deque = deque()
    for item in items:
        queue.append(pool.submit(fn, item))
        if len(queue) > depth:
            yield queue.popleft().result()
    while queue:
        yield queue.popleft().result()


def predict_with_cam(model: Classifier | Engine, info: ModelInfo, views: np.ndarray) -> tuple[list[Prediction], np.ndarray]:
    """Predictions and Grad-CAM maps for a stack of model views, from one pass."""
    out = infer(model, model_input(model, views, info.preprocess), target=len(info.class_names) - 1)
    assert out.cam is not None  # infer's cam=True
    return predictions(out, info), out.cam


def ood_word(pred: Prediction) -> str:
    return "-" if pred.ood is None else ("unlike-training" if pred.ood else "ok")


# Images a batch. ONNX Runtime spent less CPU an image, and less memory, on small batches when `predict`
# was timed by hand at 2, 4, 8 and 32 (the int8 file, 2 cores; not kept: the bench's process phase keeps
# today's whole-process figure).
BATCH_SIZE = {"torch": 32, "onnx": 4}


def default_workers() -> int:
    """Threads decoding images beside the model's: one, then one per core beyond 2, up to 4. (Decoding
    a test image is far cheaper than its inference; Pillow lets other threads run while it decodes.)"""
    return max(1, min(4, (os.cpu_count() or 1) - 2))


def inference_streams(cam: bool = False, cores: int | None = None) -> tuple[int, int]:
    """(batches run at once, threads each) for batch prediction. Whole batches side by side, each on
    few threads, kept the cores busier than one batch at a time on all of them when this was chosen
    (on 2 cores; the speeds as measured now are the bench's, docs/bench/bench.md). With Grad-CAM
    overlays one batch at a time on all cores: the maps are drawn in between, and captum's hooks
    (seed_cnn) must not meet another thread's forward pass."""
    cores = cores or os.cpu_count() or 1
    if cam:
        return 1, cores
    streams = min(4, cores)
    return streams, max(1, cores // streams)


def set_torch_threads(n: int) -> None:
    import torch

    torch.set_num_threads(n)


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads for the calling thread, restored afterwards; nothing where torch is not
    in use (an ONNX model: torch may not even be installed)."""
    if sys.modules.get("torch") is None:
        yield
        return
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(paths: list[str], model: Classifier | Engine, info: ModelInfo, csv_path: str | None, cam_dir: str | None,
        batch_size: int | None = None, workers: int | None = None) -> int:
    """Print a line per image, in the order found (path, P(melanoma), the verdict in words (kinds.verdict), and `ok` or
    `unlike-training` by the OOD score, `-` when the model carries none); optional CSV and overlays
    (from the same pass and the same decoded image). Bad files: a line on stderr, exit 1 at the end.
    `model` is the torch Classifier or an onnx_model.OnnxModel (made with `inference_streams(cam)[1]` threads).
    Batches (`BATCH_SIZE` images by default) are decoded by `workers` threads (`default_workers`) ahead of
    the model, and predicted `inference_streams(cam)[0]` at a time in threads (torch and ONNX Runtime
    release the GIL)."""
    files, empty = find_images(paths)
    for folder in empty:
        print(f"error: {folder}: a folder with no image files in it", file=sys.stderr)
    if not files:
        return 1
    failed = len(empty)
    if cam_dir:
        Path(cam_dir).mkdir(parents=True, exist_ok=True)
        root = common_folder(files)
    if csv_path:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else workers
    streams, threads = inference_streams(cam=bool(cam_dir))
    batch_size = batch_size or BATCH_SIZE[model.engine]
    batches = [files[i : i + batch_size] for i in range(0, len(files), batch_size)]
    on_torch = model.engine == "torch"
    # None is a valid initializer at runtime; typeshed's overloads take initargs only with a callable one
    set_threads = cast("Callable[[int], None]", set_torch_threads if on_torch else None)

    def decode_batch(batch: list[Path]) -> list[tuple]:
        return [decode(f, info.preprocess, keep_image=bool(cam_dir)) for f in batch]

    with (open(csv_path, "w", newline="") if csv_path else contextlib.nullcontext()) as f_csv, \
            torch_threads(threads) if on_torch else contextlib.nullcontext(), \
            ThreadPoolExecutor(streams, initializer=set_threads, initargs=(threads,)) as pool, \
            ThreadPoolExecutor(workers) if workers and len(batches) > 1 else contextlib.nullcontext() as decoders:
        writer = csv.writer(f_csv) if f_csv else None
        if writer:
            writer.writerow(CSV_COLUMNS)

        def write(good: list[tuple], result) -> None:
            preds, cams = result if cam_dir else (result, None)
            for k, ((path, _, image), pred) in enumerate(zip(good, preds)):
                print(f"{path}\t{pred.p_malignant:.3f}\t{pred.verdict}\t{ood_word(pred)}", flush=True)
                if writer:
                    writer.writerow(csv_row(path, pred))
                if cam_dir:
                    assert cams is not None  # predict_with_cam's maps
                    ov = overlay(np.asarray(image), cams[k], view_box(image, info.preprocess))
                    target = cam_path(cam_dir, path, root)
                    target.parent.mkdir(parents=True, exist_ok=True)
                    Image.fromarray(ov).save(target)

        pending: deque = deque()  # (files, views and images; future predictions), oldest first
        for batch, decoded in zip(batches, ahead(decoders, decode_batch, batches, depth=max(streams, workers))):
            good = []
            for path, (view, image, error) in zip(batch, decoded):
                if error:
                    print(f"error: {error}", file=sys.stderr)
                    failed += 1
                else:
                    good.append((path, view, image))
            if good:
                views = np.stack([v for _, v, _ in good])
                pending.append((good, pool.submit(predict_with_cam if cam_dir else predict_views, model, info, views)))
            if len(pending) >= streams:
                done, future = pending.popleft()
                write(done, future.result())
        while pending:
            done, future = pending.popleft()
            write(done, future.result())
    if failed:
        print(f"{failed} of {len(files) + len(empty)} path(s) could not be classified", file=sys.stderr)
        return 1
    return 0
