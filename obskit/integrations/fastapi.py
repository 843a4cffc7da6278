"""FastAPI: obskit's ASGI middleware on every ``FastAPI`` app, and FastAPI's native telemetry off.

FastAPI 0.142 and later ship OpenTelemetry support (``fastapi.telemetry``) that switches itself on
as soon as a global SDK tracer provider exists — which ``obskit.init()`` creates — and makes 4
spans per request at ~0.31 of a bare app's throughput. obskit decides for it: while this
integration is active, native telemetry is off on every app (``NativeTelemetry.enabled`` returns
False and each app's ``telemetry`` config gets ``tracing``/``metrics``/``logs`` = False), so there
is exactly one SERVER span per request: obskit's. The then inert ``ExceptionTelemetryMiddleware``
(it only reports exceptions to that telemetry) is unlinked from the stack: one ``await`` less per
request.
Disable this integration (``OBSKIT_DISABLED_INSTRUMENTATIONS=fastapi``) to get FastAPI's own
telemetry instead.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from obskit import _fastpaths
from obskit._internal import internal_error
from obskit.integrations import _http
from obskit.integrations._asgi import ObskitASGIMiddleware
from obskit.integrations.starlette import wrap_build_middleware_stack

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("fastapi",)

__all__ = ["instrument", "instrument_app", "uninstrument"]

_patched = False
_original_enabled: Any = None


def _native_off(self: Any) -> bool:
    return False


_SIGNALS = ("tracing", "metrics", "logs")  # the keys of an app's native telemetry config


def disable_native_telemetry(app: Any) -> None:
    """Turn FastAPI's built-in telemetry off on ``app`` (a no-op for other apps)."""
    config = getattr(app, "_telemetry", None)
    if isinstance(config, dict):  # shared with app._native_telemetry.config
        for signal in _SIGNALS:
            config[signal] = False


def _drop_inert_telemetry_layer(app: Any, stack: Any) -> None:
    """Unlink FastAPI's ``ExceptionTelemetryMiddleware`` from ``app``'s built stack when the
    app's native telemetry is off: it only reports exceptions to that telemetry (and re-raises),
    so with it off the layer is one ``await`` per request doing nothing (the
    ``fastapi_telemetry_layer`` fast path)."""
    layer = _telemetry_layer()
    if layer is None:
        return
    config = getattr(app, "_telemetry", None)
    if not isinstance(config, dict) or any(config.get(s) for s in _SIGNALS):
        return
    parent = stack
    for _ in range(8):  # ours, ServerErrorMiddleware, then this one
        child = getattr(parent, "app", None)
        if child is None:
            break
        if type(child) is layer:
            parent.app = child.app
            _fastpaths.report("fastapi_telemetry_layer", True)
            return
        parent = child
    _fastpaths.report("fastapi_telemetry_layer", False,
                      "ExceptionTelemetryMiddleware not found in the built middleware stack")


def _telemetry_layer() -> Any:
    """FastAPI's ``ExceptionTelemetryMiddleware`` class when the fast path may unlink it (decides
    and reports); None otherwise."""
    if not _fastpaths.enabled("fastapi_telemetry_layer"):
        _fastpaths.report("fastapi_telemetry_layer", False, "disabled")
        return None
    try:
        from fastapi.telemetry._asgi import ExceptionTelemetryMiddleware
    except ImportError:
        import importlib.util

        if importlib.util.find_spec("fastapi.telemetry") is None:  # FastAPI before 0.142
            _fastpaths.report("fastapi_telemetry_layer", False,
                              "not needed: this FastAPI has no telemetry layer")
        else:
            _fastpaths.report("fastapi_telemetry_layer", False,
                              "fastapi.telemetry._asgi.ExceptionTelemetryMiddleware is missing")
        return None
    return ExceptionTelemetryMiddleware


def probe_fast_path() -> None:
    """Decide (and report) ``fastapi_telemetry_layer`` without an app: ``obskit doctor``."""
    if _telemetry_layer() is not None:
        _fastpaths.report("fastapi_telemetry_layer", True)


def _build_stack(build: Any, app: Any, args: Any, kwargs: Any, explicit: bool = False) -> Any:
    """Starlette's stack under obskit's middleware, without FastAPI's inert telemetry layer."""
    stack = wrap_build_middleware_stack(build, app, args, kwargs, explicit=explicit)
    try:
        _drop_inert_telemetry_layer(app, stack)
    except Exception as exc:
        internal_error("fastapi.drop_telemetry_layer", exc)
    return stack


def _wrap_init(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> None:
    wrapped(*args, **kwargs)
    try:
        disable_native_telemetry(instance)
    except Exception as exc:
        internal_error("fastapi.init", exc)


def _wrap_build(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        disable_native_telemetry(instance)
    except Exception as exc:
        internal_error("fastapi.build_middleware_stack", exc)
    return _build_stack(wrapped, instance, args, kwargs)


def instrument_app(app: Any) -> Any:
    """Instrument one app explicitly (also without ``init()``-time auto-instrumentation).

    Works for FastAPI and Starlette apps (in place, even if they already served requests) and for
    any other ASGI app (returns the wrapped app — serve the return value). Idempotent.
    """
    from starlette.applications import Starlette

    if not isinstance(app, Starlette):
        if isinstance(app, ObskitASGIMiddleware):
            app.explicit = True
            return app
        return ObskitASGIMiddleware(app, explicit=True)
    disable_native_telemetry(app)
    if app.middleware_stack is None:
        if "build_middleware_stack" not in app.__dict__:
            build = app.build_middleware_stack

            def build_instrumented() -> Any:
                return _build_stack(lambda: build(), app, (), {}, explicit=True)

            app.build_middleware_stack = build_instrumented  # type: ignore[method-assign]
    elif isinstance(app.middleware_stack, ObskitASGIMiddleware):
        app.middleware_stack.explicit = True
    else:
        app.middleware_stack = ObskitASGIMiddleware(app.middleware_stack, app, explicit=True)
    return app


def instrument(handle: Handle) -> None:
    global _patched, _original_enabled
    _http.configure(handle, "fastapi")
    if _patched:
        return
    from fastapi import FastAPI

    probe_fast_path()
    wrapt.wrap_function_wrapper(FastAPI, "__init__", _wrap_init)
    wrapt.wrap_function_wrapper(FastAPI, "build_middleware_stack", _wrap_build)
    try:
        from fastapi.telemetry._asgi import NativeTelemetry
    except ImportError:  # FastAPI before 0.142: nothing to switch off
        pass
    else:
        # A plain function, not a wrapt proxy: FastAPI asks this on every request.
        _original_enabled = NativeTelemetry.__dict__["enabled"]
        NativeTelemetry.enabled = _native_off  # type: ignore[method-assign]
    _patched = True


def uninstrument() -> None:
    global _patched, _original_enabled
    _http.release("fastapi")
    if not _patched:
        return
    from fastapi import FastAPI

    unwrap(FastAPI, "__init__")
    unwrap(FastAPI, "build_middleware_stack")
    if _original_enabled is not None:
        from fastapi.telemetry._asgi import NativeTelemetry

        NativeTelemetry.enabled = _original_enabled  # type: ignore[method-assign]
        _original_enabled = None
    _patched = False
