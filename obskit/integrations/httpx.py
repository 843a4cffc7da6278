"""httpx: contrib ``HTTPXClientInstrumentor`` (CLIENT span, traceparent/baggage injected) plus the
``http_client_request_duration_seconds`` metric from wrapt wrappers around the transports.

Like the contrib instrumentor, this works at the transport level (``HTTPTransport``,
``AsyncHTTPTransport``): requests through a custom transport (``ASGITransport``,
``MockTransport``) are not traced.
"""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

import wrapt

from obskit.integrations import _client
from obskit.integrations.starlette import _unwrap

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("httpx", "opentelemetry.instrumentation.httpx")

_instrumentor: Any = None
_owned = False
_patched = False


def _handle_request(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    request = args[0] if args else kwargs.get("request")
    start = perf_counter()
    status: int | str = _client.ERROR_STATUS
    try:
        response = wrapped(*args, **kwargs)
        status = response.status_code
        return response
    finally:
        if request is not None:
            _client.record(request.method, request.url, status, perf_counter() - start)


async def _handle_async_request(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    request = args[0] if args else kwargs.get("request")
    start = perf_counter()
    status: int | str = _client.ERROR_STATUS
    try:
        response = await wrapped(*args, **kwargs)
        status = response.status_code
        return response
    finally:
        if request is not None:
            _client.record(request.method, request.url, status, perf_counter() - start)


def instrument(handle: Handle) -> None:
    global _instrumentor, _patched, _owned
    _client.duration = handle.catalogue.http_client_duration
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
    wrapt.wrap_function_wrapper(httpx.HTTPTransport, "handle_request", _handle_request)
    wrapt.wrap_function_wrapper(httpx.AsyncHTTPTransport, "handle_async_request",
                                _handle_async_request)
    _patched = True


def uninstrument() -> None:
    global _patched, _instrumentor
    if not _patched:
        return
    import httpx

    _unwrap(httpx.HTTPTransport, "handle_request")
    _unwrap(httpx.AsyncHTTPTransport, "handle_async_request")
    if _instrumentor is not None and _owned:
        _instrumentor.uninstrument()
    _instrumentor = None
    _patched = False
    from obskit.integrations import requests as requests_integration

    if not requests_integration._patched:
        _client.duration = None
