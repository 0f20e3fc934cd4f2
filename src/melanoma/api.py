"""The HTTP API for programs: `melanoma api` serves it with uvicorn (FastAPI application). About 370
lines: the routes, their limits and the bounded worker pool are one piece that its tests hold together.

- `POST /v1/predict` (multipart, one or more files in the field `file`; `?cam=true` adds the
  Grad-CAM overlay as a base64 PNG): one entry per file, in order, from the same path as `melanoma
  predict` (images.load_image on the uploaded bytes, the model's view, predict.predict_views or
  predict.predict_with_cam), with the photo checks of the page (quality.assess). A file that cannot
  be read gets an entry with `error`; 200 when at least one file was read, 422 when none was.
- `POST /v1/compare` (multipart, one image in each of the fields `before` and `after`): the object
  `melanoma compare --json` prints (compare_report.answer), with `files` naming the uploads; a missing
  or extra image, or one that cannot be read, gets 422 with the field and the reason.
- `GET /v1/model`: what the model is, what it can do (`engine`: torch or onnx; `maps`: whether it gives
  Grad-CAM overlays, without which `?cam=true` answers without them) and its measured figures.
  `GET /healthz`: liveness. The model file is a .safetensors or an .onnx one (loader.load_model).

Limits (`Limits`) hold before any image is decoded: a declared or counted body over the size limit
gets 413 without the rest being read, a body not in after `read_seconds` 408, more files than
allowed 413, images whose headers add up to more than `request_pixels` 413; the loader's own byte and
pixel limits then hold per file. Memory stays bounded: at most `DECODE_AT_ONCE` images are decoded
at a time in the process, and once read an image is kept only as the model's view and, for
`?cam=true`, a copy at most `preprocess.OVERLAY_SIDE` pixels on its longest side (overlays come back
at that size). A request beyond `queue` waiting or running, or whose body would take theirs past
`queue_bytes`, gets 503 with `Retry-After` at once, and `/healthz` keeps answering. Every error is JSON
`{"error": "..."}` with a 4xx status (500, logged in one line, for a fault of ours). Uploads stay in
memory (the multipart parser's spill-to-disk size is raised past the request limit) and are never
logged. With an API key every endpoint but `/healthz` (and the schema pages `/docs`,
`/openapi.json`, which hold no data) needs `Authorization: Bearer KEY`, compared in constant time.

The model is loaded once per process and shared; it runs in a thread pool sized to the cores (one
torch thread each), off the event loop, so `/healthz` answers while predictions run.
"""

from __future__ import annotations

import asyncio
import base64
import hmac
import io
import logging
import os
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.exceptions import RequestValidationError
from fastapi.middleware.cors import CORSMiddleware
from fastapi.responses import JSONResponse
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from PIL import Image
from starlette.datastructures import UploadFile
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.formparsers import MultiPartException, MultiPartParser
from starlette.types import ASGIApp, Receive, Scope, Send

from . import predict
from .explain import overlay
from .images import MAX_FILE_BYTES, MAX_PIXELS, ImageError, load_image, pixel_count
from .kinds import kind_name
from .loader import default_model_path, load_model
from .modelinfo import ModelInfo, file_sha256, measured_figures
from .onnx_model import OnnxModel
from .preprocess import model_view, overlay_copy
from .quality import assess

if TYPE_CHECKING:
    from .model import Classifier

LOG = logging.getLogger(__name__)
DECODE_AT_ONCE = 2  # full-resolution images decoded at once in a process: up to ~0.4 GB each at 64 megapixels
_DECODING = threading.BoundedSemaphore(DECODE_AT_ONCE)
RETRY_AFTER_SECONDS = 2
COMPARE_SIDE = 1024  # POST /v1/compare keeps each photo at most this many pixels on its longest side (compare.WORK_SIDE is less)


