"""The HTTP service: FastAPI app factory, routes, error bodies and `squad-qa serve`.

    create_app(model_dir=..., ...)   the app; the model loads in the lifespan, never per request
    app                              module-level app for `uvicorn service.app:app` ($SQUAD_QA_MODEL)
    serve_main(argv)                 `squad-qa serve --model DIR --host 127.0.0.1 --port 8000`

Resources (reader, micro-batcher, limits) live on app.state and reach the routes through Depends,
so tests build an app around any checkpoint and nothing is global. The model path comes only from
the server's own configuration, never from a request.

Every error is a JSON ErrorBody {error, message, request_id[, detail]}; the request id is also the
X-Request-ID response header and appears in the server log next to any stack trace (which never
goes to the client).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Iterator, Sequence
from contextlib import asynccontextmanager, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Body, Depends, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.batcher import DeadlineExceeded, MicroBatcher, QueueFull, ServiceStopping
from service.schemas import (
    AnswerRequest,
    AnswerResponse,
    AnswerSpan,
    BatchAnswerResponse,
    ErrorBody,
    HealthResponse,
    ModelInfo,
)
from squad_qa.inference import QAItem, QAReader
from squad_qa.model_dir import CheckpointError, ModelFolder, check_qa_checkpoint, resolve_model_dir
from squad_qa.speed import DTYPE_CHOICES, QUANTIZE_CHOICES

logger = logging.getLogger(__name__)

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page loads only its own files; this also documents that nothing comes from a CDN.
PAGE_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:"


@dataclass(frozen=True)
class ServiceSettings:
    model_dir: str | None = None  # None: $SQUAD_QA_MODEL, else models/squad-minilm-l6/
    device: str | None = None
    quantize: str | None = None  # "int8": dynamic int8 Linear layers (CPU)
    # "auto": bfloat16 autocast where the hardware has it (CPUs with AVX512-BF16/AMX, recent GPUs),
    # else float32; "float32" for answers identical to predict.py's default
    dtype: str = "auto"
    compile: bool = False  # torch.compile: ~30 s more at start, 5-25% faster on CPU
    # Windows of a batch packed back to back without padding (squad_qa/packing.py) where the reader
    # supports it (CPU, BERT); False: padded batches everywhere.
    packing: bool = True
    max_batch_size: int = 32  # requests' items gathered into one model call
    max_wait_ms: float = 10.0  # the longest a batch waits for company it expects (see service/batcher.py)
    model_batch_size: int = 64  # windows per forward pass inside a model call
    max_context_chars: int = 100_000  # longer contexts: 413
    max_batch_items: int = 64  # longer /v1/answer/batch lists: 413
    # Larger bodies are refused by Content-Length before the JSON is read (413). None: the largest
    # body the other limits allow (max_batch_items contexts of max_context_chars 4-byte characters).
    max_body_bytes: int | None = None
    # Work per request, in windows (max_seq_length tokens each; ~30-40 windows/s on 2 CPU cores in
    # bf16): more in one request gets 413, whatever its characters (100,000 characters: ~370).
    max_request_windows: int = 512
    # Windows per model call, shared among the requests in progress: about what a small request
    # waits behind when a long one is running (16 full windows: ~0.8 s on 2 CPU cores in bf16).
    max_batch_windows: int = 16
    max_queued_windows: int = 2048  # queue budget: a request that does not fit gets 429 + Retry-After
    request_timeout_s: float = 60.0  # still queued after this: dropped, 504
    shutdown_grace_s: float = 10.0  # on SIGTERM: open connections get this long, then they are closed


class PayloadTooLarge(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


# ------------------------------------------------------------------------------ dependencies


# Dependencies are `async def` although they do no I/O: FastAPI runs a plain `def` dependency on
# its thread pool, a thread hop per dependency per request (measured: most of the service's
# ~0.6 ms of CPU per request with a no-op model went to those hops and BaseHTTPMiddleware).


async def get_settings(request: Request) -> ServiceSettings:
    return request.app.state.settings


async def get_reader(request: Request) -> QAReader:
    reader = getattr(request.app.state, "reader", None)
    if reader is None:  # only reachable if someone bypasses the lifespan
        raise StarletteHTTPException(503, "model is not loaded")
    return reader


async def get_batcher(request: Request) -> MicroBatcher:
    batcher = getattr(request.app.state, "batcher", None)
    if batcher is None or not batcher.running:
        raise StarletteHTTPException(503, "model is not loaded")
    return batcher


SettingsDep = Annotated[ServiceSettings, Depends(get_settings)]
ReaderDep = Annotated[QAReader, Depends(get_reader)]
BatcherDep = Annotated[MicroBatcher, Depends(get_batcher)]


# ------------------------------------------------------------------------------- middleware


class RequestIdMiddleware:
    """Give every request an id (scope state + X-Request-ID header) for error bodies and logs."""

    def __init__(self, app) -> None:
        self.app = app

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        request_id = uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id

        async def send_with_id(message) -> None:
            if message["type"] == "http.response.start":
                headers = list(message.get("headers", []))
                if not any(k.lower() == b"x-request-id" for k, _ in headers):  # error bodies set it
                    headers.append((b"x-request-id", request_id.encode()))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_with_id)


class BodyLimitMiddleware:
    """413 for a request body over `max_body` bytes. A Content-Length over the limit is refused before
    anything reads the body, so it costs no parsing; a body without one (Transfer-Encoding: chunked)
    is counted as it arrives and refused at the first chunk past the limit, so it is never held in
    memory whole. Plain ASGI (no BaseHTTPMiddleware: that one wraps every request in a task group
    and memory streams, a measurable cost per request)."""

    def __init__(self, app, max_body: int) -> None:
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        length = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if length is not None:  # the server enforces Content-Length itself: no need to count
            if length.isdigit() and int(length) > self.max_body:
                response = _error(Request(scope), 413, "payload_too_large",
                                  f"request body has {int(length)} bytes; the limit is {self.max_body}")
                return await response(scope, receive, send)
            return await self.app(scope, receive, send)
        received = 0

        async def counted_receive():
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body:  # an HTTPException: FastAPI re-raises it as it is (not a 400)
                    raise StarletteHTTPException(413, f"request body passed the limit of {self.max_body} "
                                                      f"bytes (chunked, no Content-Length)")
            return message

        await self.app(scope, counted_receive, send)


def _request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex


def _error(request: Request, status: int, error: str, message: str, detail: list | None = None) -> JSONResponse:
    rid = _request_id(request)
    body = ErrorBody(error=error, message=message, request_id=rid, detail=detail)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers={"X-Request-ID": rid})


_STATUS_NAMES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 503: "unavailable",
                 504: "timeout"}


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # pydantic's error list, minus the offending input (it may be a 100k-character context).
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        parts = [f"{'.'.join(str(x) for x in d['loc'])}: {d['msg']}" for d in detail[:5]]
        more = f" (+{len(detail) - 5} more)" if len(detail) > 5 else ""
        return _error(request, 422, "invalid_request", "; ".join(parts) + more, detail)

    @app.exception_handler(PayloadTooLarge)
    async def _too_large(request: Request, exc: PayloadTooLarge) -> JSONResponse:
        return _error(request, 413, "payload_too_large", exc.message)

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        response = _error(request, 429, "queue_full", str(exc))
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(DeadlineExceeded)
    async def _deadline(request: Request, exc: DeadlineExceeded) -> JSONResponse:
        return _error(request, 504, "timeout", str(exc))

    @app.exception_handler(ServiceStopping)
    async def _stopping(request: Request, exc: ServiceStopping) -> JSONResponse:
        response = _error(request, 503, "unavailable", str(exc))
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return _error(request, exc.status_code, _STATUS_NAMES.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> JSONResponse:
        return _error(request, 499, "client_closed_request", "the client disconnected before the answer")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        rid = _request_id(request)
        logger.error("request %s failed", rid, exc_info=exc)
        return _error(request, 500, "internal_error",
                      f"internal error while answering; the server log has the details under request id {rid}")


# ------------------------------------------------------------------------------------ routes


def _check_sizes(items: Sequence[AnswerRequest], settings: ServiceSettings, batch: bool) -> None:
    if batch and len(items) > settings.max_batch_items:
        raise PayloadTooLarge(f"batch has {len(items)} items; the limit is {settings.max_batch_items}")
    for i, it in enumerate(items):
        if len(it.context) > settings.max_context_chars:
            where = f"item {i}: " if batch else ""
            raise PayloadTooLarge(
                f"{where}context has {len(it.context)} characters; the limit is {settings.max_context_chars}"
            )


async def _price(items: list[QAItem], reader: QAReader, settings: ServiceSettings) -> int:
    """The request's windows (413 over the limit). Tokenising a long context takes milliseconds:
    then on a thread, so the event loop stays free."""
    if sum(len(it.context) for it in items) > 20_000:
        counts = await asyncio.to_thread(reader.count_windows, items)
    else:
        counts = reader.count_windows(items)
    total = sum(counts)
    if total > settings.max_request_windows:
        raise PayloadTooLarge(
            f"the request needs {total} windows of {reader.max_seq_length} tokens; the limit is "
            f"{settings.max_request_windows} per request (send shorter contexts, or fewer items per batch)"
        )
    return total


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


async def _answer(request: Request, batcher: MicroBatcher, items: list[QAItem], windows: int):
    """batcher.submit, abandoned (and its work dropped from the queue) if the client disconnects."""
    task = asyncio.ensure_future(batcher.submit(items, windows))
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()  # cancels the batcher's future: the request is skipped when its turn comes
            raise ClientGone


def _to_item(r: AnswerRequest) -> QAItem:
    return QAItem(r.question, r.context, r.top_k, r.max_answer_length, r.handle_impossible)


def _spans(answers) -> list[AnswerSpan]:
    return [AnswerSpan(text=a.text, score=a.score, start=a.start, end=a.end) for a in answers]


def _install_routes(app: FastAPI) -> None:
    @app.get("/", include_in_schema=False)
    async def index() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

    @app.get("/health", response_model=HealthResponse, tags=["service"])
    async def health(request: Request) -> HealthResponse:
        """Is the model loaded and the batcher running?"""
        batcher = getattr(request.app.state, "batcher", None)
        reader = getattr(request.app.state, "reader", None)
        loaded = reader is not None and batcher is not None and batcher.running
        name = reader.name if reader is not None else None
        body = HealthResponse(status="ok" if loaded else "loading", model_loaded=loaded, model=name,
                              queued_requests=batcher.queued_requests if batcher else 0,
                              queued_windows=batcher.queued_windows if batcher else 0)
        if not loaded:
            return JSONResponse(body.model_dump(), status_code=503)
        return body

    @app.get("/v1/model", response_model=ModelInfo, tags=["model"])
    async def model_info(reader: ReaderDep, settings: SettingsDep, batcher: BatcherDep) -> ModelInfo:
        """The loaded checkpoint (name, base encoder, window geometry, recorded metrics), the
        server's limits and its queue right now."""
        return ModelInfo(
            **reader.describe(),
            max_batch_size=settings.max_batch_size,
            max_wait_ms=settings.max_wait_ms,
            max_context_chars=settings.max_context_chars,
            max_batch_items=settings.max_batch_items,
            max_request_windows=settings.max_request_windows,
            max_batch_windows=settings.max_batch_windows,
            max_queued_windows=settings.max_queued_windows,
            request_timeout_s=settings.request_timeout_s,
            queued_requests=batcher.queued_requests,
            queued_windows=batcher.queued_windows,
        )

    retry_after = {"Retry-After": {"description": "Seconds to wait before trying again", "schema": {"type": "integer"}}}
    error_responses: dict[int | str, dict[str, Any]] = {
        413: {"model": ErrorBody, "description": "Body, context, batch or work (windows) over the server's limit"},
        422: {"model": ErrorBody, "description": "Malformed JSON, empty question/context, bad option"},
        429: {"model": ErrorBody, "headers": retry_after,
              "description": "The queue is full (its budget of windows): try again after Retry-After seconds"},
        500: {"model": ErrorBody, "description": "Internal error (details in the server log under request_id)"},
        503: {"model": ErrorBody, "headers": retry_after, "description": "The service is starting or stopping"},
        504: {"model": ErrorBody, "description": "The request waited longer than the server's request timeout"},
    }

    @app.post("/v1/answer", response_model=AnswerResponse, responses=error_responses, tags=["answer"])
    async def answer(req: AnswerRequest, request: Request, batcher: BatcherDep, settings: SettingsDep,
                     reader: ReaderDep) -> AnswerResponse:
        """Extract the answer to `question` from `context` (character offsets into `context`)."""
        t0 = time.perf_counter()
        _check_sizes([req], settings, batch=False)
        items = [_to_item(req)]
        (answers,) = await _answer(request, batcher, items, await _price(items, reader, settings))
        return AnswerResponse(answers=_spans(answers), model=reader.name,
                              took_ms=round(1000 * (time.perf_counter() - t0), 3))

    @app.post("/v1/answer/batch", response_model=BatchAnswerResponse, responses=error_responses, tags=["answer"])
    async def answer_batch(
        reqs: Annotated[list[AnswerRequest], Body(min_length=1, description="Questions, answered in order")],
        request: Request,
        batcher: BatcherDep,
        settings: SettingsDep,
        reader: ReaderDep,
    ) -> BatchAnswerResponse:
        """Answer a list of (question, context) items in one go; results come back in order."""
        t0 = time.perf_counter()
        _check_sizes(reqs, settings, batch=True)
        items = [_to_item(r) for r in reqs]
        results = await _answer(request, batcher, items, await _price(items, reader, settings))
        took = round(1000 * (time.perf_counter() - t0), 3)
        name = reader.name
        return BatchAnswerResponse(
            results=[AnswerResponse(answers=_spans(a), model=name, took_ms=took) for a in results],
            model=name,
            took_ms=took,
        )


