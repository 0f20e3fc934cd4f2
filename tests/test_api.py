"""The HTTP API (api.py): every endpoint and error path through FastAPI's test client, the limits
at the ASGI level, and the real `melanoma api` on loopback (started here, stopped after)."""

import asyncio
import base64
import csv
import io
import json
import logging
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image

from melanoma.api import Limits, create_app
from melanoma.images import load_image
from melanoma.model import load
from melanoma.modelinfo import BUNDLED_MODEL, file_sha256

from .conftest import lesion_image

KEY = "s3cret-key"


def png_bytes(image: Image.Image) -> bytes:
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return buf.getvalue()


@pytest.fixture(scope="module")
def client() -> TestClient:
    return TestClient(create_app())


@pytest.fixture(scope="module")
def keyed() -> TestClient:
    return TestClient(create_app(api_key=KEY, limits=Limits(request_bytes=200_000, files=3)))


def upload(*files: tuple[str, bytes]) -> list:
    return [("file", (name, data, "application/octet-stream")) for name, data in files]


def test_answers_equal_melanoma_predict_with_a_bad_file_among_them(client, tmp_path, data_dir):
    files = sorted((data_dir / "test" / "Benign").glob("*.jpg"))[:3] + sorted((data_dir / "test" / "Malignant").glob("*.jpg"))[:3]
    sent = [(f.name, f.read_bytes()) for f in files]
    sent.insert(2, ("broken.jpg", b"\xff\xd8\xff\xe0 truncated"))
    r = client.post("/v1/predict", files=upload(*sent))
    assert r.status_code == 200
    results = r.json()["results"]
    assert [e["file"] for e in results] == [name for name, _ in sent]
    assert results[2] == {"file": "broken.jpg", "error": "broken.jpg: corrupt or truncated image (OSError: Truncated File Read)"}

    out = tmp_path / "p.csv"
    done = subprocess.run([sys.executable, "-m", "melanoma", "predict", *map(str, files), "--csv", str(out)], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    rows = list(csv.DictReader(out.open()))
    _, info = load()
    for e, row in zip([e for e in results if "error" not in e], rows):
        assert e["label"] == row["label"] and f"{e['p_malignant']:.6f}" == row["p_malignant"]
        assert e["ood"] == (row["ood"] == "1") and abs(e["ood_score"] - float(row["ood_score"])) < 1e-3
        assert e["threshold"] == info.threshold and isinstance(e["warnings"], list)
    assert {e["label"] for e in results if "label" in e} <= set(info.class_names)


def test_cam_overlay_is_the_one_predict_draws(client, data_dir):
    from melanoma import predict

    path = sorted((data_dir / "test" / "Malignant").glob("*.jpg"))[0]
    r = client.post("/v1/predict?cam=true", files=upload((path.name, path.read_bytes())))
    entry = r.json()["results"][0]
    drawn = np.asarray(Image.open(io.BytesIO(base64.b64decode(entry["cam_png"]))))
    model, info = load()
    pred, expected = predict.explain(model, info, load_image(path))
    diff = np.abs(drawn.astype(int) - expected)
    assert drawn.shape == expected.shape and diff.max() <= 4 and diff.mean() < 0.05  # a colour-map step where float rounding differs
    assert abs(pred.p_malignant - entry["p_malignant"]) < 1e-6
    assert "cam_png" not in client.post("/v1/predict", files=upload((path.name, path.read_bytes()))).json()["results"][0]


def test_photo_checks_reach_the_answer(client):
    tiny_dark = Image.new("RGB", (40, 40), (10, 10, 10))
    entry = client.post("/v1/predict", files=upload(("dark.png", png_bytes(tiny_dark)))).json()["results"][0]
    assert any("dark" in w for w in entry["warnings"]) and any("small" in w for w in entry["warnings"])


def test_no_readable_file_is_422_with_each_reason(client):
    r = client.post("/v1/predict", files=upload(("a.jpg", b"not an image"), ("b.png", b""), ("c.png", png_bytes(Image.new("RGB", (8, 8))))))
    assert r.status_code == 422
    reasons = [e["error"] for e in r.json()["results"]]
    assert reasons[0].startswith("a.jpg: ") and "empty" in reasons[1] and "under the 32-pixel" in reasons[2]


@pytest.mark.parametrize("request_kwargs, status, words", [
    ({}, 415, "multipart/form-data"),
    ({"data": {"note": "x"}, "files": [("other", ("a.png", b"x"))]}, 422, "no file"),
    ({"content": b"--x\r\nbroken", "headers": {"content-type": "multipart/form-data; boundary=x"}}, 422, "no file"),
    ({"content": b"data", "headers": {"content-type": "multipart/form-data"}}, 400, "could not be read"),
])
def test_requests_without_files(client, request_kwargs, status, words):
    r = client.post("/v1/predict", **request_kwargs)
    assert r.status_code == status and words in r.json()["error"]


def test_limits_too_many_and_too_large(keyed):
    auth = {"Authorization": f"Bearer {KEY}"}
    small = png_bytes(lesion_image((64, 64)))
    too_many = keyed.post("/v1/predict", files=upload(*[(f"{i}.png", small) for i in range(4)]), headers=auth)
    assert too_many.status_code == 413 and "at most 3 files" in too_many.json()["error"]
    assert keyed.post("/v1/predict", files=upload(*[(f"{i}.png", small) for i in range(3)]), headers=auth).status_code == 200
    big = upload(("big.bin", bytes(300_000)))
    declared = keyed.post("/v1/predict", files=big, headers=auth)
    assert declared.status_code == 413 and "over the 195 KB limit" in declared.json()["error"]

    def chunks():  # no Content-Length: the limit counts the bytes as they come
        yield b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n"
        for _ in range(30):
            yield bytes(10_000)
    counted = keyed.post("/v1/predict", content=chunks(), headers={**auth, "content-type": "multipart/form-data; boundary=b"})
    assert counted.status_code == 413 and "error" in counted.json()


def test_a_request_over_the_pixel_budget_is_refused_before_decoding(monkeypatch):
    """Headers are read, nothing is decoded: 16 flat 8000x8000 PNGs (200 KB each on the wire, 3 GB decoded) get 413."""
    from melanoma import api

    app = create_app(limits=Limits(request_pixels=100_000_000))
    monkeypatch.setattr(api, "load_image", lambda *a, **k: pytest.fail("decoded an image of a refused request"))
    flat = png_bytes(Image.new("RGB", (8000, 8000), (200, 150, 120)))
    r = TestClient(app).post("/v1/predict", files=upload(*[(f"{i}.png", flat) for i in range(16)]))
    assert r.status_code == 413 and "1024 megapixels, over the 100 megapixel limit per request" in r.json()["error"]


def test_a_full_queue_answers_503_with_retry_after_while_healthz_answers():
    app = create_app(limits=Limits(queue=2))
    client = TestClient(app)
    service = app.state.service
    service.busy = 2  # two requests in progress
    r = client.post("/v1/predict", files=upload(("a.png", png_bytes(lesion_image((64, 64))))))
    assert r.status_code == 503 and int(r.headers["Retry-After"]) > 0 and "busy" in r.json()["error"]
    assert client.get("/healthz").status_code == 200
    service.busy = 1
    assert client.post("/v1/predict", files=upload(("a.png", png_bytes(lesion_image((64, 64)))))).status_code == 200
    assert (service.busy, service.busy_bytes) == (1, 0)  # counted down again after the answer
    service.busy_bytes = 256 * 2**20  # one request in progress, but bodies up to the byte limit held
    assert client.post("/v1/predict", files=upload(("a.png", png_bytes(lesion_image((64, 64)))))).status_code == 503


def test_overlays_come_back_at_most_1024_pixels_and_full_images_are_not_kept(client):
    from melanoma.preprocess import OVERLAY_SIDE

    big = lesion_image((3000, 2000))
    r = client.post("/v1/predict?cam=true", files=upload(("big.png", png_bytes(big))))
    drawn = Image.open(io.BytesIO(base64.b64decode(r.json()["results"][0]["cam_png"])))
    assert max(drawn.size) == OVERLAY_SIDE and abs(drawn.size[0] / drawn.size[1] - 1.5) < 0.01
    model, info = load()
    from melanoma.predict import predict_views
    from melanoma.preprocess import model_view

    assert abs(predict_views(model, info, model_view(big, info.preprocess)[None])[0].p_malignant
               - r.json()["results"][0]["p_malignant"]) < 1e-6  # the verdict is the full-resolution image's


def test_slow_upload_is_cut_off_with_408():
    """At the ASGI level: a body that stops arriving gets 408 once `read_seconds` have passed."""
    app = create_app(limits=Limits(read_seconds=0.5))
    sent = []
    parts = [{"type": "http.request", "body": b"--b\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\n", "more_body": True}]

    async def receive():
        if parts:
            return parts.pop()
        await asyncio.sleep(3600)  # the client stalls

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/v1/predict", "raw_path": b"/v1/predict", "query_string": b"",
             "headers": [(b"content-type", b"multipart/form-data; boundary=b"), (b"content-length", b"100000")],
             "http_version": "1.1", "scheme": "http", "server": ("127.0.0.1", 8000), "client": ("127.0.0.1", 5000), "root_path": ""}
    t0 = time.monotonic()
    asyncio.run(asyncio.wait_for(app(scope, receive, send), 10))
    assert time.monotonic() - t0 < 5
    assert sent[0]["status"] == 408 and "did not arrive within 0.5 s" in json.loads(sent[1]["body"])["error"]