@dataclass(frozen=True)
class Limits:
    request_bytes: int = MAX_FILE_BYTES + 2**20  # the whole body: one file at the loader's limit, or several smaller
    files: int = 16  # files per request
    read_seconds: float = 60.0  # the whole body must have arrived by then
    request_pixels: int = 100_000_000  # all images of a request together, from their headers (a phone photo is 12 M)
    queue: int = 32  # requests waiting or running at once
    queue_bytes: int = 256 * 2**20  # their bodies together (a body without Content-Length counts as request_bytes)


def size_text(n: float) -> str:
    return f"{n / 2**20:.1f} MB" if n >= 2**20 else f"{n / 1024:.0f} KB"


def error(status: int, message: str, headers: dict | None = None) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status, headers=headers)


class BodyLimits:
    """ASGI middleware: refuses a body declared over the limit before reading it, stops reading one
    that grows past it (413) or that has not arrived in time (408), and turns any fault of ours into
    a JSON 500 with a one-line log entry instead of a traceback."""

    def __init__(self, app: ASGIApp, limits: Limits):
        self.app, self.limits = app, limits

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        limit = self.limits.request_bytes
        declared = dict(scope["headers"]).get(b"content-length", b"").decode("latin-1")
        if declared.isdigit() and int(declared) > limit:
            return await error(413, f"request body is {size_text(int(declared))}, over the {size_text(limit)} limit")(scope, receive, send)
        loop = asyncio.get_running_loop()
        deadline, received, complete, started = loop.time() + self.limits.read_seconds, 0, False, False

        async def limited_receive():
            nonlocal received, complete
            if complete:  # the body is in: what follows is the wait for a disconnect
                return await receive()
            try:
                message = await asyncio.wait_for(receive(), timeout=max(0.0, deadline - loop.time()))
            except asyncio.TimeoutError:
                raise HTTPException(408, f"the request body did not arrive within {self.limits.read_seconds:g} s") from None
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                complete = not message.get("more_body", False)
                if received > limit:
                    raise HTTPException(413, f"request body is over the {size_text(limit)} limit")
            return message

        async def watched_send(message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, limited_receive, watched_send)
        except Exception as exc:  # noqa: BLE001 - a fault must reach neither the client nor the log as a traceback
            LOG.error("%s %s failed: %s: %s", scope.get("method"), scope.get("path"), type(exc).__name__, str(exc).splitlines()[0] if str(exc) else "")
            if not started:
                await error(500, "internal error; the server's log has a line about it")(scope, receive, send)


class InMemoryParser(MultiPartParser):
    spool_max_size = sys.maxsize  # uploads stay in memory, never spilled to a temporary file (BodyLimits bounds them)


