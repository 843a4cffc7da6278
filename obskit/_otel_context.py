"""The OpenTelemetry context operations of obskit's per-request path, without the API's layers.

``opentelemetry.context.attach`` is three Python calls deep before it reaches the one thing it
does — ``ContextVar.set`` of the runtime context — and ``trace.set_span_in_context`` reads the
current context and copies it through two more. In a loaded server every Python call of the
request path costs several times what it costs in a tight loop (docs/performance-http.md), so
the server middleware does these directly: ``current()``, ``attach()`` and ``detach()`` are the
runtime's ``ContextVar`` methods themselves, and ``with_span()`` builds the new ``Context`` in one
step.

Only where that is what the API would do: the default runtime context (``contextvars``) and the
span key of this API version. Otherwise (another ``OTEL_PYTHON_CONTEXT``, a future API) these
are the API's own functions.
"""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from opentelemetry import context as _api
from opentelemetry import trace as _trace
from opentelemetry.context import Context

from obskit import _fastpaths

__all__ = ["attach", "current", "detach", "span_of", "with_span"]

try:  # private API: the context key of the current span
    from opentelemetry.trace.propagation import _SPAN_KEY
except ImportError:  # a future API without it
    _SPAN_KEY = None  # type: ignore[assignment]


def _runtime_var() -> tuple[Any, str]:
    """The runtime context's ``ContextVar``, or None and why the API's functions are used."""
    if not _fastpaths.enabled("context_direct"):
        return None, "disabled"
    if _SPAN_KEY is None:
        return None, "opentelemetry.trace.propagation._SPAN_KEY is missing"
    try:
        from opentelemetry.context.contextvars_context import ContextVarsRuntimeContext

        runtime = _api._RUNTIME_CONTEXT
        if type(runtime) is not ContextVarsRuntimeContext:
            return None, f"runtime context is {type(runtime).__name__} (OTEL_PYTHON_CONTEXT)"
        var = runtime._current_context  # type: ignore[attr-defined]
    except Exception as exc:  # another API version: its own functions
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(var, ContextVar):
        return None, "ContextVarsRuntimeContext._current_context is not a ContextVar"
    return var, ""


_var, _why = _runtime_var()
_fastpaths.report("context_direct", _var is not None, _why)

current: Callable[[], Context]
attach: Callable[[Context], Any]
detach: Callable[[Any], None]
if _var is not None:
    current = _var.get
    attach = _var.set
    detach = _var.reset
else:
    _SPAN_KEY = None  # type: ignore[assignment]  # with_span/span_of: the API's too
    current = _api.get_current
    attach = _api.attach
    detach = _api.detach


def with_span(span: Any, context: Context) -> Context:
    """``trace.set_span_in_context(span, context)``: a copy of ``context`` with ``span``."""
    if _SPAN_KEY is None:
        return _trace.set_span_in_context(span, context)
    return Context({**context, _SPAN_KEY: span})


def span_of(context: Context) -> Any:
    """The span in ``context`` (``trace.get_current_span(context)``), None when it has none."""
    if _SPAN_KEY is None:
        span = _trace.get_current_span(context)
        return None if span is _trace.INVALID_SPAN else span
    span = context.get(_SPAN_KEY)
    if span is None:  # the usual case of a request without a caller's trace: no ABC check
        return None
    return span if isinstance(span, _trace.Span) else None
