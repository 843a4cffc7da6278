"""Shared by the HTTP client integrations: the ``http_client_request_duration_seconds`` metric.

Spans and ``traceparent``/``baggage`` injection come from the OpenTelemetry contrib instrumentors
(they do that well); obskit adds a thin wrapt wrapper *outside* theirs that times the call and
records the catalogue metric, with the caller's trace_id as exemplar. Both ``requests``'
``Session.send`` and httpx's transports take the request as their first argument and return a
response with ``status_code``, so one pair of wrappers serves both.
"""

from __future__ import annotations

from time import perf_counter
from typing import Any
from urllib.parse import urlsplit

from obskit._internal import internal_error
from obskit.integrations._http import KNOWN_METHODS
from obskit.metrics import catalogue, observe

#: ``status_code`` label when the call raised (connection refused, timeout, ...).
ERROR_STATUS = "error"


def record(method: str, url: Any, status: int | str, seconds: float) -> None:
    # Only called while instrumented, i.e. while init() is active: the active catalogue.
    try:
        method = (method or "GET").upper()
        host = url.host if hasattr(url, "host") else urlsplit(str(url)).hostname
        observe(catalogue().http_client_duration.labels(
            method if method in KNOWN_METHODS else "_OTHER", host or "", status), seconds)
    except Exception as exc:
        internal_error("http_client.metrics", exc)


def timed_send(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt wrapper for a synchronous ``send(request)``."""
    request = args[0] if args else kwargs.get("request")
    start = perf_counter()
    status: int | str = ERROR_STATUS
    try:
        response = wrapped(*args, **kwargs)
        status = response.status_code
        return response
    finally:
        if request is not None:
            record(request.method, request.url, status, perf_counter() - start)


async def timed_send_async(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    """wrapt wrapper for an asynchronous ``send(request)``."""
    request = args[0] if args else kwargs.get("request")
    start = perf_counter()
    status: int | str = ERROR_STATUS
    try:
        response = await wrapped(*args, **kwargs)
        status = response.status_code
        return response
    finally:
        if request is not None:
            record(request.method, request.url, status, perf_counter() - start)


def is_wrapped(owner: Any, name: str) -> bool:
    return hasattr(owner.__dict__.get(name), "__wrapped__")


def prefer_stable_http_semconv() -> None:
    """Make the contrib HTTP instrumentors use the stable HTTP semantic conventions
    (``http.request.method``, ``http.response.status_code``, like obskit's server spans).

    Their only switch is ``OTEL_SEMCONV_STABILITY_OPT_IN``, read once per process on first use
    (so it takes effect when no contrib instrumentor was set up before ``init()``); an explicit
    value set by the user is kept.
    """
    import os

    os.environ.setdefault("OTEL_SEMCONV_STABILITY_OPT_IN", "http")
