"""The one way every entry point (training, audit, evaluate, predict, the page) reads an image.

`load_image` returns an upright 8-bit RGB PIL image or raises `ImageError`, whose message names
the file and the reason in one line. Pillow does the decoding; this module only sets the limits
and turns Pillow's many failure modes into that one error.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

try:  # HEIC/HEIF as phones save them; optional so the core works without the wheel.
    import pillow_heif

    pillow_heif.register_heif_opener()
except ImportError:  # pragma: no cover - depends on the environment
    pass

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".heic", ".heif"}
UPLOAD_TYPES = sorted(s[1:] for s in IMAGE_SUFFIXES)  # the same, as the page's uploaders name them
MAX_FILE_BYTES = 50 * 1024 * 1024  # a phone photo is 2-12 MB; anything past this is refused unread
MAX_PIXELS = 64_000_000  # about 8000x8000; more is refused before decoding (decompression bombs)
MIN_SIDE = 32  # smaller images carry no usable detail of a lesion

# Pillow warns past its own MAX_IMAGE_PIXELS (89 M by default) and raises past twice that; load_image
# checks MAX_PIXELS itself before decoding and makes Pillow's warning an error while it reads, and
# leaves Pillow's process-wide limit to the program that imports it.


class ImageError(ValueError):
    """An image that cannot be used, with the file it came from and why."""

    def __init__(self, name: str, reason: str):
        super().__init__(f"{name}: {reason}")
        self.name = name
        self.reason = reason


def load_image(source: str | os.PathLike | bytes, name: str | None = None) -> Image.Image:
    """Read `source` (a path or the bytes of a file) into an upright RGB image.

    Raises ImageError for anything that is not a usable image: missing, a folder, empty, too
    large (bytes or pixels), not an image, truncated or corrupt, or smaller than MIN_SIDE.
    """
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        name = name or "<upload>"
    else:
        path = Path(source)
        name = name or str(path)
        try:
            if path.is_dir():
                raise ImageError(name, "is a folder, not an image file")
            size = path.stat().st_size
            if size > MAX_FILE_BYTES:
                raise ImageError(name, f"file is {size / 2**20:.0f} MB, over the {MAX_FILE_BYTES // 2**20} MB limit")
            data = path.read_bytes()
        except ImageError:
            raise
        except OSError as exc:  # missing, permissions, symlink loop...
            raise ImageError(name, f"cannot be read ({exc.strerror or exc})") from None
    if not data:
        raise ImageError(name, "file is empty")
    if len(data) > MAX_FILE_BYTES:
        raise ImageError(name, f"file is {len(data) / 2**20:.0f} MB, over the {MAX_FILE_BYTES // 2**20} MB limit")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(data)) as im:
                w, h = im.size
                if w * h > MAX_PIXELS:
                    raise ImageError(name, f"image is {w}x{h} pixels, over the {MAX_PIXELS // 10**6} megapixel limit")
                im.seek(0)  # animated images: the first frame
                im.load()
                rgb = to_rgb(ImageOps.exif_transpose(im))
    except ImageError:
        raise
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        raise ImageError(name, f"image is over the {MAX_PIXELS // 10**6} megapixel limit") from None
    except UnidentifiedImageError:
        raise ImageError(name, "not a recognised image format") from None
    except Exception as exc:  # noqa: BLE001 - Pillow's plugins raise many types on bad data
        raise ImageError(name, f"corrupt or truncated image ({type(exc).__name__}: {exc})".replace("\n", " ")) from None
    if min(rgb.size) < MIN_SIDE:
        raise ImageError(name, f"image is {rgb.size[0]}x{rgb.size[1]} pixels, under the {MIN_SIDE}-pixel minimum side")
    return rgb


def pixel_count(data: bytes) -> int | None:
    """Width x height from an image file's header, decoding nothing; None when the header cannot be
    read (load_image then says why)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            with Image.open(io.BytesIO(data)) as im:
                return im.size[0] * im.size[1]
    except Exception:  # noqa: BLE001 - any unreadable header: load_image reports it
        return None


def to_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode to 8-bit RGB; transparency is laid on white, 16-bit is scaled, not clipped."""
    if im.mode in ("I;16", "I;16B", "I;16L", "I"):
        arr = np.asarray(im, dtype=np.float64)
        top = 65535.0 if im.mode.startswith("I;16") or arr.max() > 255 else 255.0
        im = Image.fromarray(np.clip(arr / top * 255.0 + 0.5, 0, 255).astype(np.uint8), "L")
    elif im.mode == "F":
        arr = np.asarray(im, dtype=np.float64)
        im = Image.fromarray(np.clip(arr * (255.0 if arr.max() <= 1.0 else 1.0), 0, 255).astype(np.uint8), "L")
    if im.mode == "P":
        im = im.convert("RGBA" if "transparency" in im.info else "RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La"):
        rgba = im.convert("RGBA")
        white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        return Image.alpha_composite(white, rgba).convert("RGB")
    if im.mode != "RGB":
        return im.convert("RGB")
    return im


def find_images(paths: Sequence[str | os.PathLike]) -> tuple[list[Path], list[Path]]:
    """Files named on the command line and image files found recursively in named folders;
    and the named folders in which no image file was found."""
    found: dict[Path, None] = {}  # ordered, without repeats
    empty = []
    for p in map(Path, paths):
        if p.is_dir():
            inside = [f for f in sorted(p.rglob("*")) if f.suffix.lower() in IMAGE_SUFFIXES and not f.is_dir()]
            found.update((f, None) for f in inside)
            if not inside:
                empty.append(p)
        else:
            found[p] = None  # a bad file is reported by load_image, not dropped here
    return list(found), empty
