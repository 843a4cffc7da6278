"""Shared by the HTTP client integrations: the ``http_client_request_duration_seconds`` metric.

Spans and ``traceparent``/``baggage`` injection come from the OpenTelemetry contrib instrumentors
(they do that well); obskit adds a thin wrapt wrapper *outside* theirs that times the call and
records the catalogue metric, with the caller's trace_id as exemplar.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlsplit

from obskit._internal import internal_error
from obskit.integrations._http import KNOWN_METHODS
from obskit.metrics import observe

#: ``status_code`` label when the call raised (connection refused, timeout, ...).
ERROR_STATUS = "error"

duration: Any = None  # catalogue.http_client_duration while a client integration is active


def record(method: str, url: Any, status: int | str, seconds: float) -> None:
    family = duration
    if family is None:
        return
    try:
        method = method.upper()
        host = url.host if hasattr(url, "host") else urlsplit(str(url)).hostname
        observe(family.labels(method if method in KNOWN_METHODS else "_OTHER", host or "",
                              status), seconds)
    except Exception as exc:
        internal_error("http_client.metrics", exc)


def is_wrapped(owner: Any, name: str) -> bool:
    return hasattr(owner.__dict__.get(name), "__wrapped__")


def prefer_stable_http_semconv() -> None:
    """Make the contrib HTTP instrumentors use the stable HTTP semantic conventions
    (``http.request.method``, ``http.response.status_code``, like obskit's server spans).

    Their only switch is ``OTEL_SEMCONV_STABILITY_OPT_IN``, read once per process on first use;
    an explicit value set by the user is kept.
    """
    import os

    from opentelemetry.instrumentation._semconv import (
        _OpenTelemetrySemanticConventionStability as Stability,
    )

    if not Stability._initialized and "OTEL_SEMCONV_STABILITY_OPT_IN" not in os.environ:
        os.environ["OTEL_SEMCONV_STABILITY_OPT_IN"] = "http"
