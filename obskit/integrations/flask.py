"""Flask: obskit's WSGI middleware (``_wsgi.py``) on every Flask app.

``Flask.__call__`` (what every WSGI server calls) is wrapped at class level, so apps created
before and after ``init()`` are covered without touching them — also when ``app.wsgi_app`` was
replaced by a middleware such as ``ProxyFix`` (whose fixes to ``environ`` we then see). The route
template is ``request.url_rule.rule`` (``/orders/<int:order_id>``), read in a wrapper around
``Flask.full_dispatch_request``; unhandled exceptions that Flask turns into a 500 are recorded on
the span from ``Flask.handle_exception``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from obskit._internal import internal_error
from obskit.integrations import _http
from obskit.integrations._wsgi import ROUTE_KEY, ObskitWSGIMiddleware, record_exception

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("flask",)

__all__ = ["instrument", "instrument_app", "uninstrument"]

_patched = False


def _call(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    return ObskitWSGIMiddleware(wrapped)(*args, **kwargs)


def _set_route() -> None:
    try:
        from flask import request

        rule = request.url_rule
        if rule is not None:
            request.environ[ROUTE_KEY] = rule.rule
    except Exception as exc:
        internal_error("flask.route", exc)


def _full_dispatch(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    _set_route()
    return wrapped(*args, **kwargs)


def _handle_exception(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
    try:
        from flask import request

        exc = args[0] if args else kwargs.get("e")
        if isinstance(exc, BaseException):
            record_exception(request.environ, exc)
    except Exception as err:
        internal_error("flask.exception", err)
    return wrapped(*args, **kwargs)


def instrument_app(app: Any) -> Any:
    """Instrument one Flask app explicitly (when the ``flask`` integration is disabled)."""
    if not isinstance(app.wsgi_app, ObskitWSGIMiddleware) and not _patched:
        app.wsgi_app = ObskitWSGIMiddleware(app.wsgi_app, explicit=True)
        app.before_request(_set_route)
    return app


def instrument(handle: Handle) -> None:
    global _patched
    _http.configure(handle, "flask")
    if _patched:
        return
    from flask import Flask

    wrapt.wrap_function_wrapper(Flask, "__call__", _call)
    wrapt.wrap_function_wrapper(Flask, "full_dispatch_request", _full_dispatch)
    wrapt.wrap_function_wrapper(Flask, "handle_exception", _handle_exception)
    _patched = True


def uninstrument() -> None:
    global _patched
    _http.release("flask")
    if not _patched:
        return
    from flask import Flask

    for name in ("__call__", "full_dispatch_request", "handle_exception"):
        unwrap(Flask, name)
    _patched = False
