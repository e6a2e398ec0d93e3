"""The routes: thin, typed, with their resources (settings, reader, batcher) injected.

Resources live on app.state and reach the routes through Depends, so tests build an app around any
checkpoint and nothing is global. The model path comes only from the server's own configuration,
never from a request.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Request
from fastapi.responses import FileResponse, JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.batcher import MicroBatcher
from service.errors import ClientGone, PayloadTooLarge
from service.schemas import AnswerRequest, AnswerResponse, AnswerSpan, BatchAnswerResponse, ErrorBody, HealthResponse, ModelInfo
from service.settings import ServiceSettings
from squad_qa.inference.items import Answer, Passage, PreparedItems, merge_passages, passage_items
from squad_qa.inference.reader import QAItem, QAReader

STATIC_DIR = Path(__file__).resolve().parent / "static"
# The page loads only its own files; this also documents that nothing comes from a CDN.
PAGE_CSP = "default-src 'self'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:"

router = APIRouter()


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


def _check_sizes(items: Sequence[AnswerRequest], settings: ServiceSettings, batch: bool) -> None:
    if batch and len(items) > settings.max_batch_items:
        raise PayloadTooLarge(f"batch has {len(items)} items; the limit is {settings.max_batch_items}")
    for i, it in enumerate(items):
        where = f"item {i}: " if batch else ""
        if it.contexts is not None and len(it.contexts) > settings.max_batch_items:
            raise PayloadTooLarge(f"{where}contexts has {len(it.contexts)} passages; the limit is "
                                  f"{settings.max_batch_items}")
        for name, text in ([("context", it.context)] if it.contexts is None
                           else [(f"passage {p.id!r}", p.text) for p in it.contexts]):
            if len(text) > settings.max_context_chars:
                raise PayloadTooLarge(f"{where}{name} has {len(text)} characters; the limit is "
                                      f"{settings.max_context_chars}")


async def _prepare(items: list[QAItem], reader: QAReader, settings: ServiceSettings) -> PreparedItems:
    """The request's windows, cut once: they are its price (413 over the limit) and what the batcher
    runs. Tokenising a long context takes milliseconds: then on a thread, so the event loop stays
    free; a short one is cheaper here than a hand-off to a thread."""
    if sum(len(it.context) for it in items) > 20_000:
        job = await asyncio.to_thread(reader.prepare, items)
    else:
        job = reader.prepare(items)
    total = job.windows
    if total > settings.max_request_windows:
        raise PayloadTooLarge(
            f"the request needs {total} windows of {reader.max_seq_length} tokens; the limit is "
            f"{settings.max_request_windows} per request (send shorter contexts, or fewer items per batch)"
        )
    return job


async def _answer(request: Request, batcher: MicroBatcher, job: PreparedItems):
    """batcher.submit, abandoned (and its work dropped from the queue) if the client disconnects."""
    task = asyncio.ensure_future(batcher.submit(job.items, job.windows, job=job))
    while True:
        done, _ = await asyncio.wait({task}, timeout=0.25)
        if done:
            return task.result()
        if await request.is_disconnected():
            task.cancel()  # cancels the batcher's future: the request is skipped when its turn comes
            raise ClientGone


def _to_items(reqs: Sequence[AnswerRequest], n_best_size: int) -> list[QAItem]:
    """The reader's items: one per request, or one per passage of a request with ``contexts`` (each
    with its whole n-best list, for ``_answers`` to rank across the passages)."""
    items = []
    for r in reqs:
        if r.contexts is None:
            items.append(QAItem(r.question, r.context, r.top_k, r.max_answer_length, r.handle_impossible))
        else:
            items += passage_items(r.question, r.contexts, n_best_size, r.max_answer_length)
    return items


def _answers(reqs: Sequence[AnswerRequest], results: list[list[Answer]], calibrator=None) -> list[list[Answer]]:
    """Each request's answers from its items' (``_to_items``): a request over several passages gets
    one ranking across them."""
    out, at = [], 0
    for r in reqs:
        if r.contexts is None:
            out.append(results[at])
            at += 1
        else:
            passages = [Passage(p.id, p.text) for p in r.contexts]
            out.append(merge_passages(results[at:at + len(passages)], passages, r.top_k, calibrator))
            at += len(passages)
    return out


def _response(req: AnswerRequest, answers: list[Answer], settings: ServiceSettings, **common) -> AnswerResponse:
    """The answers that reach the request's min_score (else the server's); none left: an explicit no_answer
    with the best candidate's score."""
    floor = req.min_score if req.min_score is not None else settings.min_score
    kept = [a for a in answers if a.score >= floor]
    spans = [AnswerSpan(text=a.text, score=a.score, start=a.start, end=a.end, passage_id=a.passage) for a in kept]
    if kept or not answers:
        return AnswerResponse(answers=spans, no_answer=not answers, **common)
    return AnswerResponse(answers=[], no_answer=True, best_rejected_score=max(a.score for a in answers), **common)


@router.get("/", include_in_schema=False)
async def index() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html", headers={"Content-Security-Policy": PAGE_CSP})

@router.get("/health", response_model=HealthResponse, tags=["service"])
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

@router.get("/v1/model", response_model=ModelInfo, tags=["model"])
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

@router.post("/v1/answer", response_model=AnswerResponse, responses=error_responses, tags=["answer"])
async def answer(req: AnswerRequest, request: Request, batcher: BatcherDep, settings: SettingsDep,
                 reader: ReaderDep) -> AnswerResponse:
    """Extract the answer to `question` from `context` (character offsets into `context`)."""
    t0 = time.perf_counter()
    _check_sizes([req], settings, batch=False)
    items = _to_items([req], reader.n_best_size)
    (answers,) = _answers([req], await _answer(request, batcher, await _prepare(items, reader, settings)),
                          reader.calibrator)
    return _response(req, answers, settings, model=reader.name, took_ms=round(1000 * (time.perf_counter() - t0), 3))

@router.post("/v1/answer/batch", response_model=BatchAnswerResponse, responses=error_responses, tags=["answer"])
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
    items = _to_items(reqs, reader.n_best_size)
    results = _answers(reqs, await _answer(request, batcher, await _prepare(items, reader, settings)),
                       reader.calibrator)
    took = round(1000 * (time.perf_counter() - t0), 3)
    name = reader.name
    return BatchAnswerResponse(
        results=[_response(r, a, settings, model=name, took_ms=took) for r, a in zip(reqs, results)],
        model=name,
        took_ms=took,
    )