@dataclass
class Service:
    """One model per process, loaded once; the thread pool its work runs in."""

    model: Classifier | OnnxModel  # the torch network, or an .onnx file run by ONNX Runtime (no torch)
    info: ModelInfo
    pool: ThreadPoolExecutor
    about: dict = field(default_factory=dict)  # GET /v1/model
    busy: int = 0  # requests waiting or running (counted on the event loop)
    busy_bytes: int = 0  # their bodies' sizes

    @classmethod
    def start(cls, model_path: str | None, threads: int | None = None) -> "Service":
        model, info = load_model(model_path, threads=1)  # one thread per request, as the pool's torch threads
        threads = threads or os.cpu_count() or 1
        one_thread = (lambda: predict.set_torch_threads(1)) if model.engine == "torch" else None  # ONNX Runtime: set by load_model
        pool = ThreadPoolExecutor(threads, thread_name_prefix="melanoma-model", initializer=one_thread)
        path = Path(model_path) if model_path else default_model_path()
        return cls(model, info, pool, describe(model, info, path))

    def answer(self, uploads: list[tuple[str, bytes]], cam: bool) -> list[dict]:
        """One entry per upload, in order: the prediction (one batch for all readable files) or the
        loader's reason it could not be read."""
        info = self.info
        cam = cam and self.model.maps  # a file without maps answers without overlays (GET /v1/model says so)
        entries: list[dict] = []
        readable = []  # (entry index, view, photo checks, overlay copy and its box)
        for name, data in uploads:
            try:
                with _DECODING:  # the full-resolution image lives only inside this block
                    image = load_image(data, name=name)
                    view = model_view(image, info.preprocess)
                    readable.append((len(entries), view, assess(image, view).warnings, overlay_copy(image, info.preprocess) if cam else None))
                    del image
                entries.append({"file": name})
            except ImageError as exc:
                entries.append({"file": name, "error": str(exc)})
        if not readable:
            return entries
        views = np.stack([view for _, view, _, _ in readable])
        preds, cams = predict.predict_with_cam(self.model, info, views) if cam else (predict.predict_views(self.model, info, views), None)
        for k, ((i, _, warnings, shown), pred) in enumerate(zip(readable, preds)):
            entries[i].update(p_malignant=pred.p_malignant, label=pred.label, threshold=info.threshold,
                              ood=pred.ood, ood_score=pred.ood_score, warnings=warnings, verdict=pred.verdict,
                              p_other_cancer=pred.p_other, other_threshold=info.other_threshold,
                              differential=[{"kind": kind_name(k), "code": k, "p": p} for k, p in pred.differential]
                              if pred.differential else None)
            if cam:
                assert shown is not None and cams is not None  # both made with cam
                png = io.BytesIO()
                Image.fromarray(overlay(np.asarray(shown[0]), cams[k], shown[1])).save(png, format="PNG")
                entries[i]["cam_png"] = base64.b64encode(png.getvalue()).decode("ascii")
        return entries


    def compare(self, files: list[tuple[str, str, bytes]]) -> JSONResponse:
        """POST /v1/compare: one image in each of `before` and `after` (compare_report.answer); each decoded
        in turn and kept only as a copy of at most COMPARE_SIDE pixels on its longest side."""
        from .compare_report import answer

        counts = {f: sum(field == f for field, _, _ in files) for f in ("before", "after")}
        if counts != {"before": 1, "after": 1}:
            return error(422, "send exactly one image in each of the multipart fields 'before' and 'after' "
                              f"(got {counts['before']} and {counts['after']})")
        copies = {}
        for field_name, name, data in files:
            try:
                with _DECODING:
                    image = load_image(data, name=name)
                    image.thumbnail((COMPARE_SIDE, COMPARE_SIDE), Image.Resampling.LANCZOS)
                    copies[field_name] = image
            except ImageError as exc:
                return error(422, f"{field_name}: {exc}")
        body, _ = answer(copies["before"], copies["after"], self.model, self.info)
        return JSONResponse({**body, "files": {f: name for f, name, _ in files}})


def describe(model, info, path: Path) -> dict:
    """What GET /v1/model answers: the model, what it can do, its checksums (the tensors' as a
    .safetensors file records them, and the file's, which metrics files name) and its measured figures."""
    if model.engine == "torch":
        from .model import CHECKSUM_KEY, read_safetensors

        weights_sha256 = read_safetensors(path)[1].get(CHECKSUM_KEY)
    else:
        weights_sha256 = None
    pre = info.preprocess
    return {
        "engine": model.engine, "maps": model.maps,  # without maps, ?cam=true answers without cam_png
        "architecture": info.arch, "input_size": pre.image_size, "framing": pre.framing, "classes": list(info.class_names),
        "threshold": info.threshold, "temperature": info.temperature, "target_sensitivity": info.target_sensitivity,
        "kinds": [{"code": k, "kind": kind_name(k)} for k in info.kinds] or None, "other_threshold": info.other_threshold,
        "kinds_validation": info.kinds_validation or None,  # the kinds head (kinds.py); null without one
        "melanoma_from_kinds": info.melanoma_from_kinds,  # the melanoma estimate read from the kinds head (calibrate --melanoma-from-kinds)
        "ood_cutoff": info.ood_cutoff, "weights_sha256": weights_sha256, "file_sha256": file_sha256(path),
        "validation": info.validation or None,
        "clean_test": (measured_figures(path, getattr(model, "exported_from", None)) or {}).get("clean_test"),  # the metrics.json
        # beside the file that names it (or, for a float ONNX graph, the file it was exported from); else null
        "licence": info.licence,  # the weights' licence, from the training sources the file records
        "training_sources": info.sources or None,
        "members": [{"name": m["name"], "recipe": m["train_config"], "validation": m["validation"], "weights_sha256": m["weights_sha256"]}
                    for m in info.members] or None,  # an ensemble's members (the mean of their logits); null for one network
        "not_a_diagnosis": predict.NOT_A_DIAGNOSIS,
    }


