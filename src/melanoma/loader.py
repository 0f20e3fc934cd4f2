"""The one loader of every entry point: any model file to (model, info), each engine reading its own."""

from __future__ import annotations

import os


def load_model(path: str | os.PathLike | None = None, threads: int | None = None):
    """(model, info) of any model file, the one loader of every entry point: an .onnx file (float or
    int8) through ONNX Runtime, anything else (or the bundled model, for None) through model.load.
    Either declares what it can do: `engine` ("torch" or "onnx"), `maps`, `lowering_maps`."""
    if path is not None and str(path).lower().endswith(".onnx"):
        from .onnx_model import OnnxModel

        m = OnnxModel(path, threads=threads)
        return m, m.info
    from .model import load

    return load(path)
