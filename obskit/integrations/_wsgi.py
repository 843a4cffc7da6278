"""obskit's WSGI server middleware: the same SERVER span, RED metrics and access-log line as
``_asgi.py``, for Flask (and any WSGI app: ``app.wsgi_app = ObskitWSGIMiddleware(app.wsgi_app)``).

The request is finished when the server closes the response iterable (PEP 3333), so streamed
bodies are included in the duration. The route template comes from ``environ["obskit.route"]``,
which the framework integration sets (Flask: ``request.url_rule.rule``).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from time import perf_counter
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Status, StatusCode

from obskit._context import begin_request, end_request
from obskit._internal import internal_error
from obskit._semconv import KIND_SERVER
from obskit.integrations import _http

__all__ = ["ROUTE_KEY", "ObskitWSGIMiddleware", "record_exception"]

ROUTE_KEY = "obskit.route"
_STATE_KEY = "obskit.request"
_UNMATCHED = _http.UNMATCHED
_KNOWN = _http.KNOWN_METHODS


class _Request:
    __slots__ = ("start", "method", "span", "ctx", "status", "error", "done", "fields")

    def __init__(self, start: float, method: str, span: Any, ctx: Any) -> None:
        self.start = start
        self.method = method
        self.span = span
        self.ctx = ctx
        self.status = 0
        self.error: BaseException | None = None
        self.done = False
        self.fields: dict[str, Any] = {}  # request_id, order_id, app fields (obskit._context)


def record_exception(environ: dict[str, Any], exc: BaseException) -> None:
    """Let the framework report an exception it turned into a 500 response."""
    req = environ.get(_STATE_KEY)
    if req is not None:
        req.error = exc


class _Body:
    """The response iterable; finishes the request when the server closes it."""

    __slots__ = ("_inner", "_finish")

    def __init__(self, inner: Iterable[bytes], finish: Callable[[], None]) -> None:
        self._inner = inner
        self._finish = finish

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._inner)

    def close(self) -> None:
        try:
            close = getattr(self._inner, "close", None)
            if close is not None:
                close()
        finally:
            self._finish()


class ObskitWSGIMiddleware:
    def __init__(self, app: Callable[..., Any], explicit: bool = False) -> None:
        self.app = app
        self.explicit = explicit  # added by instrument_app(): works even if no integration is on

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Any:
        st = _http.state
        if st is None and self.explicit:
            st = _http.current()
        if st is None or _STATE_KEY in environ:
            return self.app(environ, start_response)
        req: _Request | None = None
        token = None
        try:
            method = environ.get("REQUEST_METHOD", "GET")
            if method not in _KNOWN:
                method = "_OTHER"
            span = ctx = None
            if st.tracer is not None:
                parent = None
                if "HTTP_TRACEPARENT" in environ or "HTTP_BAGGAGE" in environ:
                    parent = propagate.extract({
                        "traceparent": environ.get("HTTP_TRACEPARENT", ""),
                        "tracestate": environ.get("HTTP_TRACESTATE", ""),
                        "baggage": environ.get("HTTP_BAGGAGE", ""),
                    })
                span = st.tracer.start_span(method, parent, KIND_SERVER)
                ctx = trace.set_span_in_context(span, parent)
                token = otel_context.attach(ctx)
            req = _Request(perf_counter(), method, span, ctx)
            if st.request_id:
                incoming = environ.get("HTTP_X_REQUEST_ID")
                req.fields["request_id"] = _http.request_id(
                    incoming.encode("latin-1", "replace") if incoming else None)
            environ[_STATE_KEY] = req
            st.active_for(method).start()
        except Exception as exc:
            internal_error("wsgi.start", exc)

        if req is None:
            return self.app(environ, start_response)

        def _start_response(status: str, headers: Any, exc_info: Any = None) -> Any:
            try:
                req.status = int(status.split(" ", 1)[0])
                rid = req.fields.get("request_id")
                if rid is not None:
                    headers = [*headers, ("X-Request-ID", rid)]
                if st.server_timing:
                    headers = [*headers, ("Server-Timing", _http.server_timing(req.start))]
            except Exception:  # noqa: S110 - never break the response over bookkeeping
                pass
            return start_response(status, headers, exc_info)

        request_token = begin_request(req.fields)
        try:
            body = self.app(environ, _start_response)
        except BaseException as exc:
            req.error = exc
            self._finish(st, environ, req)
            raise
        finally:
            end_request(request_token)
            if token is not None:
                otel_context.detach(token)
        return _Body(body, lambda: self._finish(st, environ, req))

    @staticmethod
    def _finish(st: _http.ServerState, environ: dict[str, Any], req: _Request) -> None:
        if req.done:
            return
        req.done = True
        token = None
        try:
            if req.ctx is not None:
                token = otel_context.attach(req.ctx)
            status = req.status or 500
            route = environ.get(ROUTE_KEY) or _UNMATCHED
            method = req.method
            duration = perf_counter() - req.start
            span = req.span
            recording = span is not None and span.is_recording()
            path = environ.get("PATH_INFO", "")
            client = environ.get("REMOTE_ADDR")
            request_id = req.fields.get("request_id") or environ.get("HTTP_X_REQUEST_ID")
            _http.finish(st, st.active_for(method), method, route, status, duration,
                         None if span is None else span.get_span_context(), recording, path,
                         client or None, request_id, req.fields,
                         _http.caller_order(req.fields, True))
            if span is None:
                return
            if recording:
                attrs: dict[str, Any] = {
                    "http.request.method": method,
                    "url.path": path,
                    "url.scheme": environ.get("wsgi.url_scheme", "http"),
                    "http.response.status_code": status,
                }
                if method == "_OTHER":
                    attrs["http.request.method_original"] = environ.get("REQUEST_METHOD", "")
                host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME")
                if host:
                    attrs["server.address"] = host.rsplit(":", 1)[0]
                ua = environ.get("HTTP_USER_AGENT")
                if ua:
                    attrs["user_agent.original"] = ua
                if client:
                    attrs["client.address"] = client
                if request_id is not None:
                    attrs["http.request.header.x-request-id"] = (request_id,)
                if route != _UNMATCHED:
                    span.update_name(f"{method} {route}")
                    attrs["http.route"] = route
                error = req.error
                if error is not None and isinstance(error, Exception):
                    span.record_exception(error)
                    attrs["error.type"] = type(error).__qualname__
                    span.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
                elif status >= 500:
                    attrs["error.type"] = str(status)
                    span.set_status(Status(StatusCode.ERROR))
                span.set_attributes(attrs)
            span.end()
        except Exception as exc:
            internal_error("wsgi.finish", exc)
        finally:
            if token is not None:
                otel_context.detach(token)