UPLOAD_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["file"],
    "properties": {"file": {"type": "array", "items": {"type": "string", "format": "binary"},
                            "description": "one or more images (JPEG, PNG, WebP, BMP, TIFF, GIF, HEIC)"}}}}}}}
COMPARE_SCHEMA = {"requestBody": {"required": True, "content": {"multipart/form-data": {"schema": {
    "type": "object", "required": ["before", "after"],
    "properties": {"before": {"type": "string", "format": "binary", "description": "the earlier photo of the spot"},
                   "after": {"type": "string", "format": "binary", "description": "the later photo of the same spot"}}}}}}}


def create_app(model_path: str | None = None, api_key: str | None = None, cors_origins: list[str] | None = None,
               limits: Limits = Limits(), threads: int | None = None) -> FastAPI:
    """The application, with its model loaded (a bad model file raises modelinfo.ModelFileError here)."""
    service = Service.start(model_path, threads)
    app = FastAPI(title="Melanoma classifier API", version="1",
                  description="Estimates of melanoma for skin-spot images, with Grad-CAM maps. " + predict.NOT_A_DIAGNOSIS)
    app.state.service = service
    bearer = HTTPBearer(auto_error=False, description="the server's API key, when it was started with one")

    def authorised(credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
        if api_key is None:
            return
        if credentials is None:
            raise HTTPException(401, "this server needs an API key: send the header 'Authorization: Bearer KEY'", {"WWW-Authenticate": "Bearer"})
        if not hmac.compare_digest(credentials.credentials.encode(), api_key.encode()):
            raise HTTPException(401, "wrong API key", {"WWW-Authenticate": "Bearer"})

    @app.exception_handler(StarletteHTTPException)  # FastAPI's own and the router's (404, 405)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error(exc.status_code, str(exc.detail), getattr(exc, "headers", None))

    @app.exception_handler(RequestValidationError)
    async def validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(part) for part in first.get("loc", ()))
        return error(422, f"{where}: {first.get('msg', 'invalid request')}")

    @app.get("/healthz", summary="Liveness: answers while predictions run")
    async def healthz() -> dict:
        return {"status": "ok"}

    @app.get("/v1/model", summary="What the model is: network, threshold, checksums, measured figures", dependencies=[Depends(authorised)])
    async def model_description() -> dict:
        return service.about

    async def admitted(request: Request, fields: tuple[str, ...], work) -> JSONResponse:
        """The queue's limits, the upload (files of `fields`) and its pixel limit, then `work(files)` in the pool."""
        declared = request.headers.get("content-length", "")
        size = min(int(declared), limits.request_bytes) if declared.isdigit() else limits.request_bytes
        if service.busy >= limits.queue or service.busy_bytes + size > limits.queue_bytes:
            return error(503, f"the server is busy ({service.busy} requests in progress); try again in {RETRY_AFTER_SECONDS} s",
                         {"Retry-After": str(RETRY_AFTER_SECONDS)})
        service.busy, service.busy_bytes = service.busy + 1, service.busy_bytes + size
        try:
            files = await read_uploads(request, limits, fields)
            pixels = sum(pixel_count(data) or 0 for _, _, data in files)
            if pixels > limits.request_pixels:
                return error(413, f"the images total {pixels / 1e6:.0f} megapixels, over the {limits.request_pixels / 1e6:.0f} megapixel "
                                  "limit per request; send fewer or smaller images at once")
            return await asyncio.get_running_loop().run_in_executor(service.pool, work, files)
        finally:
            service.busy, service.busy_bytes = service.busy - 1, service.busy_bytes - size

    @app.post("/v1/predict", summary="Estimate melanoma for each uploaded image", openapi_extra=UPLOAD_SCHEMA,
              dependencies=[Depends(authorised)],
              responses={413: {"description": "too large or too many files, or too many pixels"}, 408: {"description": "upload too slow"},
                         422: {"description": "no file could be read"}, 503: {"description": "busy: retry after the Retry-After header's seconds"}})
    async def predict_files(request: Request, cam: bool = Query(False, description="add the Grad-CAM overlay as a base64 PNG")) -> JSONResponse:
        def work(files) -> JSONResponse:
            entries = service.answer([(name, data) for _, name, data in files], cam)
            status = 200 if any("error" not in e for e in entries) else 422
            return JSONResponse({"results": entries, "not_a_diagnosis": predict.NOT_A_DIAGNOSIS}, status_code=status)

        return await admitted(request, ("file",), work)

    @app.post("/v1/compare", summary="Two photos of one spot, months apart: what changed (as `melanoma compare --json`)",
              openapi_extra=COMPARE_SCHEMA, dependencies=[Depends(authorised)],
              responses={413: {"description": "too large, or too many pixels"}, 408: {"description": "upload too slow"},
                         422: {"description": "not one image in each of 'before' and 'after', or one could not be read"},
                         503: {"description": "busy: retry after the Retry-After header's seconds"}})
    async def compare_files(request: Request) -> JSONResponse:
        return await admitted(request, ("before", "after"), service.compare)

    if cors_origins:
        app.add_middleware(CORSMiddleware, allow_origins=list(cors_origins), allow_methods=["GET", "POST"],
                           allow_headers=["Authorization", "Content-Type"])
    app.add_middleware(BodyLimits, limits=limits)
    return app


