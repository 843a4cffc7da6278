"""State shared by obskit's server middlewares (ASGI and WSGI): one tracer, the RED families.

``configure()`` is called by the framework integrations' ``instrument()``; middleware instances
read the module-level ``state`` on every request, so an app built while obskit was initialised
becomes a pass-through after ``shutdown()`` and picks up a new ``init()``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from random import getrandbits as _getrandbits
from time import perf_counter
from time import time as _time
from typing import TYPE_CHECKING, Any

from opentelemetry.context import attach as _attach
from opentelemetry.context import detach as _detach
from opentelemetry.trace import NonRecordingSpan as _NonRecordingSpan
from opentelemetry.trace import SpanContext as _SpanContext
from opentelemetry.trace import TraceFlags as _TraceFlags
from opentelemetry.trace import TraceState as _TraceState
from opentelemetry.trace import set_span_in_context as _set_span_in_context

from obskit import _deferred, _fastpaths, _logging
from obskit._context import current_order
from obskit._fastspan import FastTracer
from obskit.metrics import InFlight, in_flight, observe_traced

if TYPE_CHECKING:
    from obskit._init import Handle

# A SpanContext is a tuple (trace_id, span_id, is_remote, trace_flags, trace_state, is_valid):
# the request path reads it by index, no property call per field. Checked once: with another
# layout it reads the properties.
_EMPTY = _TraceState()
_BY_INDEX = False
if not _fastpaths.enabled("span_context_by_index"):
    _fastpaths.report("span_context_by_index", False, "disabled")
else:
    _BY_INDEX = (tuple(_SpanContext(3, 4, False, _TraceFlags(1)))
                 == (3, 4, False, 1, _EMPTY, True))
    _fastpaths.report("span_context_by_index", _BY_INDEX,
                      "" if _BY_INDEX else "SpanContext is not the expected tuple")

UNMATCHED = "__unmatched__"
ACCESS_LOGGER = "obskit.access"

#: Methods kept as a label value; anything else is ``_OTHER`` (HTTP semconv), so a client sending
#: random methods cannot create series.
KNOWN_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH", "QUERY"}
)


@dataclass
class ServerState:
    tracer: Any | None  # None when OTEL_SDK_DISABLED
    duration: Any  # catalogue.http_server_duration (guarded family)
    active: Any  # catalogue.http_server_active
    request_id: bool = True  # accept/generate X-Request-ID (the `request_id` option)
    server_timing: bool = False  # Server-Timing: app;dur=... (the `server_timing` option)
    deferred: bool = True  # finished requests' bookkeeping in batches (a fast path)
    active_values: dict[str, InFlight] = field(default_factory=dict)  # active_for()'s, by method

    def active_for(self, method: str) -> InFlight:
        """What counts ``method``'s requests in flight in ``http_server_active_requests``:
        ``.start()`` at the start, ``.inc(-1)`` with the request's metrics."""
        counter = self.active_values.get(method)
        if counter is None:  # methods are bounded (KNOWN_METHODS, _OTHER)
            counter = self.active_values[method] = in_flight(self.active.labels(method))
        return counter


_MAX_REQUEST_ID = 128


def request_id(incoming: bytes | None) -> str:
    """The caller's ``X-Request-ID`` when it is sane (printable, <= 128 chars), else a new one.

    A new id is 32 hex characters (128 random bits), like a trace id. ``random``, not
    ``os.urandom``: a request id is not a secret, and getrandom() measured ~47 µs per call on
    our VMs (the OTel SDK makes its ids the same way).
    """
    if incoming:
        try:
            value = incoming.decode("ascii")
        except UnicodeDecodeError:
            value = ""
        if 0 < len(value) <= _MAX_REQUEST_ID and value.isprintable():
            return value
    return "%032x" % _getrandbits(128)  # noqa: UP031 - ~50 ns less than an f-string


SERVER_TIMING = "server-timing"


def server_timing(start: float) -> str:
    """The ``Server-Timing`` value for a response starting now (``start``: perf_counter)."""
    return f"app;dur={(perf_counter() - start) * 1000:.3f}"


def caller_order(request: dict[str, Any], baggage: bool) -> tuple[str | None, str | None] | None:
    """The caller's order from the request's baggage, read while the request's context is
    current; None when the handler set one itself or the request carried no baggage."""
    if not baggage or request.get("order_id") is not None:
        return None
    return current_order()


def add_request_fields(fields: dict[str, Any], request: dict[str, Any] | None,
                       order: tuple[str | None, str | None] | None) -> None:
    """Copy what the handler put on the request (order id, channel, app fields; None: nothing)
    onto the line; ``order`` (``caller_order()``) when the handler set no order itself."""
    order_id = channel = extra = None
    if request is not None:
        order_id = request.get("order_id")
        channel = request.get("channel")
        extra = request.get("extra")
    if order_id is None and order is not None:
        order_id, channel = order
    if order_id is not None:
        fields["order_id"] = order_id
        if channel is not None:
            fields["channel"] = channel
    if extra:
        for k, v in extra.items():
            fields.setdefault(k, v)


