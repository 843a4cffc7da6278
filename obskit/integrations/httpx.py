"""httpx: contrib ``HTTPXClientInstrumentor`` (CLIENT span, traceparent/baggage injected) plus the
``http_client_request_duration_seconds`` metric from wrapt wrappers around the transports.

Like the contrib instrumentor, this works at the transport level (``HTTPTransport``,
``AsyncHTTPTransport``): requests through a custom transport (``ASGITransport``,
``MockTransport``) are not traced.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from obskit.integrations import _client

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("httpx", "opentelemetry.instrumentation.httpx")

_instrumentor: Any = None
_owned = False
_patched = False


def instrument(handle: Handle) -> None:
    global _instrumentor, _patched, _owned
    if _patched:
        return
    import httpx
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    _client.prefer_stable_http_semconv()
    _instrumentor = HTTPXClientInstrumentor()
    # Someone else's instrumentation stays theirs: we only undo what we did.
    _owned = not _instrumentor.is_instrumented_by_opentelemetry
    if _owned:
        _instrumentor.instrument(tracer_provider=handle.tracer_provider)
    if not _client.is_wrapped(httpx.HTTPTransport, "handle_request"):
        raise RuntimeError("HTTPXClientInstrumentor did not patch httpx.HTTPTransport")
    wrapt.wrap_function_wrapper(httpx.HTTPTransport, "handle_request", _client.timed_send)
    wrapt.wrap_function_wrapper(httpx.AsyncHTTPTransport, "handle_async_request",
                                _client.timed_send_async)
    _patched = True


def uninstrument() -> None:
    global _patched, _instrumentor
    if not _patched:
        return
    import httpx

    unwrap(httpx.HTTPTransport, "handle_request")
    unwrap(httpx.AsyncHTTPTransport, "handle_async_request")
    if _instrumentor is not None and _owned:
        _instrumentor.uninstrument()
    _instrumentor = None
    _patched = False
