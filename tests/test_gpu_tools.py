"""tools/gpu/pack.py: what a GPU machine without network gets is every image a run reads, byte for
byte, in parts that each fit one call, with the sums that train.sh checks there."""

import hashlib
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]


def write_images(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True)
    rng = np.random.default_rng(seed)
    for i in range(n):  # noise compresses badly: each file ~20 KB
        Image.fromarray(rng.integers(0, 255, (64, 96, 3), dtype=np.uint8)).save(folder / f"{seed}_{i}.jpg", quality=95)


def test_pack_splits_every_image_of_a_run_into_parts_that_fit_one_call(tmp_path):
    data = tmp_path / "data"
    for label, seed in (("Benign", 1), ("Malignant", 2)):
        write_images(data / "kaggle" / "train" / label, 3, seed)
        write_images(data / "kaggle" / "test" / label, 2, seed + 10)  # the test split: never packed
        write_images(data / "extra" / label, 3, seed + 20)
    sources = tmp_path / "sources.toml"
    sources.write_text('[[source]]\nname = "kaggle"\npath = "data/kaggle"\nlicence = "CC0-1.0"\n\n'
                       '[[source]]\nname = "extra"\npath = "data/extra"\nlicence = "CC-BY-NC-4.0"\n')
    out = tmp_path / "out"
    r = subprocess.run([sys.executable, str(REPO / "tools/gpu/pack.py"), "--sources", str(sources), "--out", str(out), "--call-mb", "0.06",
                        "--no-wheels"], cwd=tmp_path, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    sums = dict(line.split("  ")[::-1] for line in (out / "data.sha256").read_text().splitlines())
    assert len(sums) == 12 and not any("/test/" in name for name in sums)
    parts = sorted(out.glob("data*.tar.gz"))
    assert len(parts) > 1 and all(p.stat().st_size <= 0.06e6 for p in parts)
    unpacked = tmp_path / "machine" / (out / "root.txt").read_text().strip()  # where the sources file's paths resolve there
    for part in parts:
        with tarfile.open(part) as tar:
            tar.extractall(unpacked, filter="data")
    got = {p.relative_to(unpacked).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest() for p in unpacked.rglob("*") if p.is_file()}
    assert got == sums