@dataclass(slots=True)
class FinishedRequest:
    """A served request waiting for its batch (``obskit._deferred``): ``run()`` records its RED
    metrics and renders its access line there, off the request's path.

    Plain values, not objects of their own (the ids as ints, not the ``SpanContext``): every
    object that waits for the batch counts towards the garbage collector's next young
    collection, and a batch holds up to 256 requests.
    """

    state: ServerState
    active: Any  # what counted it in http_server_active_requests (None: nothing to undo)
    method: str
    route: str
    status: int
    duration: float  # seconds
    trace_id: int  # 0: not traced
    span_id: int
    trace_flags: int
    sampled: bool  # recorded and exported: its trace id may become an exemplar
    path: str
    client: str | None
    request_id: str | None
    request: dict[str, Any] | None  # what the handler put on the request (None: nothing)
    order: tuple[str | None, str | None] | None  # the caller's order (``caller_order()``)
    at: float  # time.time() when it finished

    def run(self, increments: dict[Any, float] | None = None) -> str | None:
        active = self.active
        if active is not None:
            if increments is None:
                active.inc(-1)
            else:  # summed over the batch, one inc() per method
                increments[active] = increments.get(active, 0) - 1
        st = self.state
        trace_int = self.trace_id
        trace_id = span_id = None
        if trace_int:
            # %-formatting: ~50 ns less per id than format(); the same 32 and 16 hex digits.
            trace_id = "%032x" % trace_int  # noqa: UP031
            span_id = "%016x" % self.span_id  # noqa: UP031
        method, route, status, duration = self.method, self.route, self.status, self.duration
        observe_traced(st.duration.labels(method, route, status), duration,
                       trace_id if self.sampled else None)
        fields: dict[str, Any] = {"event": f"{method} {self.path} {status}",
                                  "method": method, "route": route, "path": self.path,
                                  "status_code": status,
                                  "duration_ms": int(duration * 1_000_000 + 0.5) / 1000}
        if self.client:
            fields["client"] = self.client
        if self.request_id is not None:
            fields["request_id"] = self.request_id
        if trace_id is not None:
            fields["trace_id"] = trace_id
            fields["span_id"] = span_id
        if self.request is not None or self.order is not None:
            add_request_fields(fields, self.request, self.order)
        level = "error" if status >= 500 else "info"
        # Plain values only, unless the handler added fields of its own (any type).
        plain = self.request is None
        if trace_id is None or not _logging.exporting:
            return _logging.render(ACCESS_LOGGER, level, fields, self.at, None, plain)
        if _logging.export_takes_ids:  # the export process: the ids as they are
            return _logging.render(ACCESS_LOGGER, level, fields, self.at,
                                   (trace_int, self.span_id, int(self.trace_flags)), plain)
        # The OTLP log record takes its trace ids from the current context: the request's.
        sc = _SpanContext(trace_int, self.span_id, False, _TraceFlags(self.trace_flags))
        token = _attach(_set_span_in_context(_NonRecordingSpan(sc)))
        try:
            return _logging.render(ACCESS_LOGGER, level, fields, self.at, None, plain)
        finally:
            _detach(token)


def finish(st: ServerState, active: Any, method: str, route: str, status: int, duration: float,
           span_context: Any, sampled: bool, path: str, client: str | None,
           request_id: str | None, request: dict[str, Any],
           order: tuple[str | None, str | None] | None) -> None:
    """Hand a finished request over (``_deferred.defer``): its RED metrics and access line are
    made in the next batch, off the request's path.

    Measured in a loaded uvicorn server, the same bookkeeping costs ~10 µs less per request
    done in batches than inline (docs/explanation/deferred-logging.md): run between the
    server's and the framework's code, it finds nothing in the CPU caches. Its
    ``http_server_active_requests`` decrement waits for the batch too; a scrape takes the
    pending batch first (``metrics.Catalogue``), so what it reads is exact.
    """
    ids = span = flags = 0
    if span_context is not None:
        if _BY_INDEX:
            if span_context[5]:  # is_valid
                ids, span, flags = span_context[0], span_context[1], span_context[3]
        elif span_context.is_valid:  # pragma: no cover - another API version
            ids, span, flags = span_context.trace_id, span_context.span_id, span_context.trace_flags
    # The request's dict only when the handler added to it (order, fields): the usual one holds
    # just the request id, which travels alone.
    finished = FinishedRequest(
        st, active, method, route, status, duration, ids, span, flags, sampled, path, client,
        request_id, request if len(request) > ("request_id" in request) else None, order,
        _time())
    if st.deferred:
        _deferred.defer(finished)
    else:  # the fallback: the bookkeeping here, the line queued as any other
        _deferred.run_now(finished)


state: ServerState | None = None
_users: set[str] = set()  # integrations that asked for the state (fastapi, starlette, flask)


def probe_fast_path() -> bool:
    """Decide (and report) ``http_deferred_bookkeeping``; ``obskit doctor`` asks too."""
    deferred = _fastpaths.enabled("http_deferred_bookkeeping")
    _fastpaths.report("http_deferred_bookkeeping", deferred, "" if deferred else "disabled")
    return deferred


def configure(handle: Handle, user: str) -> ServerState:
    global state

    tracer = None
    if handle.tracer_provider is not None:
        tracer = FastTracer(handle.tracer_provider.get_tracer("obskit.http.server"))
    cat = handle.catalogue
    deferred = probe_fast_path()
    state = ServerState(tracer=tracer, duration=cat.http_server_duration,
                        active=cat.http_server_active,
                        request_id=bool(handle.settings.request_id),
                        server_timing=bool(handle.settings.server_timing),
                        deferred=deferred)
    _users.add(user)
    return state


def release(user: str) -> None:
    global state
    _users.discard(user)
    _users.discard("explicit")  # uninstrument_all() runs every module's uninstrument()
    if not _users:
        state = None


def current() -> ServerState | None:
    """The state; configured lazily from ``obskit.get_handle()`` for explicitly instrumented
    apps."""
    if state is None:
        import obskit

        handle = obskit.get_handle()
        if handle is not None:
            return configure(handle, "explicit")
    return state
