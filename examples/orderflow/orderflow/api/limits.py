"""Request body size limit: a body over ``ORDERFLOW_MAX_BODY_BYTES`` gets 413 before it is parsed.

A declared ``Content-Length`` over the limit is refused without reading a byte. Otherwise the body
is read here, counting while it arrives (chunked bodies have no length to trust), and refused as
soon as the count passes the limit; a body within it is handed to the app as one message. Bodies
this small (64 KiB by default) are cheaper to buffer than to stream, and the app never sees a
partial body it would have to fail on.

Why our own: neither Starlette nor uvicorn limits the size of a request body (uvicorn's
``--limit-max-requests`` counts requests per worker), and a reverse proxy is not always in front.
"""

from __future__ import annotations

import json
from typing import Any

from orderflow.api.middleware import ASGIApp, Message, Scope

_NO_BODY = {"GET", "HEAD", "OPTIONS", "DELETE"}


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        if max_body_bytes < 1:
            raise ValueError("ORDERFLOW_MAX_BODY_BYTES must be a positive number of bytes")
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = None
        chunked = False
        for k, v in scope.get("headers", ()):
            if k == b"content-length":
                try:
                    declared = int(v)
                except ValueError:
                    declared = None
            elif k == b"transfer-encoding":
                chunked = True
        if declared is None and not chunked and scope.get("method") in _NO_BODY:
            await self.app(scope, receive, send)
            return
        if declared is not None and declared > self.max_body_bytes:
            await self._too_large(scope, send)
            return
        parts: list[bytes] = []
        size = 0
        while True:
            message: Message = await receive()
            if message["type"] != "http.request":  # the client went away: let the app see it
                await self.app(scope, _replay([message], receive), send)
                return
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                await self._too_large(scope, send)
                return
            parts.append(chunk)
            if not message.get("more_body", False):
                break
        body = {"type": "http.request", "body": b"".join(parts), "more_body": False}
        await self.app(scope, _replay([body], receive), send)

    async def _too_large(self, scope: Scope, send: Any) -> None:
        state = scope.setdefault("state", {})
        if "access" in state:
            state["access"]["outcome"] = "too_large"
        payload = json.dumps({
            "error": "payload_too_large",
            "message": f"request body larger than {self.max_body_bytes} bytes",
            "request_id": state.get("request_id")}).encode()
        # ``Connection: close``: the rest of an over-long body is not read, so the connection
        # cannot carry another request.
        await send({"type": "http.response.start", "status": 413,
                    "headers": [(b"content-type", b"application/json"),
                                (b"content-length", str(len(payload)).encode()),
                                (b"connection", b"close")]})
        await send({"type": "http.response.body", "body": payload})


def _replay(messages: list[Message], receive: Any) -> Any:
    pending = list(messages)

    async def replayed() -> Message:
        if pending:
            return pending.pop(0)
        return await receive()

    return replayed
