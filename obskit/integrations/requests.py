"""requests: contrib ``RequestsInstrumentor`` (CLIENT span, traceparent/baggage injected) plus the
``http_client_request_duration_seconds`` metric from a wrapt wrapper around ``Session.send``."""

from __future__ import annotations

from typing import TYPE_CHECKING

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from obskit.integrations import _client
from obskit.integrations._contrib import Contrib

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("requests", "opentelemetry.instrumentation.requests")

_contrib = Contrib()


def instrument(handle: Handle) -> None:
    if _contrib.active:
        return
    import requests
    from opentelemetry.instrumentation.requests import RequestsInstrumentor

    _client.prefer_stable_http_semconv()
    _contrib.instrument(RequestsInstrumentor(), handle,
                        lambda: _client.is_wrapped(requests.Session, "send"),
                        "requests.Session.send")
    wrapt.wrap_function_wrapper(requests.Session, "send", _client.timed_send)


def uninstrument() -> None:
    if not _contrib.active:
        return
    import requests

    unwrap(requests.Session, "send")  # ours (outermost) first, then the contrib one
    _contrib.uninstrument()
