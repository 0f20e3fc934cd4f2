"""`predict` over a generated corpus of odd and bad files plus real images: every good image gets
its row, every bad file one line on stderr, no traceback, exit code 1, bounded memory."""

import csv
import io
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
from PIL import Image

from .conftest import lesion_image
from .test_images import png_bomb


def make_corpus(d, data_dir):
    good, bad = [], []
    im = lesion_image((200, 150), seed=5)

    def save(name, image, fmt, **kw):
        image.save(d / name, fmt, **kw)
        good.append(d / name)

    def write(name, data):
        (d / name).write_bytes(data)
        bad.append(d / name)

    save("cmyk.jpg", im.convert("CMYK"), "JPEG")
    Image.fromarray((np.asarray(im.convert("L"), np.uint16) * 257)).save(d / "deep16.png")
    good.append(d / "deep16.png")
    rgba = im.convert("RGBA")
    rgba.putalpha(Image.new("L", im.size, 0))
    save("transparent.png", rgba, "PNG")
    save("la.png", im.convert("LA"), "PNG")
    save("palette.gif", im.convert("P"), "GIF")
    frames = [im.convert("P"), lesion_image((200, 150), seed=6).convert("P")]
    frames[0].save(d / "animated.gif", save_all=True, append_images=frames[1:], duration=100, loop=0)
    good.append(d / "animated.gif")
    exif = Image.Exif()
    exif[0x0112] = 6
    save("rotated.jpg", im, "JPEG", exif=exif.tobytes())
    save("scan.tiff", im, "TIFF")
    save("photo.webp", im, "WEBP")
    save("old.bmp", im, "BMP")
    try:
        import pillow_heif  # noqa: F401

        save("phone.heic", im, "HEIF")
    except (ImportError, KeyError, OSError):
        pass
    good += sorted((data_dir / "test" / "Benign").glob("*.jpg"))[:3]

    write("empty.jpg", b"")
    jpeg, png = io.BytesIO(), io.BytesIO()
    lesion_image((400, 300)).save(jpeg, "JPEG")
    lesion_image((400, 300)).save(png, "PNG")
    write("truncated.jpg", jpeg.getvalue()[: len(jpeg.getvalue()) // 2])
    write("truncated.png", png.getvalue()[: len(png.getvalue()) // 2])
    write("noise.png", np.random.default_rng(0).bytes(4096))
    write("notes.jpg", b"shopping list: milk, eggs\n")
    write("bomb.png", png_bomb())
    tiny = io.BytesIO()
    Image.new("RGB", (1, 1)).save(tiny, "PNG")
    write("dot.png", tiny.getvalue())
    (d / "folder.jpg").mkdir()
    bad.append(d / "folder.jpg")
    os.symlink(d / "loop.jpg", d / "loop.jpg")
    bad.append(d / "loop.jpg")
    return good, bad


def run_measured(cmd, tmp_path) -> tuple[subprocess.CompletedProcess, int]:
    """Run a command and return its result and its own peak resident memory (KiB): the VmHWM of
    its /proc entry, read until it exits. (ru_maxrss would count the forked copy of this test
    process from before exec, and RUSAGE_CHILDREN every child this process ever had.)"""
    import time

    with open(tmp_path / "stdout", "w") as out, open(tmp_path / "stderr", "w") as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, text=True)
        peak = 0
        while proc.poll() is None:
            try:
                status = open(f"/proc/{proc.pid}/status").read()
                peak = max(peak, int(status.split("VmHWM:")[1].split()[0]))
            except (OSError, IndexError, ValueError):
                pass
            time.sleep(0.02)
    result = subprocess.CompletedProcess(cmd, proc.returncode, (tmp_path / "stdout").read_text(), (tmp_path / "stderr").read_text())
    return result, peak


def test_predict_on_the_corpus(tmp_path, data_dir, tiny_model_file):
    corpus = tmp_path / "corpus"
    corpus.mkdir()
    good, bad = make_corpus(corpus, data_dir)
    heic = any(p.suffix == ".heic" for p in good)
    assert len(good) - 3 + len(bad) == (20 if heic else 19)  # the README's count: 20 bad and odd files, 19 without HEIC
    out_csv = tmp_path / "out.csv"
    r, peak_kib = run_measured([sys.executable, "-m", "melanoma", "predict", *map(str, good + bad), "--model", str(tiny_model_file),
                                "--csv", str(out_csv)], tmp_path)
    assert r.returncode == 1
    assert "Traceback" not in r.stderr
    with open(out_csv) as f:
        rows = {row["path"] for row in csv.DictReader(f)}
    assert rows == {str(p) for p in good}
    errors = [line for line in r.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == len(bad)
    for p in bad:
        assert sum(line.startswith(f"error: {p}: ") for line in errors) == 1, p
    assert 100 * 1024 < peak_kib < 2 * 1024 * 1024  # ru_maxrss is in KiB on Linux; torch alone is over 100 MiB


def test_a_file_without_read_permission(tmp_path, data_dir, tiny_model_file, monkeypatch, capsys):
    """A file the OS refuses to read: one line naming it and the reason, the others classified. chmod 000
    means nothing to root (CI), so as root the refusal is the OS's error raised where the loader reads the
    file (Path.read_bytes), and the command runs in this process."""
    import shutil

    from melanoma.cli import main

    good, locked = tmp_path / "good.jpg", tmp_path / "locked.jpg"
    shutil.copy(sorted((data_dir / "test" / "Benign").glob("*.jpg"))[0], good)
    shutil.copy(good, locked)
    os.chmod(locked, 0o000)
    if os.geteuid() == 0:
        read_bytes = Path.read_bytes

        def refuse(self):
            if self == locked:
                raise PermissionError(13, "Permission denied", str(self))
            return read_bytes(self)

        monkeypatch.setattr(Path, "read_bytes", refuse)
        code = main(["predict", str(good), str(locked), "--model", str(tiny_model_file)])
        out, err = capsys.readouterr()
    else:
        r = subprocess.run([sys.executable, "-m", "melanoma", "predict", good, locked, "--model", tiny_model_file],
                           capture_output=True, text=True, timeout=300)
        code, out, err = r.returncode, r.stdout, r.stderr
    assert code == 1, err[-2000:]
    assert f"error: {locked}: cannot be read (Permission denied)" in err
    assert "Traceback" not in err
    assert out.startswith(str(good))
