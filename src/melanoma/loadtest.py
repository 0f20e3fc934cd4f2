"""`melanoma loadtest`: the HTTP API under load, on loopback, bounded in requests and time.

Starts `melanoma api` as a child process on a free loopback port, sends `requests` POST
/v1/predict requests of one image from `clients` concurrent clients (httpx2), and meanwhile asks
/healthz every 0.1 s. Every answer is checked against `melanoma predict --csv` on the same image
(label, OOD flag, and the probability to the CSV's 6 decimals); a 503 with Retry-After (the
server's queue is full) is counted as "busy" and the request sent again after the seconds it asks,
any other failure is an error. With `abusive` clients
besides, each sends the largest requests the limits allow until the others are done, alternately 16
flat 8000x8000 PNGs (refused by the pixel budget) and 4 flat 5000x5000 PNGs (100 megapixels, the
budget). Writes loadtest.json and loadtest.md: errors, mismatches, busy answers, request latency
(p50, p90, p99, max), throughput, health-check latency, the abusive requests' statuses and the
server's peak memory (VmHWM). Client and server share the machine's cores. The
server's log is not kept; an error quotes its last line.
"""

from __future__ import annotations

import asyncio
import csv
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from .errors import UsageError

HEALTH_EVERY = 0.1  # seconds between health checks during the load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def expected_answer(image: Path, model: str | None) -> dict:
    """`melanoma predict --csv` on the image: what every API answer must equal."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "p.csv"
        cmd = [sys.executable, "-m", "melanoma", "predict", str(image), "--csv", str(out)] + (["--model", model] if model else [])
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=300)
        if done.returncode != 0:
            raise UsageError(f"{image}: melanoma predict failed: {done.stderr.strip().splitlines()[-1] if done.stderr.strip() else done.returncode}")
        row = next(csv.DictReader(out.open()))
    return {"p_malignant": float(row["p_malignant"]), "label": row["label"], "ood": None if row["ood"] == "" else row["ood"] == "1"}


def matches(entry: dict, expected: dict) -> bool:
    return (entry.get("label") == expected["label"] and entry.get("ood") == expected["ood"]
            and abs(entry.get("p_malignant", -1.0) - expected["p_malignant"]) <= 5e-7 + 1e-9)


def peak_memory_mb(pid: int) -> float | None:
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


class Server:
    """`melanoma api` in a child process on a free loopback port; stopped (and waited for) on exit."""

    def __init__(self, model: str | None, log: Path, extra: list[str] | None = None, env: dict | None = None):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        cmd = [sys.executable, "-m", "melanoma", "api", "--port", str(self.port)] + (["--model", model] if model else []) + (extra or [])
        self.log = open(log, "w")
        self.process = subprocess.Popen(cmd, stdout=self.log, stderr=subprocess.STDOUT, env=env)

    def log_tail(self) -> str:
        self.log.flush()
        lines = Path(self.log.name).read_text(errors="replace").strip().splitlines()
        return lines[-1] if lines else "(empty log)"

    def wait_ready(self, timeout: float = 120.0) -> None:
        import httpx2

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            if self.process.poll() is not None:
                raise UsageError(f"the API server exited with status {self.process.returncode}: {self.log_tail()}")
            try:
                if httpx2.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return
            except httpx2.HTTPError:
                pass
            time.sleep(0.2)
        raise UsageError(f"the API server did not answer within {timeout:.0f} s: {self.log_tail()}")

    def __enter__(self) -> "Server":
        return self

    def __exit__(self, *exc) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


def flat_png(side: int) -> bytes:
    import io

    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (side, side), (200, 150, 120)).save(buf, format="PNG")
    return buf.getvalue()


async def send_load(url: str, image: Path, expected: dict, clients: int, requests: int, time_limit: float, abusive: int = 0) -> dict:
    import httpx2

    data = image.read_bytes()
    latencies, health, failures = [], [], []
    mismatched = busy = 0
    sent = 0
    done = asyncio.Event()
    abuse: dict[str, int] = {}
    largest = [[("file", (f"{i}.png", png, "image/png")) for i in range(n)] for n, png in ((16, flat_png(8000)), (4, flat_png(5000)))] if abusive else []

    async def send(http):
        return await http.post(url + "/v1/predict", files={"file": (image.name, data, "image/jpeg")})

    async def client(http) -> None:
        nonlocal sent, mismatched, busy
        while sent < requests:
            sent += 1
            t0 = time.perf_counter()
            try:
                r = await send(http)
                while r.status_code == 503 and r.headers.get("retry-after", "").isdigit():  # busy: wait as told, then again
                    busy += 1
                    await asyncio.sleep(int(r.headers["retry-after"]))
                    r = await send(http)
            except httpx2.HTTPError as exc:
                failures.append(f"{type(exc).__name__}: {exc}")
                continue
            latencies.append(time.perf_counter() - t0)  # what the user waited, retries included
            if r.status_code != 200:
                failures.append(f"HTTP {r.status_code}: {r.text[:200]}")
            elif not matches(r.json()["results"][0], expected):
                mismatched += 1

    async def abuser(http, k: int) -> None:
        while not done.is_set():
            files, k = largest[k % 2], k + 1
            try:
                r = await http.post(url + "/v1/predict", files=files)
                key = f"{len(files)} images: HTTP {r.status_code}"
            except httpx2.HTTPError as exc:
                key = f"{len(files)} images: {type(exc).__name__}"
            abuse[key] = abuse.get(key, 0) + 1

    async def health_checks(http) -> None:
        while not done.is_set():
            t0 = time.perf_counter()
            try:
                r = await http.get(url + "/healthz")
                health.append(time.perf_counter() - t0 if r.status_code == 200 else float("inf"))
            except httpx2.HTTPError:
                health.append(float("inf"))
            await asyncio.sleep(HEALTH_EVERY)

    limits = httpx2.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx2.AsyncClient(limits=limits, timeout=120) as http, httpx2.AsyncClient(timeout=10) as health_http, \
            httpx2.AsyncClient(limits=httpx2.Limits(max_connections=max(abusive, 1)), timeout=120) as abuse_http:
        checker = asyncio.create_task(health_checks(health_http))
        abusers = [asyncio.create_task(abuser(abuse_http, k)) for k in range(abusive)]
        t0 = time.perf_counter()
        try:
            await asyncio.wait_for(asyncio.gather(*(client(http) for _ in range(clients))), time_limit)
            timed_out = False
        except asyncio.TimeoutError:
            timed_out = True
        seconds = time.perf_counter() - t0
        done.set()
        await checker
        await asyncio.gather(*abusers)
    ms = lambda xs, q: round(float(np.percentile(xs, q)) * 1000, 1) if xs else None  # noqa: E731
    return {
        "requests_answered": len(latencies), "errors": len(failures), "first_errors": failures[:5], "mismatched_answers": mismatched,
        "busy_answers": busy, "abusive_clients": abusive, "abusive_requests": dict(sorted(abuse.items())),
        "timed_out": timed_out, "seconds": round(seconds, 1), "requests_per_second": round(len(latencies) / seconds, 1),
        "latency_ms": {"p50": ms(latencies, 50), "p90": ms(latencies, 90), "p99": ms(latencies, 99), "max": ms(latencies, 100)},
        "health_checks": len(health), "health_ms": {"p50": ms(health, 50), "p99": ms(health, 99), "max": ms(health, 100)},
    }


def run(out: Path, image: Path, model: str | None = None, clients: int = 32, requests: int = 1000, time_limit: float = 600.0,
        abusive: int = 0) -> dict:
    if not image.is_file():
        raise UsageError(f"{image}: no such image file")
    if clients < 1 or requests < 1:
        raise UsageError("--clients and --requests must be at least 1")
    out.mkdir(parents=True, exist_ok=True)
    expected = expected_answer(image, model)
    with tempfile.TemporaryDirectory() as tmp, Server(model, Path(tmp) / "server.log") as server:
        server.wait_ready()
        result = asyncio.run(send_load(server.url, image, expected, clients, requests, time_limit, abusive))
        result["server_peak_memory_mb"] = round(peak_memory_mb(server.process.pid) or float("nan"), 1)
    report = {"clients": clients, "requests": requests, "image": image.name, "expected": expected, **result,
              "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()},
              "command": "melanoma loadtest " + " ".join(sys.argv[2:]) if sys.argv[1:2] == ["loadtest"] else None}
    (out / "loadtest.json").write_text(json.dumps(report, indent=2) + "\n")
    lat, health = report["latency_ms"], report["health_ms"]
    abuse = (f"\nBesides, {abusive} abusive clients sent the largest requests the limits allow; their answers: "
             + ", ".join(f"{k}: {n}" for k, n in report["abusive_requests"].items()) + ".\n") if abusive else ""
    (out / "loadtest.md").write_text(
        f"# API load test ({clients} clients, {requests} requests of one image, loopback, {os.cpu_count()} cores shared by client and server)\n\n"
        "| answered | errors | answers unlike `melanoma predict` | busy (503, Retry-After) | requests/s | latency p50 / p90 / p99 / max (ms) "
        "| health checks | health p50 / p99 / max (ms) | server peak memory (MB) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- |\n"
        f"| {report['requests_answered']} | {report['errors']} | {report['mismatched_answers']} | {report['busy_answers']} | {report['requests_per_second']} "
        f"| {lat['p50']} / {lat['p90']} / {lat['p99']} / {lat['max']} | {report['health_checks']} "
        f"| {health['p50']} / {health['p99']} / {health['max']} | {report['server_peak_memory_mb']} |\n" + abuse)
    return report
