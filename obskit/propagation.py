"""Carry trace context and order baggage across processes in message or HTTP headers.

Uses the globally configured propagator (W3C ``traceparent`` + ``baggage`` by default, see
``OTEL_PROPAGATORS``). Header values are strings; AMQP headers may arrive as ``bytes``, which
``extract`` decodes.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, MutableMapping
from contextlib import contextmanager
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter

__all__ = ["attached", "extract", "inject"]


class _HeaderGetter(Getter[Mapping[str, Any]]):
    def get(self, carrier: Mapping[str, Any], key: str) -> list[str] | None:
        value = carrier.get(key)
        if value is None:
            return None
        if isinstance(value, bytes | bytearray):
            value = bytes(value).decode("utf-8", "replace")
        if isinstance(value, list | tuple):
            return [v.decode() if isinstance(v, bytes) else str(v) for v in value]
        return [str(value)]

    def keys(self, carrier: Mapping[str, Any]) -> list[str]:
        return list(carrier.keys())


_getter = _HeaderGetter()


def inject(headers: MutableMapping[str, Any] | None = None,
           context: Context | None = None) -> MutableMapping[str, Any]:
    """Write ``traceparent`` (+ ``tracestate``) and ``baggage`` into ``headers``; return it."""
    carrier: MutableMapping[str, Any] = {} if headers is None else headers
    propagate.inject(carrier, context=context)
    return carrier


def extract(headers: Mapping[str, Any] | None, context: Context | None = None) -> Context:
    """The context (remote parent span + baggage) carried by ``headers``."""
    return propagate.extract(headers or {}, context=context, getter=_getter)


@contextmanager
def attached(headers: Mapping[str, Any] | None) -> Iterator[Context]:
    """Make the context carried by ``headers`` current inside the block.

    Spans started inside become children of the sender's span; log lines carry the sender's
    order id and channel (from baggage).
    """
    ctx = extract(headers)
    token = otel_context.attach(ctx)
    try:
        yield ctx
    finally:
        otel_context.detach(token)
