"""Error bodies: every error is a JSON ErrorBody {error, message, request_id[, detail]}.

The request id is also the X-Request-ID response header and appears in the server log next to any
stack trace, which never goes to the client.
"""

from __future__ import annotations

import logging
import uuid

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.batcher import DeadlineExceeded, QueueFull, ServiceStopping
from service.schemas import ErrorBody

logger = logging.getLogger(__name__)


class PayloadTooLarge(Exception):
    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ClientGone(Exception):
    """The client disconnected before its answer was ready."""


def request_id(request: Request) -> str:
    return getattr(request.state, "request_id", None) or uuid.uuid4().hex


def error_response(request: Request, status: int, error: str, message: str, detail: list | None = None) -> JSONResponse:
    rid = request_id(request)
    body = ErrorBody(error=error, message=message, request_id=rid, detail=detail)
    return JSONResponse(body.model_dump(exclude_none=True), status_code=status, headers={"X-Request-ID": rid})


_STATUS_NAMES = {404: "not_found", 405: "method_not_allowed", 413: "payload_too_large", 503: "unavailable",
                 504: "timeout"}


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        # pydantic's error list, minus the offending input (it may be a 100k-character context).
        detail = [
            {"loc": list(e.get("loc", ())), "msg": e.get("msg", ""), "type": e.get("type", "")}
            for e in exc.errors()
        ]
        parts = [f"{'.'.join(str(x) for x in d['loc'])}: {d['msg']}" for d in detail[:5]]
        more = f" (+{len(detail) - 5} more)" if len(detail) > 5 else ""
        return error_response(request, 422, "invalid_request", "; ".join(parts) + more, detail)

    @app.exception_handler(PayloadTooLarge)
    async def _too_large(request: Request, exc: PayloadTooLarge) -> JSONResponse:
        return error_response(request, 413, "payload_too_large", exc.message)

    @app.exception_handler(QueueFull)
    async def _queue_full(request: Request, exc: QueueFull) -> JSONResponse:
        response = error_response(request, 429, "queue_full", str(exc))
        response.headers["Retry-After"] = str(exc.retry_after_s)
        return response

    @app.exception_handler(DeadlineExceeded)
    async def _deadline(request: Request, exc: DeadlineExceeded) -> JSONResponse:
        return error_response(request, 504, "timeout", str(exc))

    @app.exception_handler(ServiceStopping)
    async def _stopping(request: Request, exc: ServiceStopping) -> JSONResponse:
        response = error_response(request, 503, "unavailable", str(exc))
        response.headers["Retry-After"] = "5"
        return response

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        return error_response(request, exc.status_code, _STATUS_NAMES.get(exc.status_code, "http_error"), str(exc.detail))

    @app.exception_handler(ClientGone)
    async def _gone(request: Request, exc: ClientGone) -> JSONResponse:
        return error_response(request, 499, "client_closed_request", "the client disconnected before the answer")

    @app.exception_handler(Exception)
    async def _internal(request: Request, exc: Exception) -> JSONResponse:
        rid = request_id(request)
        logger.error("request %s failed", rid, exc_info=exc)
        return error_response(request, 500, "internal_error",
                      f"internal error while answering; the server log has the details under request id {rid}")