def test_model_description_is_this_model_with_its_own_figures(client):
    m = client.get("/v1/model").json()
    _, info = load()
    assert m["architecture"] == info.arch and m["input_size"] == info.preprocess.image_size
    assert m["threshold"] == info.threshold and m["temperature"] == info.temperature and m["ood_cutoff"] == info.ood_cutoff
    assert m["file_sha256"] == file_sha256(BUNDLED_MODEL) and len(m["weights_sha256"]) == 64
    measured = json.loads(BUNDLED_MODEL.with_name("metrics.json").read_text())
    assert m["clean_test"] == measured["clean_test"] and m["validation"] == info.validation
    assert m["not_a_diagnosis"].startswith("This is not a diagnosis.")
    assert m["licence"] == info.licence and m["training_sources"] == (info.sources or None)
    assert m["members"] is None  # one network; an ensemble names its members (test_ensemble.py)


def test_another_model_shows_no_figures_measured_on_the_bundled_one(tmp_path, tiny_model_file):
    import shutil

    shutil.copy(tiny_model_file, tmp_path / "model.safetensors")
    shutil.copy(BUNDLED_MODEL.with_name("metrics.json"), tmp_path / "metrics.json")
    m = TestClient(create_app(str(tmp_path / "model.safetensors"))).get("/v1/model").json()
    assert m["clean_test"] is None and m["architecture"] == "seed_cnn"


