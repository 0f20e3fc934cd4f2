"""The ONNX path's numpy preprocessing gives the ONNX model the values the torch preprocessing gives."""

from dataclasses import replace

import numpy as np
import pytest

from melanoma.images import load_image
from melanoma.model import ARCHITECTURES, load
from melanoma.preprocess import TRAINING_LOOK, model_view, normalize, normalize_nhwc


@pytest.mark.parametrize("case", ["bundled", "bundled, colours matched", "seed_cnn, colours matched, lesion framing"])
def test_numpy_normalisation_gives_the_torch_values(data_dir, case):
    pre = load()[1].preprocess if case.startswith("bundled") else replace(ARCHITECTURES["seed_cnn"][1], framing="lesion")
    if "matched" in case:
        pre = replace(pre, colour_reference=TRAINING_LOOK)
    files = [f for c in ("Benign", "Malignant") for f in sorted((data_dir / "test" / c).glob("*.jpg"))[:3]]
    views = np.stack([model_view(load_image(f), pre) for f in files])
    views[0, : views.shape[1] // 4] = 0  # a black band, which colour matching leaves out of its statistics
    expected = normalize(views, pre).permute(0, 2, 3, 1).numpy()
    got = normalize_nhwc(views, pre)
    assert got.dtype == np.float32 and got.shape == expected.shape
    assert np.abs(got - expected).max() <= 1e-6
