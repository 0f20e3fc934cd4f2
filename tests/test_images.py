import io
import struct
import zlib

import numpy as np
import pytest
from PIL import Image

from melanoma.images import MIN_SIDE, ImageError, find_images, load_image

from .conftest import lesion_image


def save(im: Image.Image, path, fmt, **kw):
    im.save(path, fmt, **kw)
    return path


def write(path, data):
    path.write_bytes(data if isinstance(data, bytes) else data.encode())
    return path


def png_bomb(width=100_000, height=100_000) -> bytes:
    """A valid tiny PNG whose header claims huge dimensions (no pixel data is ever needed)."""
    buf = io.BytesIO()
    Image.new("L", (1, 1)).save(buf, "PNG")
    data = bytearray(buf.getvalue())
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    data[16:29] = ihdr
    data[29:33] = struct.pack(">I", zlib.crc32(b"IHDR" + ihdr) & 0xFFFFFFFF)
    return bytes(data)


def test_good_jpeg_is_rgb(tmp_path):
    p = save(lesion_image(), tmp_path / "a.jpg", "JPEG")
    im = load_image(p)
    assert im.mode == "RGB" and im.size == (160, 120)


def test_bytes_source_and_name():
    buf = io.BytesIO()
    lesion_image().save(buf, "PNG")
    assert load_image(buf.getvalue(), name="upload.png").size == (160, 120)
    with pytest.raises(ImageError, match="upload.png: file is empty"):
        load_image(b"", name="upload.png")


def test_transparency_is_composited_on_white(tmp_path):
    rgba = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    im = load_image(save(rgba, tmp_path / "t.png", "PNG"))
    assert np.asarray(im).min() == 255


def test_16_bit_png_is_scaled_not_clipped(tmp_path):
    arr = np.full((64, 64), 32768, np.uint16)
    p = tmp_path / "deep.png"
    Image.fromarray(arr).save(p)
    v = np.asarray(load_image(p))
    assert v.shape == (64, 64, 3) and 120 <= v.mean() <= 135


def test_cmyk_and_palette(tmp_path):
    cmyk = load_image(save(lesion_image().convert("CMYK"), tmp_path / "c.jpg", "JPEG"))
    pal = load_image(save(lesion_image().convert("P"), tmp_path / "p.gif", "GIF"))
    assert cmyk.mode == pal.mode == "RGB"
    assert abs(np.asarray(cmyk).astype(int).mean() - np.asarray(lesion_image()).astype(int).mean()) < 12


def test_exif_orientation_is_applied(tmp_path):
    im = lesion_image((160, 120))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 degrees clockwise on display
    p = tmp_path / "phone.jpg"
    im.save(p, "JPEG", exif=exif.tobytes())
    assert load_image(p).size == (120, 160)


@pytest.mark.parametrize(
    "make, reason",
    [
        (lambda d: write(d / "empty.jpg", b""), "file is empty"),
        (lambda d: write(d / "text.jpg", "hello, not a picture"), "not a recognised image format"),
        (lambda d: write(d / "noise.png", np.random.default_rng(0).bytes(5000)), "not a recognised image format"),
        (lambda d: write(d / "bomb.png", png_bomb()), "megapixel limit"),
        (lambda d: save(Image.new("RGB", (1, 1)), d / "dot.png", "PNG"), f"under the {MIN_SIDE}-pixel minimum"),
        (lambda d: (d / "folder.jpg").mkdir() or d / "folder.jpg", "is a folder"),
        (lambda d: d / "missing.jpg", "cannot be read"),
    ],
)
def test_bad_files_get_one_line_reason(tmp_path, make, reason):
    path = make(tmp_path)
    with pytest.raises(ImageError) as err:
        load_image(path)
    msg = str(err.value)
    assert str(path) in msg and reason in msg and "\n" not in msg


@pytest.mark.parametrize("fmt, suffix", [("JPEG", "jpg"), ("PNG", "png")])
def test_truncated_files(tmp_path, fmt, suffix):
    buf = io.BytesIO()
    lesion_image((400, 300)).save(buf, fmt)
    p = tmp_path / f"cut.{suffix}"
    p.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(p)


def test_find_images_recurses_and_keeps_named_files(tmp_path):
    (tmp_path / "a" / "b").mkdir(parents=True)
    save(lesion_image(), tmp_path / "a" / "b" / "x.jpg", "JPEG")
    (tmp_path / "a" / "notes.txt").write_text("x")
    (tmp_path / "nothing.jpg").mkdir()
    found, empty = find_images([tmp_path / "a", tmp_path / "named.jpg", tmp_path / "a" / "b", tmp_path / "nothing.jpg"])
    assert found == [tmp_path / "a" / "b" / "x.jpg", tmp_path / "named.jpg"]
    assert empty == [tmp_path / "nothing.jpg"]


def test_importing_the_library_changes_no_process_wide_setting():
    """Pillow's pixel limit and the C allocator's settings belong to the program (the CLI, the
    server), not to whoever imports the library: import everything and compare."""
    import subprocess
    import sys

    probe = """
import ctypes, PIL.Image
limit, loaded = PIL.Image.MAX_IMAGE_PIXELS, []
real = ctypes.CDLL
ctypes.CDLL = lambda name, *a, **k: (loaded.append(str(name)), real(name, *a, **k))[1]
import melanoma, melanoma.images, melanoma.predict, melanoma.evaluate, melanoma.explain
print(PIL.Image.MAX_IMAGE_PIXELS == limit, any("libc" in n for n in loaded))
"""
    r = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert r.stdout.split() == ["True", "False"], r.stderr[-2000:]
