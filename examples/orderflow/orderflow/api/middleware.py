"""Client IP and business fields for the access log: one line per request, whatever its outcome.

obskit's server middleware (outermost) owns the request id (``X-Request-ID`` or generated,
returned in the response, on every log line and on the span) and writes the one
``obskit.access`` line per request. This middleware resolves the client IP behind trusted
proxies and lets handlers add business fields (partner, channel, order id, outcome) to
``request.state.access``; they are added to that line with ``obskit.add_request_fields``, so a
partner's "my request never arrived" is one query: ``logger="obskit.access" partner="acme"``
(or their ``request_id``). Without obskit's middleware (instrumentation switched off) it falls
back to generating the id and writing an ``orderflow.access`` line itself.
"""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import structlog
from opentelemetry import trace

import obskit

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Message]],
                    Callable[[Message], Awaitable[None]]], Awaitable[None]]

_VALID_ID = re.compile(r"^[A-Za-z0-9._:/+=-]{1,128}$")
_log = obskit.get_logger("orderflow.access")


def _trusted(addr: str, trusted_proxies: frozenset[str]) -> bool:
    """``addr`` is one of the proxies (an address, or inside a ``10.0.0.0/8`` style network)."""
    if addr in trusted_proxies:
        return True
    try:
        ip = ipaddress.ip_address(addr)
    except ValueError:
        return False
    for p in trusted_proxies:
        if "/" in p:
            try:
                if ip in ipaddress.ip_network(p, strict=False):
                    return True
            except ValueError:
                continue
    return False


def client_ip(scope: Scope, trusted_proxies: frozenset[str]) -> str:
    """The socket peer, or — behind a trusted proxy — the rightmost untrusted X-Forwarded-For hop.

    Every ``X-Forwarded-For`` header counts, in order, as one list (a proxy may append its own
    header instead of extending the client's). Hops are read right to left: the ones trusted
    proxies wrote are skipped, the first other one is the client. Anything left of it was
    written by the client and is never believed. A hop that is not an IP address (a proxy
    misconfigured, or garbage) gives the peer itself: no per-client bucket can be chosen freely.
    """
    peer = str((scope.get("client") or ("unknown", 0))[0])
    if not _trusted(peer, trusted_proxies):
        return peer
    hops = [h.strip() for k, v in scope.get("headers", ()) if k == b"x-forwarded-for"
            for h in v.decode("latin-1").split(",")]
    for hop in reversed(hops):
        if not hop or _trusted(hop, trusted_proxies):
            continue
        try:
            return str(ipaddress.ip_address(hop))
        except ValueError:
            return peer
    return peer


class RequestContextMiddleware:
    def __init__(self, app: ASGIApp, trusted_proxies: frozenset[str] = frozenset()) -> None:
        self.app = app
        self.trusted_proxies = trusted_proxies

    async def __call__(self, scope: Scope, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = obskit.current_request_id()
        from_obskit = rid is not None  # obskit handles the id, the header and the access line
        if rid is None:
            for k, v in scope.get("headers", ()):
                if k == b"x-request-id":
                    candidate = v.decode("latin-1")
                    rid = candidate if _VALID_ID.match(candidate) else None
            rid = rid or uuid.uuid4().hex
        ip = client_ip(scope, self.trusted_proxies)
        access: dict[str, Any] = {}
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        state["client_ip"] = ip
        state["access"] = access
        if from_obskit:
            try:
                await self.app(scope, receive, send)
            finally:
                obskit.add_request_fields(client_ip=ip, **access)
            return
        await self._own_access_line(scope, receive, send, rid, ip, access)

    async def _own_access_line(self, scope: Scope, receive: Any, send: Any, rid: str, ip: str,
                               access: dict[str, Any]) -> None:
        start = time.perf_counter()
        span = trace.get_current_span()
        if span.is_recording():
            span.set_attribute("http.request.id", rid)
        status = 500
        raw_rid = rid.encode("latin-1")

        async def send_wrapper(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", raw_rid)]
            await send(message)

        tokens = structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            structlog.contextvars.reset_contextvars(**tokens)
            route = scope.get("route")
            fields = {
                "request_id": rid, "method": scope.get("method"), "path": scope.get("path"),
                "route": getattr(route, "path", None), "status_code": status,
                "duration_ms": round((time.perf_counter() - start) * 1000, 2),
                "client_ip": ip, **access,
            }
            if not scope.get("path", "").startswith(("/metrics", "/healthz")):
                level = _log.error if status >= 500 else _log.info
                level("request", **fields)