def test_api_key(keyed):
    assert keyed.get("/healthz").json() == {"status": "ok"}
    for method, path in (("get", "/v1/model"), ("post", "/v1/predict")):
        missing = getattr(keyed, method)(path)
        assert missing.status_code == 401 and "needs an API key" in missing.json()["error"]
        assert missing.headers["www-authenticate"] == "Bearer"
        wrong = getattr(keyed, method)(path, headers={"Authorization": f"Bearer {KEY}x"})
        assert wrong.status_code == 401 and wrong.json() == {"error": "wrong API key"}
        basic = getattr(keyed, method)(path, headers={"Authorization": f"Basic {KEY}"})
        assert basic.status_code == 401
    assert keyed.get("/v1/model", headers={"Authorization": f"Bearer {KEY}"}).status_code == 200


def test_cors_only_for_named_origins(client):
    preflight = {"Origin": "https://clinic.example", "Access-Control-Request-Method": "POST"}
    assert "access-control-allow-origin" not in client.options("/v1/predict", headers=preflight).headers
    named = TestClient(create_app(cors_origins=["https://clinic.example"]))
    assert named.options("/v1/predict", headers=preflight).headers["access-control-allow-origin"] == "https://clinic.example"
    other = named.get("/healthz", headers={"Origin": "https://elsewhere.example"})
    assert "access-control-allow-origin" not in other.headers


def test_errors_are_json_and_a_fault_is_one_log_line(client, caplog, monkeypatch):
    assert client.get("/nowhere").json() == {"error": "Not Found"}
    assert client.put("/healthz").status_code == 405 and "error" in client.put("/healthz").json()
    bad_query = client.post("/v1/predict?cam=perhaps", files=upload(("a.png", b"x")))
    assert bad_query.status_code == 422 and bad_query.json()["error"].startswith("query.cam: ")

    app = create_app()

    def broken(*args):
        raise RuntimeError("simulated fault\nsecond line")
    monkeypatch.setattr(app.state.service, "answer", broken)
    with caplog.at_level(logging.ERROR, logger="melanoma.api"):
        r = TestClient(app, raise_server_exceptions=False).post("/v1/predict", files=upload(("a.png", png_bytes(lesion_image()))))
    assert r.status_code == 500 and r.json() == {"error": "internal error; the server's log has a line about it"}
    assert [rec.getMessage() for rec in caplog.records] == ["POST /v1/predict failed: RuntimeError: simulated fault"]
    assert not any(rec.exc_info for rec in caplog.records)


def test_the_schema_documents_the_upload(client):
    schema = client.get("/openapi.json").json()
    body = schema["paths"]["/v1/predict"]["post"]["requestBody"]["content"]["multipart/form-data"]["schema"]
    assert body["properties"]["file"]["items"]["format"] == "binary"
    assert client.get("/docs").status_code == 200


