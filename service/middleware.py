"""Plain ASGI middleware (no BaseHTTPMiddleware: that one wraps every request in a task group and
memory streams, a measurable cost per request): request ids, and the body-size limit."""

from __future__ import annotations

import uuid

from fastapi import Request
from starlette.exceptions import HTTPException as StarletteHTTPException

from service.errors import error_response


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
                response = error_response(Request(scope), 413, "payload_too_large",
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
