"""The one loader of every entry point: any model file to (model, info), each engine reading its own."""

from __future__ import annotations

import os
from importlib.util import find_spec
from pathlib import Path

from .modelinfo import BUNDLED_MODEL, BUNDLED_ONNX


def default_model_path() -> Path:
    """The bundled model: its .safetensors file where torch is installed (the `train` extra), else the
    same model as a float ONNX graph, which ONNX Runtime runs without torch."""
    return BUNDLED_MODEL if find_spec("torch") is not None else BUNDLED_ONNX


def load_model(path: str | os.PathLike | None = None, threads: int | None = None):
    """(model, info) of any model file, the one loader of every entry point: an .onnx file (float or
    int8) through ONNX Runtime, anything else through model.load; None: `default_model_path()`.
    Either declares what it can do: `engine` ("torch" or "onnx"), `maps`, `lowering_maps`."""
    path = default_model_path() if path is None else path
    if str(path).lower().endswith(".onnx"):
        from .onnx_model import OnnxModel

        m = OnnxModel(path, threads=threads)
        return m, m.info
    from .model import load

    return load(path)
