"""Prediction on images: calibrated probability of malignancy, label at the model's threshold, Grad-CAM."""

from __future__ import annotations

import contextlib
import csv
import os
import sys
from collections import deque
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset

from .calibration import calibrated_probability
from .explain import logits_and_cam, overlay
from .images import ImageError, find_images, load_image
from .model import Classifier, ModelInfo
from .preprocess import Preprocess, model_view, normalize, view_box


@dataclass
class Prediction:
    p_malignant: float  # calibrated probability of the positive (last) class
    label: str  # class name at the model's threshold


def probabilities(model: Classifier, info: ModelInfo, x: torch.Tensor) -> np.ndarray:
    """Calibrated P(malignant) for a normalised batch."""
    with torch.no_grad():
        logits = model(x)
    return calibrated_probability(logits.numpy(), info.temperature)


def label_of(p: float, info: ModelInfo) -> str:
    return info.class_names[-1] if p >= info.threshold else info.class_names[0]


def predict_views(model: Classifier, info: ModelInfo, views: np.ndarray) -> list[Prediction]:
    """Predictions for a stack of model views (N x H x W x 3 uint8, see preprocess.model_view)."""
    ps = probabilities(model, info, normalize(views, info.preprocess))
    return [Prediction(float(p), label_of(float(p), info)) for p in ps]


def classify(model: Classifier, info: ModelInfo, images: list[Image.Image]) -> list[Prediction]:
    return predict_views(model, info, np.stack([model_view(im, info.preprocess) for im in images]))


def analyse(model: Classifier, info: ModelInfo, image: Image.Image) -> tuple[Prediction, np.ndarray, np.ndarray]:
    """Prediction, Grad-CAM map (model-view resolution) and the model view, from one preprocessing."""
    view = model_view(image, info.preprocess)
    logits, cam = logits_and_cam(model, normalize(view[None], info.preprocess), target=len(info.class_names) - 1)
    p = float(calibrated_probability(logits.numpy(), info.temperature)[0])
    return Prediction(p, label_of(p, info)), cam[0], view


def explain(model: Classifier, info: ModelInfo, image: Image.Image, alpha: float = 0.45) -> tuple[Prediction, np.ndarray]:
    """Prediction and a Grad-CAM overlay at the image's own resolution."""
    pred, cam, _ = analyse(model, info, image)
    return pred, overlay(np.asarray(image), cam, view_box(image, info.preprocess), alpha)


def cam_file_name(path: Path) -> str:
    """A flat name for a path's overlay that keeps its folders and extension
    (file names repeat across class folders): `a/Benign/1.jpg` -> `a_Benign_1.jpg.cam.png`."""
    parts = Path(path).resolve().parts[1:]
    return "_".join(parts[-4:]) + ".cam.png"


class _Views(Dataset):
    """Files -> the model's views (decoded in DataLoader workers when there are any); a bad file gives its error."""

    def __init__(self, files: list[Path], pre: Preprocess):
        self.files, self.pre = files, pre

    def __len__(self) -> int:
        return len(self.files)

    def __getitem__(self, i: int) -> tuple[int, np.ndarray | None, str | None]:
        try:
            return i, model_view(load_image(self.files[i]), self.pre), None
        except ImageError as exc:
            return i, None, str(exc)


def default_workers() -> int:
    """Decoding processes beside the model: none on 2 cores, where they only take cores from the
    model (ONNX Runtime, 1,000 test images: 103 images/s with none, 87-93 with 1 or 2; measured),
    then one per spare core up to 4."""
    return max(0, min(4, (os.cpu_count() or 1) - 2))


def inference_streams(cam: bool = False, cores: int | None = None) -> tuple[int, int]:
    """(batches run at once, threads each) for batch prediction. Whole batches side by side, each on
    few threads, keep the cores busier than one batch at a time on all of them: on 2 cores, 640 test
    images, ONNX Runtime 132 images/s (2 batches x 1 thread) against 102 (1 x 2); torch, 1,000 images,
    65 against 50 (`melanoma bench`: torch 59, ONNX 123; one batch at a time before: 56 and 98).
    With Grad-CAM overlays one batch at a time on all cores: the maps are drawn in between, and
    captum's hooks (seed_cnn) must not meet another thread's forward pass."""
    cores = cores or os.cpu_count() or 1
    if cam:
        return 1, cores
    streams = min(4, cores)
    return streams, max(1, cores // streams)


@contextlib.contextmanager
def torch_threads(n: int):
    """torch's intra-op threads for the calling thread, restored afterwards."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def run(paths: list[str], model: Classifier, info: ModelInfo, csv_path: str | None, cam_dir: str | None,
        batch_size: int = 32, workers: int | None = None) -> int:
    """Print a line per image, in the order found; optional CSV and overlays. Bad files: a line on
    stderr, exit 1 at the end. `model` is the torch Classifier or an onnx_model.OnnxModel (made with
    `inference_streams(cam)[1]` threads). Batches are decoded by the DataLoader and predicted
    `inference_streams(cam)[0]` at a time in threads (torch and ONNX Runtime release the GIL)."""
    files, empty = find_images(paths)
    for folder in empty:
        print(f"error: {folder}: a folder with no image files in it", file=sys.stderr)
    if not files:
        return 1
    failed = len(empty)
    if cam_dir:
        Path(cam_dir).mkdir(parents=True, exist_ok=True)
    if csv_path:
        Path(csv_path).parent.mkdir(parents=True, exist_ok=True)
    workers = default_workers() if workers is None else workers
    loader = DataLoader(_Views(files, info.preprocess), batch_size=batch_size, num_workers=workers if len(files) > batch_size else 0,
                        collate_fn=list)
    streams, threads = inference_streams(cam=bool(cam_dir))
    with (open(csv_path, "w", newline="") if csv_path else contextlib.nullcontext()) as f_csv, torch_threads(threads), \
            ThreadPoolExecutor(streams, initializer=torch.set_num_threads, initargs=(threads,)) as pool:
        writer = csv.writer(f_csv) if f_csv else None
        if writer:
            writer.writerow(["path", "p_malignant", "label"])

        def write(paths: list[Path], preds: list[Prediction]) -> None:
            for path, pred in zip(paths, preds):
                print(f"{path}\t{pred.p_malignant:.3f}\t{pred.label}", flush=True)
                if writer:
                    writer.writerow([str(path), f"{pred.p_malignant:.6f}", pred.label])
                if cam_dir:
                    _, ov = explain(model, info, load_image(path))  # reread: full resolution for the overlay
                    Image.fromarray(ov).save(Path(cam_dir) / cam_file_name(path))

        pending: deque = deque()  # (paths, future predictions), oldest first
        for batch in loader:
            for _, _, error in batch:
                if error:
                    print(f"error: {error}", file=sys.stderr)
                    failed += 1
            good = [(files[i], view) for i, view, error in batch if error is None]
            if good:
                views = np.stack([v for _, v in good])
                pending.append(([f for f, _ in good], pool.submit(predict_views, model, info, views)))
            if len(pending) >= streams:
                paths_done, future = pending.popleft()
                write(paths_done, future.result())
        while pending:
            paths_done, future = pending.popleft()
            write(paths_done, future.result())
    if failed:
        print(f"{failed} of {len(files) + len(empty)} path(s) could not be classified", file=sys.stderr)
        return 1
    return 0