@pytest.mark.slow
def test_real_server_on_loopback(tmp_path, data_dir):
    """`melanoma api` as a user starts it: answers over a socket, refuses an oversized body before
    reading it, and stops on SIGTERM with nothing left listening."""
    import httpx2

    from melanoma.loadtest import Server

    image = sorted((data_dir / "test" / "Benign").glob("*.jpg"))[0]
    with Server(None, tmp_path / "server.log", extra=["--api-key", KEY]) as server:
        server.wait_ready()
        auth = {"Authorization": f"Bearer {KEY}"}
        r = httpx2.post(server.url + "/v1/predict", files={"file": (image.name, image.read_bytes())}, headers=auth, timeout=60)
        assert r.status_code == 200 and r.json()["results"][0]["label"] in ("Benign", "Malignant")
        assert httpx2.get(server.url + "/v1/model", timeout=10).status_code == 401
        with socket.create_connection(("127.0.0.1", server.port), timeout=10) as s:
            s.sendall(b"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: multipart/form-data; boundary=b\r\n"
                      b"Content-Length: 900000000\r\n\r\n")
            reply = b""
            while chunk := s.recv(4096):  # until the server closes the connection: it does not hold it open
                reply += chunk
            reply = reply.decode()
        assert reply.startswith("HTTP/1.1 413") and "over the 51.0 MB limit" in reply
    assert server.process.returncode in (0, -15)  # uvicorn shuts down, then re-raises the SIGTERM it caught
    with socket.socket() as s:
        assert s.connect_ex(("127.0.0.1", server.port)) != 0  # nothing listening
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and image.name not in log and "Finished server process" in log


@pytest.mark.slow
def test_two_worker_processes_answer_as_predict_does(tmp_path, data_dir):
    """`melanoma api --workers 2`: uvicorn's worker processes each load the model (from the environment
    `_api` sets) and answer as `melanoma predict` does."""
    import httpx2

    from melanoma.loadtest import Server

    from .conftest import melanoma_cli

    images = [sorted((data_dir / "test" / cls).glob("*.jpg"))[0] for cls in ("Benign", "Malignant")]
    melanoma_cli("predict", *images, "--csv", tmp_path / "p.csv")
    expected = {Path(row["path"]).name: row for row in csv.DictReader(open(tmp_path / "p.csv"))}
    with Server(None, tmp_path / "server.log", extra=["--workers", "2"]) as server:
        server.wait_ready(timeout=180)
        for _ in range(4):  # several requests, so that both processes are likely to answer some
            r = httpx2.post(server.url + "/v1/predict", files=[("file", (im.name, im.read_bytes())) for im in images], timeout=120)
            assert r.status_code == 200
            for entry in r.json()["results"]:
                row = expected[entry["file"]]
                assert entry["verdict"] == row["verdict"] and abs(entry["p_malignant"] - float(row["p_malignant"])) < 1e-5
    log = (tmp_path / "server.log").read_text()
    assert "Traceback" not in log and log.count("Started server process") == 2


@pytest.mark.slow
def test_loadtest_small(tmp_path, data_dir):
    from melanoma.loadtest import run

    image = sorted((data_dir / "test" / "Malignant").glob("*.jpg"))[0]
    report = run(tmp_path, image, clients=4, requests=24, time_limit=300)
    assert report["requests_answered"] == 24 and report["errors"] == 0 and report["mismatched_answers"] == 0
    assert report["health_checks"] >= 1 and report["server_peak_memory_mb"] > 0
    assert (tmp_path / "loadtest.md").read_text().count("\n| 24 | 0 | 0 |") == 1


@pytest.mark.slow
def test_loadtest_with_an_abusive_client_answers_every_ordinary_request(tmp_path, data_dir):
    """Issue 21's scenario, small: the abusive client's 16 flat 8000x8000 PNGs are refused by the pixel budget,
    its 100-megapixel requests are served, and every ordinary request is answered as `melanoma predict` answers."""
    from melanoma.loadtest import run

    image = sorted((data_dir / "test" / "Benign").glob("*.jpg"))[0]
    report = run(tmp_path, image, clients=2, requests=8, time_limit=300, abusive=1)
    assert report["requests_answered"] == 8 and report["errors"] == 0 and report["mismatched_answers"] == 0
    assert set(report["abusive_requests"]) <= {"16 images: HTTP 413", "4 images: HTTP 200", "16 images: HTTP 503", "4 images: HTTP 503"}
    assert report["abusive_requests"].get("16 images: HTTP 413", 0) >= 1


def test_api_command_refuses_a_bad_model_or_worker_count_in_one_line(tmp_path):
    from .conftest import melanoma_cli

    bad = tmp_path / "model.safetensors"
    bad.write_bytes(b"not a model")
    for args, words, code in ((["--model", bad], "not a usable melanoma model file", 1), (["--workers", "0"], "0 is not at least 1", 2)):
        r = melanoma_cli("api", "--port", "1", *args)
        assert r.returncode == code and words in r.stderr and "Traceback" not in r.stderr