# ------------------------------------------------------------------------------- the factory


def create_app(model_dir: str | Path | ModelFolder | None = None, *, reader: QAReader | None = None,
               **settings: Any) -> FastAPI:
    """Build the service. The model loads when the app starts (lifespan), from `model_dir` (a
    ModelFolder that serve_main checked is loaded without checking or hashing it again)
    (default: $SQUAD_QA_MODEL, else models/squad-minilm-l6/); tests may hand in a loaded `reader`.
    Other keyword arguments are ServiceSettings fields (batching knobs and limits)."""
    cfg = ServiceSettings(model_dir=str(model_dir) if model_dir else None, **settings)

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        loaded = reader
        if loaded is None:
            path = model_dir if isinstance(model_dir, ModelFolder) else resolve_model_dir(cfg.model_dir)
            try:
                # Loading takes seconds; off the event loop like every other model call.
                loaded = await asyncio.to_thread(
                    QAReader.from_pretrained, path, device=cfg.device, max_batch_size=cfg.model_batch_size,
                    quantize=cfg.quantize, dtype=cfg.dtype, compile=cfg.compile,
                    packed=None if cfg.packing else False,
                )
            except CheckpointError as e:
                logger.error("cannot serve %s: %s", path, e.with_hint())
                raise
        batcher = MicroBatcher(loaded, max_batch_size=cfg.max_batch_size, max_wait_ms=cfg.max_wait_ms,
                               max_batch_windows=cfg.max_batch_windows, max_queued_windows=cfg.max_queued_windows,
                               request_timeout_s=cfg.request_timeout_s)
        await batcher.start()
        app.state.reader, app.state.batcher = loaded, batcher
        logger.info("serving %s (%s)", loaded.describe()["name"], loaded.model_dir)
        try:
            yield
        finally:
            await batcher.stop()
            app.state.batcher = None

    # FastAPIOffline: FastAPI with /docs and /redoc served from local copies of their scripts
    # (default FastAPI loads them from a CDN: blank pages offline, and calls to outside hosts).
    app = FastAPIOffline(
        title="squad-qa",
        summary="Extractive question answering (SQuAD-style) with micro-batched inference.",
        version=_version(),
        lifespan=lifespan,
    )
    app.state.settings = cfg
    app.state.reader = None
    app.state.batcher = None
    max_body = cfg.max_body_bytes or cfg.max_batch_items * (4 * cfg.max_context_chars + 8192) + 4096

    app.add_middleware(BodyLimitMiddleware, max_body=max_body)
    app.add_middleware(RequestIdMiddleware)
    _install_error_handlers(app)
    _install_routes(app)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _version() -> str:
    from squad_qa import __version__

    return __version__


