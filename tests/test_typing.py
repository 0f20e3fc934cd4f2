"""mypy over the package (pyproject.toml's [tool.mypy]) as a test, so that `make test` runs it on one of its two
workers beside the other tests instead of before them all (about 25 s of one core from a fresh clone, no cache)."""

import subprocess
import sys

from .conftest import ROOT


def test_mypy_finds_no_type_error_in_the_package():
    r = subprocess.run([sys.executable, "-m", "mypy"], cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-4000:] + r.stderr[-1000:]
