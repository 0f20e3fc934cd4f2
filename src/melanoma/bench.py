"""`melanoma bench`: speed and memory of a model file (the bundled model by default) and the seed_cnn
baseline, side by side.

Each measurement runs in its own child process (`python -m melanoma.bench PHASE MODEL DATA N [KEEP]`)
so that its peak memory (ru_maxrss) is its own. The model file is read by `loader.load_model`,
a .safetensors or an .onnx file alike. Phases:
- latency: one image, prediction + Grad-CAM + overlay (`predict.explain`; prediction alone for a file
  without maps), warm; median and p90;
- predict_torch / predict_onnx / predict_int8: `melanoma predict`'s loop (default decoding threads,
  batches of 32) over N test images, images/s, output discarded. A .safetensors file is timed as the
  torch model, its float ONNX export and its int8 export (`export --int8`, models with a recorded
  training run only; also the share of verdicts it keeps); an .onnx file as itself, in the
  ONNX or the int8 phase by what it is;
- process: `melanoma predict` as a user runs it, the whole process (start-up, imports, decoding, the
  CSV) on N test images and on one, with the int8 export of a .safetensors file that has a recorded
  training run (the file itself otherwise); seconds, images/s and the N-image run's peak memory;
- train: training steps through the real loop (`train.train_one_epoch`, augmentation included)
  on N real training images, images/s.
The seed_cnn baseline is timed with random weights (its speed does not depend on them; its
trained weights are not shipped). Writes bench.json and bench.md.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import UsageError

PHASES = ("latency", "predict_torch", "predict_onnx", "predict_int8", "process", "train")


def _test_images(data: Path, n: int) -> list[Path]:
    files = [f for cls in ("Benign", "Malignant") for f in sorted((data / "test" / cls).glob("*.jpg"))[: n // 2]]
    if not files:
        raise UsageError(f"{data / 'test'}: no test images to time")
    return files


def latency(model_file: str, data: Path, n: int) -> dict:
    from PIL import Image

    from .loader import load_model
    from .predict import analyse, explain

    model, info = load_model(model_file)
    step = explain if model.maps else analyse  # a file without maps: the prediction alone
    images = [Image.open(f).convert("RGB") for f in _test_images(data, 40)]
    for im in images[:5]:
        step(model, info, im)  # warm-up
    times = []
    for i in range(n):
        t = time.perf_counter()
        step(model, info, images[i % len(images)])
        times.append(time.perf_counter() - t)
    return {"latency_ms_median": 1000 * float(np.median(times)), "latency_ms_p90": 1000 * float(np.percentile(times, 90))}


def predict_throughput(model_file: str, data: Path, n: int, engine: str, keep: Path | None = None) -> dict:
    """`melanoma predict`'s loop over n test images with the torch model, its float ONNX export or its
    int8 export (`export --int8`: ranges from CALIBRATION_IMAGES of its validation images; models with a recorded
    training run only); an .onnx file as it is, under "onnx" or "int8" by what it is (nothing for the
    other engines). For int8 from a .safetensors file, also the share of the float export's verdicts
    it keeps on the same images (`agreement`); with `keep`, the int8 export is copied there for the process phase."""
    from .loader import load_model
    from .predict import inference_streams, run

    threads = inference_streams()[1]
    model, info = load_model(model_file, threads=threads)
    files = [str(f) for f in _test_images(data, n)]
    exports = model.engine == "torch" and engine != "torch"  # else the file is timed as it is
    if model.engine == "onnx" and engine != ("int8" if model.int8 else "onnx"):
        return {}  # an exported file is timed once, as what it is
    if exports and engine == "int8" and not info.data_fingerprint:
        return {}  # no training run to draw validation images from (the random-weight baseline)
    if exports:
        from .int8 import CALIBRATION_IMAGES, quantize
        from .onnx_model import export
        from .split import validation_views

        tmp = tempfile.TemporaryDirectory(prefix="melanoma-bench-")  # removed when this phase's process ends
        onnx_file = Path(tmp.name) / "model.onnx"
        with contextlib.redirect_stdout(sys.stderr):
            export(model, info, onnx_file)
            if engine == "int8":
                views, labels = validation_views(info, data)
                quantize(model, info, views[:CALIBRATION_IMAGES], (views, labels), onnx_file.with_name("int8.onnx"))
        plain, info = load_model(onnx_file, threads=threads)
        model = load_model(onnx_file.with_name("int8.onnx"), threads=threads)[0] if engine == "int8" else plain
        if engine == "int8" and keep is not None:
            shutil.copy(onnx_file.with_name("int8.onnx"), keep / "int8.onnx")
    with open(os.devnull, "w") as null, contextlib.redirect_stdout(null):
        run(files[:64], model, info, None, None)  # warm-up
        t = time.perf_counter()
        run(files, model, info, None, None)
        seconds = time.perf_counter() - t
    result = {f"predict_{engine}_images_per_s": len(files) / seconds}
    if exports and engine == "int8":
        result |= agreement(plain, model, files)
    return result


def process_time(model_file: str, data: Path, n: int, keep: Path | None = None) -> dict:
    """`melanoma predict FILES --model M --csv OUT` in a child process on n test images, then on one:
    wall seconds from start to exit; M is the int8 export the int8 phase left in `keep` (a .safetensors
    file with a recorded training run), else the file itself. Peak memory: the n-image run's own
    (os.wait4; this process loads no model, as a child's count starts from its parent's)."""
    files = [str(f) for f in _test_images(data, n)]
    int8 = keep / "int8.onnx" if keep is not None else None
    target, what = (str(int8), "its int8 export") if int8 is not None and int8.exists() else (str(model_file), "the file itself")
    with tempfile.TemporaryDirectory(prefix="melanoma-bench-") as tmp:
        seconds, peak = [], []
        for paths in (files, files[:1]):
            t = time.perf_counter()
            child = subprocess.Popen([sys.executable, "-m", "melanoma", "predict", *paths, "--model", target, "--csv", str(Path(tmp) / "out.csv")],
                                     stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            _, status, usage = os.wait4(child.pid, 0)  # this child's own peak memory
            seconds.append(time.perf_counter() - t)
            if os.waitstatus_to_exitcode(status) != 0:
                raise UsageError(f"melanoma predict --model {target} failed in the bench's process phase")
            peak.append(usage.ru_maxrss / 1024)
    return {"process_model": what, "process_images": len(files), "process_seconds": seconds[0], "process_images_per_s": len(files) / seconds[0],
            "process_one_image_seconds": seconds[1], "process_peak_rss_mib": peak[0]}


def agreement(plain, int8, files: list[str]) -> dict:
    """The share of `files` (decoded once) on which the int8 model's verdict is the float one's, each
    calibrated as itself (its own temperature and threshold, from its file). How well either ranks is
    not measured here: these are test images, and a candidate is not scored on test (the int8 file
    records its own validation figures beside the float model's)."""
    from .images import load_image
    from .predict import predict_views
    from .preprocess import model_view

    views = np.stack([model_view(load_image(f), plain.info.preprocess) for f in files])
    verdicts = {name: [q.label for i in range(0, len(views), 64) for q in predict_views(model, model.info, views[i : i + 64])]
                for name, model in (("float", plain), ("int8", int8))}
    return {"int8_images": len(files), "int8_same_verdict": float(np.mean([a == b for a, b in zip(verdicts["float"], verdicts["int8"])]))}


def train_throughput(model_file: str, data: Path, n: int) -> dict:
    import torch

    from .checkpoint import Progress
    from .data import scan
    from .loader import load_model
    from .parallel import Parallel
    from .preprocess import train_augment
    from .recipe import TrainConfig
    from .sampling import ArrayDataset
    from .split import load_split
    from .train import Fitting, StopRequest, freeze_early_layers, initial_model, train_one_epoch

    _, info = load_model(model_file)  # the architecture and input size; training starts from random weights
    config = TrainConfig(arch=info.arch, img_size=info.preprocess.image_size, epochs=1)
    model, pre = initial_model(config, pretrained=False)
    frozen = freeze_early_layers(model, config.arch, config.freeze_blocks)
    samples = scan(data, "train")
    step = max(1, len(samples) // n)
    samples, views, _, labels, _ = load_split(samples[::step][:n], pre, quiet=True)
    dataset = ArrayDataset(views, labels, train_augment(pre.image_size, 0), 0)
    optimizer = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-4)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0)
    fitting = Fitting(model, dataset, torch.ones(len(dataset)), optimizer, scheduler, frozen, config, pre, Parallel())
    train_one_epoch(fitting, Progress(batches_done=len(dataset) // config.batch_size - 2), StopRequest())  # warm-up: the last two batches
    progress = Progress()
    train_one_epoch(fitting, progress, StopRequest())
    return {"train_images_per_s": progress.seen / progress.seconds, "train_frozen_blocks": config.freeze_blocks if config.arch != "seed_cnn" else 0}


def _phase(phase: str, model_file: str, data: str, n: int, keep: Path | None = None) -> None:
    data_dir = Path(data)
    if phase == "latency":
        result = latency(model_file, data_dir, n)
    elif phase.startswith("predict_"):
        result = predict_throughput(model_file, data_dir, n, phase.split("_")[1], keep)
    elif phase == "process":
        print(json.dumps(process_time(model_file, data_dir, n, keep)))
        return
    else:
        result = train_throughput(model_file, data_dir, n)
    if result:  # not for a phase that does not apply (an .onnx file's torch phase, int8 of the baseline)
        result[f"{phase}_peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(result))


def machine() -> dict:
    import torch

    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else platform.processor()
    return {"cpu": cpu, "cores": os.cpu_count(), "torch_threads": torch.get_num_threads(), "python": platform.python_version(),
            "torch": torch.__version__, "date": time.strftime("%Y-%m-%d")}


def run(data: Path, out_dir: Path, sizes: dict[str, int], model_file: str | os.PathLike | None = None) -> dict:
    """Every phase for `model_file` (.safetensors or .onnx; the bundled model for None) and the
    seed_cnn baseline; writes bench.json and bench.md into `out_dir`."""
    from .loader import load_model
    from .model import BUNDLED_MODEL, build, save
    from .modelinfo import ModelInfo

    label = f"{load_model(model_file)[1].arch} ({Path(model_file).name})" if model_file else "efficientnet_lite0 (bundled)"
    report = {"machine": machine(), "sizes": sizes, "models": {}}
    with tempfile.TemporaryDirectory(prefix="melanoma-bench-") as tmp:
        baseline = Path(tmp) / "seed_cnn_random.safetensors"
        model, pre = build("seed_cnn")
        save(baseline, model, ModelInfo("seed_cnn", pre))
        for k, (name, model_file) in enumerate(((label, model_file or BUNDLED_MODEL), ("seed_cnn (random weights)", baseline))):
            row: dict = {}
            keep = Path(tmp) / f"model{k}"  # the int8 phase's export, timed again by the process phase
            keep.mkdir()
            for phase in PHASES:
                n = sizes["latency_runs" if phase == "latency" else "train_images" if phase == "train" else "predict_images"]
                print(f"bench: {name}: {phase}…", file=sys.stderr)
                r = subprocess.run([sys.executable, "-m", "melanoma.bench", phase, str(model_file), str(data), str(n), str(keep)],
                                   capture_output=True, text=True)
                if r.returncode != 0:
                    raise UsageError(f"bench phase {phase} on {name} failed:\n{r.stderr[-2000:]}")
                row.update(json.loads(r.stdout.strip().splitlines()[-1]))
            report["models"][name] = row
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "bench.json").write_text(json.dumps(report, indent=1))
    (out_dir / "bench.md").write_text(markdown(report))
    return report


def markdown(report: dict) -> str:
    m = report["machine"]
    lines = [
        f"Measured {m['date']} on {m['cpu']}, {m['cores']} cores, torch {m['torch']} ({m['torch_threads']} threads), "
        f"by `melanoma bench`.",
        "",
        "| model | predict + Grad-CAM, 1 image: median / p90 | batch predict, torch | batch predict, ONNX Runtime | batch predict, ONNX int8 "
        "| training | peak memory: predict torch / ONNX / int8 (with its export) / train |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name, r in report["models"].items():
        speed = {e: f"{r[f'predict_{e}_images_per_s']:.0f} img/s" if f"predict_{e}_images_per_s" in r else "—" for e in ("torch", "onnx", "int8")}
        memory = " / ".join(f"{r[f'predict_{e}_peak_rss_mib']:.0f}" if f"predict_{e}_peak_rss_mib" in r else "—"
                            for e in ("torch", "onnx", "int8"))  # each phase's process: the int8 one exports and quantises too
        lines.append(
            f"| {name} | {r['latency_ms_median']:.0f} / {r['latency_ms_p90']:.0f} ms | {speed['torch']} | {speed['onnx']} | {speed['int8']} "
            f"| {r['train_images_per_s']:.1f} img/s | {memory} / {r['train_peak_rss_mib']:.0f} MiB |"
        )
    lines += ["", "`melanoma predict` as a user runs it (the whole process: start-up, imports, decoding, the CSV):", ""]
    for name, r in report["models"].items():
        lines.append(f"- {name}, {r['process_model']}: {r['process_images']} test images in {r['process_seconds']:.1f} s "
                     f"({r['process_images_per_s']:.0f} img/s), peak memory {r['process_peak_rss_mib']:.0f} MiB; one image "
                     f"{r['process_one_image_seconds']:.2f} s")
    for name, r in report["models"].items():
        if "int8_same_verdict" in r:
            lines += ["", f"int8 against the float ONNX export of {name}, on the same {r['int8_images']} test images: the same verdict "
                      f"on {r['int8_same_verdict']:.1%}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    _phase(sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), Path(sys.argv[5]) if len(sys.argv) > 5 else None)
