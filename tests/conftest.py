import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
TINY_THRESHOLD = 0.37  # not 0.5, so a hard-coded 0.5 anywhere shows
DATA = Path(os.environ.get("MELANOMA_DATA", ROOT.parent / "shared" / "data" / "melanoma"))
EXTRA = Path(os.environ.get("MELANOMA_EXTRA_DATA", DATA.parent / "extra-train"))


def melanoma_cli(*args, cwd=None, env=None, timeout=600):
    """The command line as a user runs it: a child process, its output captured."""
    return subprocess.run([sys.executable, "-m", "melanoma", *map(str, args)], capture_output=True, text=True, cwd=cwd, env=env,
                          timeout=timeout)


def require(present: bool, missing: str, variable: str = "MELANOMA_REQUIRE_DATA") -> None:
    """Skip a test whose data or tool is missing, or fail it where `variable` says it must be there (CI)."""
    if not present:
        if os.environ.get(variable):
            pytest.fail(f"{missing}, and {variable} is set")
        pytest.skip(missing)


@pytest.fixture(scope="session")
def extra_dir(data_dir) -> Path:
    """The extra training archives (extra-train/: ISIC 2017, HAM10000), beside the Kaggle data."""
    require((EXTRA / "ham10000" / "labels.csv").is_file(), f"extra training data not found at {EXTRA} (set MELANOMA_EXTRA_DATA)")
    return EXTRA


@pytest.fixture(scope="session")
def data_dir() -> Path:
    require((DATA / "test").is_dir(), f"real data not found at {DATA} (set MELANOMA_DATA)")
    return DATA


@pytest.fixture(scope="session")
def small_data(tmp_path_factory, data_dir) -> Path:
    """A copy of a few real images per split and class, plus one broken file in test/Benign."""
    import shutil

    root = tmp_path_factory.mktemp("small_data")
    for split in ("train", "test"):
        for cls in ("Benign", "Malignant"):
            (root / split / cls).mkdir(parents=True)
            for f in sorted((data_dir / split / cls).glob("*.jpg"))[:12]:
                shutil.copy(f, root / split / cls / f.name)
    (root / "test" / "Benign" / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 truncated")
    return root


@pytest.fixture(scope="session")
def tiny_model_file(tmp_path_factory) -> Path:
    """A randomly initialised seed_cnn saved in the real model format (fast, no training)."""
    import torch

    from melanoma.model import build, save
    from melanoma.modelinfo import ModelInfo

    torch.manual_seed(0)
    model, pre = build("seed_cnn", image_size=64)
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    save(path, model, ModelInfo("seed_cnn", pre, threshold=TINY_THRESHOLD, temperature=1.3))
    return path


@pytest.fixture(scope="session")
def recorded_run(tmp_path_factory, data_dir) -> Path:
    """The folder of a real training run (EfficientNet-Lite0 at 96 px, 24 Kaggle training images a
    class, one epoch), trained once for the tests that need a model file with a recorded run: its
    split can be drawn again (fit-ood, `export --int8`, the bench's int8 phase) in seconds."""
    import subprocess
    import sys

    out = tmp_path_factory.mktemp("recorded") / "run"
    r = subprocess.run([sys.executable, "-m", "melanoma", "train", "--data", str(data_dir), "--out", str(out), "--arch", "efficientnet_lite0",
                        "--img-size", "96", "--limit", "24", "--epochs", "1", "--batch-size", "16", "--val-fraction", "0.25"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    return out


def lesion_image(size=(160, 120), seed=0) -> Image.Image:
    """A skin-coloured image with a dark blob: a stand-in for a dermoscopy photo."""
    rng = np.random.default_rng(seed)
    w, h = size
    yy, xx = np.mgrid[0:h, 0:w]
    cx, cy, r = w / 2 + rng.uniform(-10, 10), h / 2 + rng.uniform(-10, 10), min(w, h) / 4
    blob = ((xx - cx) ** 2 + (yy - cy) ** 2) < r**2
    img = np.empty((h, w, 3), np.uint8)
    img[:] = (220, 170, 150)
    img[blob] = (90, 50, 40)
    img = np.clip(img + rng.normal(0, 6, img.shape), 0, 255).astype(np.uint8)
    return Image.fromarray(img)


def to_batch(images, pre):
    """PIL images -> the normalised batch the network takes (model view, then normalisation)."""
    from melanoma.preprocess import model_view, normalize

    return normalize(np.stack([model_view(im, pre) for im in images]), pre)


def classify(model, info, images):
    """Predictions for PIL images, as `melanoma predict` makes them after decoding."""
    from melanoma.predict import predict_views
    from melanoma.preprocess import model_view

    return predict_views(model, info, np.stack([model_view(im, info.preprocess) for im in images]))
