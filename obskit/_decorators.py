"""``@obskit.traced``: a span around a function, sync or async."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, TypeVar, overload

from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode

F = TypeVar("F", bound=Callable[..., Any])

__all__ = ["traced"]


@overload
def traced(func: F, /) -> F: ...
@overload
def traced(*, name: str | None = None, kind: SpanKind = SpanKind.INTERNAL,
           attributes: dict[str, Any] | None = None) -> Callable[[F], F]: ...


def traced(func: Any = None, /, *, name: str | None = None, kind: SpanKind = SpanKind.INTERNAL,
           attributes: dict[str, Any] | None = None) -> Any:
    """Trace every call of the decorated function (``@traced`` or ``@traced(name=...)``).

    The span is named ``module.qualname`` unless ``name`` is given. An exception is recorded on the
    span (event + ERROR status) and re-raised unchanged. Works on sync functions, coroutine
    functions, and generators are traced for their creation only.
    """

    def decorate(fn: Any) -> Any:
        span_name = name or f"{fn.__module__}.{fn.__qualname__}"
        attrs = {"code.function": fn.__qualname__, "code.namespace": fn.__module__,
                 **(attributes or {})}

        if inspect.iscoroutinefunction(fn):
            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                with _tracer().start_as_current_span(span_name, kind=kind, attributes=attrs,
                                                  record_exception=False,
                                                  set_status_on_exception=False) as span:
                    try:
                        return await fn(*args, **kwargs)
                    except BaseException as exc:
                        _record(span, exc)
                        raise

            return async_wrapper

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            with _tracer().start_as_current_span(span_name, kind=kind, attributes=attrs,
                                              record_exception=False,
                                              set_status_on_exception=False) as span:
                try:
                    return fn(*args, **kwargs)
                except BaseException as exc:
                    _record(span, exc)
                    raise

        return wrapper

    return decorate(func) if func is not None else decorate


_cached: tuple[Any, Any] = (None, None)


def _tracer() -> Any:
    """The tracer of the *current* global provider (tests and late init() swap it)."""
    global _cached
    provider = trace.get_tracer_provider()
    if _cached[0] is not provider:
        _cached = (provider, provider.get_tracer("obskit"))
    return _cached[1]


def _record(span: Any, exc: BaseException) -> None:
    if not span.is_recording():
        return
    try:
        span.record_exception(exc)
        span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
    except Exception:  # pragma: no cover - telemetry must not mask the user's exception
        pass
