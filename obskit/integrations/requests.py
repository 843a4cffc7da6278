"""requests: contrib ``RequestsInstrumentor`` (CLIENT span, traceparent/baggage injected) plus the
``http_client_request_duration_seconds`` metric from a wrapt wrapper around ``Session.send``."""

from __future__ import annotations

from time import perf_counter
from typing import TYPE_CHECKING, Any

import wrapt

from obskit.integrations import _client
from obskit.integrations.starlette import _unwrap

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("requests", "opentelemetry.instrumentation.requests")

_instrumentor: Any = None
_owned = False
_patched = False


def _send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    request = args[0] if args else kwargs.get("request")
    start = perf_counter()
    status: int | str = _client.ERROR_STATUS
    try:
        response = wrapped(*args, **kwargs)
        status = response.status_code
        return response
    finally:
        if request is not None:
            _client.record(request.method or "GET", request.url, status, perf_counter() - start)


def instrument(handle: Handle) -> None:
    global _instrumentor, _patched, _owned
    _client.duration = handle.catalogue.http_client_duration
    if _patched:
        return
    import requests
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    _client.prefer_stable_http_semconv()
    _instrumentor = RequestsInstrumentor()
    # Someone else's instrumentation stays theirs: we only undo what we did.
    _owned = not _instrumentor.is_instrumented_by_opentelemetry
    if _owned:
        _instrumentor.instrument(tracer_provider=handle.tracer_provider)
    if not _client.is_wrapped(requests.Session, "send"):
        # The contrib instrumentor logs and does nothing on a version conflict: say so.
        raise RuntimeError("RequestsInstrumentor did not patch requests.Session.send")
    wrapt.wrap_function_wrapper(requests.Session, "send", _send)
    _patched = True


def uninstrument() -> None:
    global _patched, _instrumentor
    if not _patched:
        return
    import requests

    _unwrap(requests.Session, "send")  # ours (outermost) first, then the contrib one
    if _instrumentor is not None and _owned:
        _instrumentor.uninstrument()
    _instrumentor = None
    _patched = False
    _client.duration = None if not _httpx_active() else _client.duration


def _httpx_active() -> bool:
    from obskit.integrations import httpx as httpx_integration

    return httpx_integration._patched
