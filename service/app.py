"""The HTTP service: the FastAPI app factory.

    create_app(model_dir=..., ...)   the app; the model loads in the lifespan, never per request
    app                              module-level app for `uvicorn service.app:app` ($SQUAD_QA_MODEL)

Beside it: settings.py (the settings, and the flags made from them), routes.py, errors.py,
middleware.py, batcher.py (the window-fair micro-batcher), schemas.py, cli.py (`squad-qa serve`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles
from fastapi_offline import FastAPIOffline

from service.batcher import MicroBatcher
from service.errors import install_error_handlers
from service.middleware import BodyLimitMiddleware, RequestIdMiddleware
from service.routes import STATIC_DIR, router
from service.settings import ServiceSettings, serving_choice
from squad_qa.inference.reader import QAReader
from squad_qa.model.cpu import model_threads
from squad_qa.model.model_dir import CheckpointError, ModelFolder, resolve_model_dir

logger = logging.getLogger(__name__)


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
            path = resolve_model_dir(model_dir)  # a ModelFolder comes back as it is, checked already
            try:
                # Loading takes seconds; off the event loop like every other model call.
                choice, threads = serving_choice(cfg), model_threads(cfg.threads)
                loaded = await asyncio.to_thread(
                    QAReader.from_pretrained, path, device=cfg.device, max_batch_size=cfg.model_batch_size,
                    backend=choice.backend, quantize=choice.quantize, dtype=choice.dtype, compile=cfg.compile,
                    packed=None if cfg.packing else False, threads=threads,
                )
                logger.info("backend %s, quantize %s, dtype %s, %d threads (%s)", choice.backend, choice.quantize,
                            str(loaded.dtype).removeprefix("torch."), threads, choice.why)
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
    install_error_handlers(app)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app


def _version() -> str:
    from squad_qa import __version__

    return __version__


# `uvicorn service.app:app`: the model folder is resolved at startup, so $SQUAD_QA_MODEL works and
# importing this module never touches the disk.
app = create_app()
