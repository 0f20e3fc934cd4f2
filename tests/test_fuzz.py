"""Property: for any bytes, the loader and prediction give a result or the project's own clear error."""

import io

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from melanoma.images import ImageError, load_image
from melanoma.model import load

from .conftest import classify, lesion_image


def encoded(fmt: str) -> bytes:
    buf = io.BytesIO()
    lesion_image((96, 64), seed=1).save(buf, fmt)
    return buf.getvalue()


SEEDS = {fmt: encoded(fmt) for fmt in ("JPEG", "PNG", "GIF", "BMP", "TIFF", "WEBP")}


@st.composite
def mutated(draw):
    data = bytearray(SEEDS[draw(st.sampled_from(sorted(SEEDS)))])
    for _ in range(draw(st.integers(1, 8))):
        op = draw(st.sampled_from(["flip", "cut", "insert"]))
        pos = draw(st.integers(0, max(0, len(data) - 1)))
        if op == "flip" and data:
            data[pos] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[pos : pos + draw(st.integers(1, 64))]
        else:
            data[pos:pos] = draw(st.binary(min_size=1, max_size=32))
    return bytes(data)


@pytest.fixture(scope="module")
def tiny(tiny_model_file):
    return load(tiny_model_file)


def check(data: bytes, model, info) -> None:
    try:
        image = load_image(data, name="fuzz.bin")
    except ImageError as exc:
        assert str(exc).startswith("fuzz.bin: ") and "\n" not in str(exc)
        return
    assert image.mode == "RGB" and min(image.size) >= 32
    p = classify(model, info, [image])[0].p_malignant
    assert np.isfinite(p) and 0.0 <= p <= 1.0


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.binary(max_size=4096))
def test_random_bytes(data, tiny):
    check(data, *tiny)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=mutated())
def test_mutated_images(data, tiny):
    check(data, *tiny)