# `uvicorn service.app:app`: the model folder is resolved at startup, so $SQUAD_QA_MODEL works and
# importing this module never touches the disk.
app = create_app()


@contextmanager
def running_server(application: FastAPI, log_level: str = "warning") -> Iterator[str]:
    """``application`` served by uvicorn on a free 127.0.0.1 port in a background thread (lifespan
    included: the model is loaded when this yields); yields the base URL, stops the server after."""
    import uvicorn

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # the kernel picks a free port; uvicorn serves this very socket
    server = uvicorn.Server(uvicorn.Config(application, log_level=log_level, lifespan="on"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + 120
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start (see the log above)")
            time.sleep(0.02)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(timeout=30)
        sock.close()


# ------------------------------------------------------------------------------ squad-qa serve


def build_arg_parser() -> argparse.ArgumentParser:
    d = ServiceSettings()
    p = argparse.ArgumentParser(prog="squad-qa serve", description="Serve a fine-tuned QA checkpoint over HTTP.")
    p.add_argument("--model", default=None,
                   help="fine-tuned checkpoint folder (default: $SQUAD_QA_MODEL, else models/squad-minilm-l6/)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default loopback only)")
    p.add_argument("--port", type=int, default=8000)
    p.add_argument("--device", default=None, help="cpu / cuda (default: cuda when available)")
    p.add_argument("--quantize", choices=QUANTIZE_CHOICES, default=None,
                   help="CPU only: dynamic int8 Linear layers, ~4x faster per window, slightly different answers")
    p.add_argument("--dtype", choices=DTYPE_CHOICES, default=d.dtype,
                   help="compute dtype: auto (default) = bfloat16 where the hardware has it, else float32; "
                        "float32 gives exactly predict.py's answers")
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the model: ~30 s more at start, 5-25%% faster on CPU "
                        "(needs a C++ compiler)")
    p.add_argument("--no_packing", "--no-packing", dest="packing", action="store_false",
                   help="padded batches also on CPU (default there: windows packed without padding, "
                        "1.27x faster on mixed-length batches)")
    p.add_argument("--max_batch_size", "--max-batch-size", type=int, default=d.max_batch_size,
                   help="most request items gathered into one model call")
    p.add_argument("--max_wait_ms", "--max-wait-ms", type=float, default=d.max_wait_ms,
                   help="how long a batch waits for more requests (skipped for a lone client)")
    p.add_argument("--model_batch_size", "--model-batch-size", type=int, default=d.model_batch_size,
                   help="windows per forward pass")
    p.add_argument("--max_context_chars", "--max-context-chars", type=int, default=d.max_context_chars)
    p.add_argument("--max_batch_items", "--max-batch-items", type=int, default=d.max_batch_items)
    p.add_argument("--max_request_windows", "--max-request-windows", type=int, default=d.max_request_windows,
                   help="most windows (max_seq_length tokens each) one request may need (413 above)")
    p.add_argument("--max_batch_windows", "--max-batch-windows", type=int, default=d.max_batch_windows,
                   help="most windows per model call")
    p.add_argument("--max_queued_windows", "--max-queued-windows", type=int, default=d.max_queued_windows,
                   help="queue budget in windows (429 with Retry-After above)")
    p.add_argument("--request_timeout_s", "--request-timeout-s", type=float, default=d.request_timeout_s,
                   help="a request still queued after this many seconds gets 504")
    p.add_argument("--shutdown_grace_s", "--shutdown-grace-s", type=float, default=d.shutdown_grace_s,
                   help="on SIGTERM, how long open connections may take before they are closed")
    p.add_argument("--log_level", "--log-level", default="info")
    return p


def serve_main(argv: Sequence[str] | None = None) -> int:
    import uvicorn

    args = build_arg_parser().parse_args(argv)
    try:  # fail before binding a port, with the how-to-train message; the app loads this folder as checked
        model_dir = check_qa_checkpoint(resolve_model_dir(args.model))
    except CheckpointError as e:
        print(f"squad-qa serve: {e.with_hint()}", file=sys.stderr)
        return 2
    logging.basicConfig(level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    application = create_app(
        model_dir,
        device=args.device,
        quantize=args.quantize,
        dtype=args.dtype,
        compile=args.compile,
        packing=args.packing,
        max_batch_size=args.max_batch_size,
        max_wait_ms=args.max_wait_ms,
        model_batch_size=args.model_batch_size,
        max_context_chars=args.max_context_chars,
        max_batch_items=args.max_batch_items,
        max_request_windows=args.max_request_windows,
        max_batch_windows=args.max_batch_windows,
        max_queued_windows=args.max_queued_windows,
        request_timeout_s=args.request_timeout_s,
    )
    # timeout_graceful_shutdown: on SIGTERM uvicorn stops accepting and waits for open connections;
    # a client holding a half-sent body would hold the exit for as long as it likes without it.
    uvicorn.run(application, host=args.host, port=args.port, log_level=args.log_level,
                timeout_graceful_shutdown=args.shutdown_grace_s)
    return 0

