"""requests: contrib ``RequestsInstrumentor`` (CLIENT span, traceparent/baggage injected) plus the
``http_client_request_duration_seconds`` metric from a wrapt wrapper around ``Session.send``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from obskit.integrations import _client

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("requests", "opentelemetry.instrumentation.requests")

_instrumentor: Any = None
_owned = False
_patched = False


def instrument(handle: Handle) -> None:
    global _instrumentor, _patched, _owned
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
    wrapt.wrap_function_wrapper(requests.Session, "send", _client.timed_send)
    _patched = True


def uninstrument() -> None:
    global _patched, _instrumentor
    if not _patched:
        return
    import requests

    unwrap(requests.Session, "send")  # ours (outermost) first, then the contrib one
    if _instrumentor is not None and _owned:
        _instrumentor.uninstrument()
    _instrumentor = None
    _patched = False
