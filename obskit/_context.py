"""Order context: which order (and channel) the current code is working on.

The order id and channel live in OpenTelemetry *baggage* (keys ``order.id`` and ``order.channel``)
so that they cross process boundaries with the W3C ``baggage`` header — over HTTP and inside
RabbitMQ message headers — with no extra plumbing. Extra attributes given to ``order_context``
stay local to the process (they may be personal data; baggage reaches third parties).

Readers: the log processor ``processors.add_order_context``, the span processor that copies the
order onto every span started inside the context, and ``record_stage``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from types import MappingProxyType
from typing import Any

from opentelemetry import baggage, context, trace

from obskit import _fastpaths

try:  # the context key of baggage's dict (private API: a fast path, with a public fallback)
    from opentelemetry.baggage import _BAGGAGE_KEY
except ImportError:
    _BAGGAGE_KEY = None  # type: ignore[assignment]
    _fastpaths.report("baggage_direct", False, "opentelemetry.baggage._BAGGAGE_KEY is missing")
else:
    if _fastpaths.enabled("baggage_direct"):
        _fastpaths.report("baggage_direct", True)
    else:
        _BAGGAGE_KEY = None  # type: ignore[assignment]
        _fastpaths.report("baggage_direct", False, "disabled")

__all__ = [
    "ORDER_CHANNEL_KEY",
    "ORDER_ID_KEY",
    "add_request_fields",
    "current_order",
    "current_request",
    "current_request_id",
    "order_context",
]

ORDER_ID_KEY = "order.id"
ORDER_CHANNEL_KEY = "order.channel"

_extra: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "obskit_order_extra", default=MappingProxyType({})
)


# Per-request fields (request_id, and what the app adds) for the access-log line and every log
# line of the request. A dict set by the server middleware and *mutated* by the handler, so what
# the handler adds reaches the middleware even across copied contexts (sync endpoints run in a
# thread with a copy of the context).
_request: contextvars.ContextVar[dict[str, Any] | None] = contextvars.ContextVar(
    "obskit_request", default=None
)
request_var = _request  # set and reset directly by the ASGI middleware (its hot path)


def current_request() -> dict[str, Any] | None:
    return _request.get()


def begin_request(fields: dict[str, Any]) -> contextvars.Token[dict[str, Any] | None]:
    return _request.set(fields)


def end_request(token: contextvars.Token[dict[str, Any] | None]) -> None:
    _request.reset(token)


def current_request_id() -> str | None:
    """The request id of the HTTP request being handled (``X-Request-ID`` or generated)."""
    req = _request.get()
    return None if req is None else req.get("request_id")


def add_request_fields(**fields: Any) -> None:
    """Add fields to the current HTTP request's access-log line (e.g. ``partner="acme"``).

    Outside a request instrumented by obskit this does nothing.
    """
    req = _request.get()
    if req is not None:
        req.setdefault("extra", {}).update(fields)


def current_order(ctx: context.Context | None = None) -> tuple[str | None, str | None]:
    """``(order_id, channel)`` of the order context in ``ctx`` (default: the active one)."""
    if _BAGGAGE_KEY is not None:  # the baggage dict itself: no read-only copy per call
        entries = (context.get_current() if ctx is None else ctx).get(_BAGGAGE_KEY)
        if not entries or not isinstance(entries, dict):
            return (None, None)
    else:  # the public API: a read-only copy per call
        entries = baggage.get_all(ctx)
        if not entries:
            return (None, None)
    oid = entries.get(ORDER_ID_KEY)
    ch = entries.get(ORDER_CHANNEL_KEY)
    return (None if oid is None else str(oid), None if ch is None else str(ch))


def with_order(order_id: Any, channel: str | None = None,
               ctx: context.Context | None = None) -> context.Context:
    """``ctx`` (default: the current context) with the order in its baggage, not attached.

    For code that passes a context explicitly (a publish): what ``order_context`` puts in the
    baggage, without its log fields, span attributes and attach/detach.
    """
    if _BAGGAGE_KEY is None:  # the public API
        ctx = baggage.set_baggage(ORDER_ID_KEY, str(order_id), ctx)
        if channel is not None:
            ctx = baggage.set_baggage(ORDER_CHANNEL_KEY, str(channel), ctx)
        return ctx
    # What set_baggage() twice gives, with one copy of the baggage and of the context.
    base = context.get_current() if ctx is None else ctx
    current = base.get(_BAGGAGE_KEY)
    entries = dict(current) if isinstance(current, dict) else {}
    entries[ORDER_ID_KEY] = str(order_id)
    if channel is not None:
        entries[ORDER_CHANNEL_KEY] = str(channel)
    values = dict(base)
    values[_BAGGAGE_KEY] = entries
    return context.Context(values)


def current_extra() -> Mapping[str, Any]:
    return _extra.get()


@contextmanager
def order_context(order_id: Any, channel: str | None = None, **attributes: Any) -> Iterator[None]:
    """Mark the code inside as working on ``order_id``.

    Log lines inside carry ``order_id`` / ``channel`` (and ``attributes``); spans started inside
    carry ``order.id`` / ``order.channel``; the current span gets them too; outgoing HTTP requests
    and RabbitMQ messages carry them to the next service as W3C baggage.
    """
    ctx = baggage.set_baggage(ORDER_ID_KEY, str(order_id))
    if channel is not None:
        ctx = baggage.set_baggage(ORDER_CHANNEL_KEY, str(channel), ctx)
    token = context.attach(ctx)
    req = _request.get()
    if req is not None:  # the access line of this request names the order too
        req["order_id"] = str(order_id)
        if channel is not None:
            req["channel"] = str(channel)
    extra_token = _extra.set({**_extra.get(), **attributes}) if attributes else None
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute(ORDER_ID_KEY, str(order_id))
        if channel is not None:
            span.set_attribute(ORDER_CHANNEL_KEY, str(channel))
        for k, v in attributes.items():
            if isinstance(v, str | bool | int | float):
                span.set_attribute(f"order.{k}", v)
    try:
        yield
    finally:
        if extra_token is not None:
            _extra.reset(extra_token)
        context.detach(token)
