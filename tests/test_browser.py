"""One real-browser test: `melanoma serve` on a free loopback port, Chromium driven by Playwright."""

import os
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from melanoma.loadtest import free_port

from .conftest import require

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
    require(not missing, missing, "MELANOMA_REQUIRE_BROWSER")


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
    proc.log_path = tmp_path / "server.log"
    yield f"http://127.0.0.1:{port}", proc
    proc.terminate()
    proc.wait(timeout=20)
    log.close()
    # stopping `melanoma serve` stops the page: nothing is left listening on its port
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", port)) != 0, f"the page still answers on port {port} after `melanoma serve` was stopped"


def server_log_text(proc) -> str:
    return proc.log_path.read_text()


def test_upload_in_a_real_browser(server, data_dir, tmp_path):
    need_browser()
    url, _ = server
    from playwright.sync_api import sync_playwright

    image = sorted((data_dir / "test" / "Malignant").glob("*.jpg"))[0]
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(url, timeout=60_000)
        page.get_by_text("Skin spot check").first.wait_for(timeout=60_000)
        page.locator("input[type=file]").set_input_files(str(image))
        page.get_by_text("the model's estimate of melanoma is").wait_for(timeout=60_000)
        page.get_by_text("Grad-CAM: red = regions").wait_for(timeout=60_000)
        assert page.locator("img").count() >= 2
        page.wait_for_function("Array.from(document.images).every(i => i.complete && i.naturalWidth > 0)", timeout=60_000)
        assert page.get_by_text("Traceback").count() == 0
        shot = tmp_path / "page.png"
        page.screenshot(path=str(shot), full_page=True)
        browser.close()
    assert shot.stat().st_size > 10_000
    if os.environ.get("MELANOMA_SCREENSHOT"):  # to refresh the README's picture
        shutil.copy(shot, os.environ["MELANOMA_SCREENSHOT"])


def test_compare_two_photos_in_a_real_browser(server, data_dir, tmp_path):
    """The compare part as a user meets it: choose it, upload an earlier and a later photo, see the change and the picture."""
    need_browser()
    url, _ = server
    from PIL import Image
    from playwright.sync_api import sync_playwright

    before = sorted((data_dir / "train" / "Malignant").glob("*.jpg"))[0]
    after = tmp_path / "later.jpg"
    Image.eval(Image.open(before).convert("RGB"), lambda v: min(255, int(v * 1.1))).save(after, quality=95)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1280, "height": 1100})
        page.goto(url, timeout=60_000)
        page.get_by_text("Compare two photos of one spot").click(timeout=60_000)
        page.get_by_text("Earlier photo (before)").wait_for(timeout=60_000)
        inputs = page.locator("input[type=file]")
        # one upload at a time: each reruns the page, and a file set on the other uploader while that rerun redraws it
        # can be lost (a CI run on 2 busy cores waited 60 s for a result that never came)
        inputs.nth(0).set_input_files(str(before))
        page.get_by_text(before.name).wait_for(timeout=60_000)
        inputs.nth(1).set_input_files(str(after))
        page.get_by_text(after.name).wait_for(timeout=60_000)
        try:
            page.get_by_text("Longest diameter").wait_for(timeout=90_000)
        except Exception:
            pytest.fail("no comparison on the page; it read:\n" + page.inner_text("body")[-1500:]
                        + "\nserver log:\n" + server_log_text(server[1])[-1500:])
        page.get_by_text("red: grown, blue: shrunk").wait_for(timeout=60_000)
        assert page.get_by_text("goes to a doctor").count() >= 1 and page.get_by_text("Traceback").count() == 0
        browser.close()


def rss_kib(pid: int) -> int:
    """Resident memory of a process and its children (KiB), from /proc."""
    total = 0
    for p in [pid, *children(pid)]:
        try:
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
        except OSError:
            pass
    return total


def children(pid: int) -> list[int]:
    try:
        kids = [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []
    return kids + [g for k in kids for g in children(k)]


SESSIONS = 20


@pytest.mark.slow
def test_twenty_concurrent_sessions(server, data_dir, tmp_path):
    """Load test on loopback: 20 browser sessions upload at once; every one gets its verdict and
    overlay, the server's memory stays bounded and its log stays free of errors."""
    need_browser()
    import json
    import threading

    from playwright.sync_api import sync_playwright

    url, proc = server
    images = [f for cls in ("Benign", "Malignant") for f in sorted((data_dir / "test" / cls).glob("*.jpg"))[: SESSIONS // 2]]
    peak = {"kib": rss_kib(proc.pid)}
    baseline_kib = peak["kib"]
    sampling = threading.Event()

    def sample():
        while not sampling.is_set():
            peak["kib"] = max(peak["kib"], rss_kib(proc.pid))
            time.sleep(0.2)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        pages = [browser.new_context().new_page() for _ in images]
        for page in pages:
            page.goto(url, timeout=120_000)
        for page in pages:
            page.locator("input[type=file]").wait_for(state="attached", timeout=120_000)
        started = time.time()
        for page, image in zip(pages, images):
            page.locator("input[type=file]").set_input_files(str(image))
        seconds: dict[int, float] = {}
        while len(seconds) < len(pages) and time.time() - started < 300:
            for i, page in enumerate(pages):
                if i not in seconds and page.get_by_text("Grad-CAM: red = regions").count() and \
                        page.get_by_text("the model's estimate of melanoma is").count():
                    seconds[i] = time.time() - started
            time.sleep(0.25)
        errors = sum(page.get_by_text("Traceback").count() + page.get_by_text("could not be processed").count() for page in pages)
        browser.close()
    sampling.set()
    sampler.join()
    log = server_log_text(proc)
    report = {
        "sessions": len(pages), "completed": len(seconds), "errors_on_pages": errors,
        "seconds_to_result_median": float(np.median(list(seconds.values()))) if seconds else None,
        "seconds_to_all_results": max(seconds.values()) if seconds else None,
        "server_rss_mib_before": round(baseline_kib / 1024), "server_rss_mib_peak": round(peak["kib"] / 1024),
    }
    print(json.dumps(report))
    if os.environ.get("MELANOMA_LOAD_REPORT"):  # for the README's reliability section
        Path(os.environ["MELANOMA_LOAD_REPORT"]).write_text(json.dumps(report, indent=1))
    assert len(seconds) == len(pages), report
    assert errors == 0
    assert not any(word in log for word in ("Traceback", "Error", "Exception")), log[-3000:]
    assert peak["kib"] < 4 * 1024 * 1024, report  # 4 GiB for 20 sessions (the model is loaded once)
