"""httpx: contrib ``HTTPXClientInstrumentor`` (CLIENT span, traceparent/baggage injected) plus the
``http_client_request_duration_seconds`` metric from wrapt wrappers around the transports.

Like the contrib instrumentor, this works at the transport level (``HTTPTransport``,
``AsyncHTTPTransport``): requests through a custom transport (``ASGITransport``,
``MockTransport``) are not traced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from obskit.integrations import _client
from obskit.integrations._contrib import Contrib

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("httpx", "opentelemetry.instrumentation.httpx")

_contrib = Contrib()


def instrument(handle: Handle) -> None:
    if _contrib.active:
        return
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    _client.prefer_stable_http_semconv()
    _contrib.instrument(HTTPXClientInstrumentor(), handle,
                        lambda: _client.is_wrapped(httpx.HTTPTransport, "handle_request"),
                        "httpx.HTTPTransport")
    wrapt.wrap_function_wrapper(httpx.HTTPTransport, "handle_request", _client.timed_send)
    wrapt.wrap_function_wrapper(httpx.AsyncHTTPTransport, "handle_async_request",
                                _client.timed_send_async)


def uninstrument() -> None:
    if not _contrib.active:
        return
    import httpx

    unwrap(httpx.HTTPTransport, "handle_request")
    unwrap(httpx.AsyncHTTPTransport, "handle_async_request")
    _contrib.uninstrument()