async def read_uploads(request: Request, limits: Limits, fields: tuple[str, ...] = ("file",)) -> list[tuple[str, str, bytes]]:
    """The files of the multipart fields `fields`, as (field, name, bytes), field by field in the order sent."""
    named = " and ".join(f"'{f}'" for f in fields)
    if not request.headers.get("content-type", "").lower().startswith("multipart/form-data"):
        raise HTTPException(415, f"send the images as multipart/form-data, in the field{'s' if len(fields) > 1 else ''} {named}")
    try:
        form = await InMemoryParser(request.headers, request.stream(), max_files=limits.files, max_fields=limits.files).parse()
    except MultiPartException as exc:
        too_many = exc.message.startswith(("Too many files", "Too many fields"))
        raise HTTPException(413 if too_many else 400, f"at most {limits.files} files per request" if too_many
                            else f"the multipart body could not be read ({exc.message})") from None
    try:
        files = [(name, f) for name in fields for f in form.getlist(name) if isinstance(f, UploadFile)]  # the files, not text fields
        if not files:
            raise HTTPException(422, "no file: send one or more images in the multipart field 'file'" if fields == ("file",)
                                else f"no file: send one image in each of the multipart fields {named}")
        return [(name, f.filename or f"upload {i + 1}", await f.read()) for i, (name, f) in enumerate(files)]
    finally:
        await form.close()


def limits_text(limits: Limits = Limits()) -> str:
    return (f"request body up to {size_text(limits.request_bytes)}, arriving within {limits.read_seconds:g} s; up to {limits.files} files "
            f"and {limits.request_pixels // 10**6} megapixels in all; each file up to {MAX_FILE_BYTES // 2**20} MB and {MAX_PIXELS // 10**6} megapixels")


def app_from_environment() -> FastAPI:
    """The application as `melanoma api --workers N` starts it in each worker process (uvicorn's
    factory): the settings come through MELANOMA_MODEL, MELANOMA_API_KEY, MELANOMA_CORS_ORIGINS
    (comma-separated) and MELANOMA_API_THREADS."""
    env = os.environ
    return create_app(env.get("MELANOMA_MODEL") or None, env.get("MELANOMA_API_KEY") or None,
                      [o for o in env.get("MELANOMA_CORS_ORIGINS", "").split(",") if o],
                      threads=int(env.get("MELANOMA_API_THREADS", "0")) or None)

