"""One real-browser test: `melanoma serve` on a free loopback port, Chromium driven by Playwright."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--disable-quic", "--no-first-run",
        "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def need_browser():
    missing = None
    if not Path(CHROMIUM).exists():
        missing = "Chromium not installed (apt-get install chromium)"
    else:
        try:
            import playwright.sync_api  # noqa: F401
        except ImportError:
            missing = "playwright not installed (pip install playwright)"
    if missing:
        if os.environ.get("MELANOMA_REQUIRE_BROWSER"):
            pytest.fail(f"{missing}, and MELANOMA_REQUIRE_BROWSER is set")
        pytest.skip(missing)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def server(tmp_path):
    """The page as a user gets it: `melanoma serve` on the bundled model."""
    port = free_port()
    log = open(tmp_path / "server.log", "w")
    proc = subprocess.Popen([sys.executable, "-m", "melanoma", "serve", "--port", str(port)], stdout=log, stderr=subprocess.STDOUT)
    deadline = time.time() + 60
    while time.time() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.3)
    else:
        proc.kill()
        pytest.fail("the page did not start within 60 s: " + (tmp_path / "server.log").read_text()[-2000:])
    yield f"http://127.0.0.1:{port}"
    proc.terminate()
    proc.wait(timeout=20)
    log.close()


def test_upload_in_a_real_browser(server, data_dir, tmp_path):
    need_browser()
    from playwright.sync_api import sync_playwright

    image = sorted((data_dir / "test" / "Malignant").glob("*.jpg"))[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(server, timeout=60_000)
        page.get_by_text("Skin spot check").first.wait_for(timeout=60_000)
        page.locator("input[type=file]").set_input_files(str(image))
        page.get_by_text("the model's estimate of melanoma is").wait_for(timeout=60_000)
        page.get_by_text("Grad-CAM: red = regions").wait_for(timeout=60_000)
        assert page.locator("img").count() >= 2
        assert page.get_by_text("Traceback").count() == 0
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("MELANOMA_SCREENSHOT"):  # to refresh the README's picture
        shutil.copy(shot, os.environ["MELANOMA_SCREENSHOT"])
