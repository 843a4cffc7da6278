"""State shared by obskit's server middlewares (ASGI and WSGI): one tracer, the RED families.

``configure()`` is called by the framework integrations' ``instrument()``; middleware instances
read the module-level ``state`` on every request, so an app built while obskit was initialised
becomes a pass-through after ``shutdown()`` and picks up a new ``init()``.
"""

from __future__ import annotations

from dataclasses import dataclass
from random import getrandbits as _getrandbits
from time import perf_counter
from typing import TYPE_CHECKING, Any

from obskit._context import current_order
from obskit._fastspan import FastTracer

if TYPE_CHECKING:
    from obskit._init import Handle

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
    return f"{_getrandbits(128):032x}"


SERVER_TIMING = "server-timing"


def server_timing(start: float) -> str:
    """The ``Server-Timing`` value for a response starting now (``start``: perf_counter)."""
    return f"app;dur={(perf_counter() - start) * 1000:.3f}"


def add_request_fields(fields: dict[str, Any], request: dict[str, Any],
                       baggage: bool = True) -> None:
    """Copy what the handler put on the request (order id, channel, app fields) onto the line.

    ``baggage=False``: the request carried no baggage header, so there is no caller's order.
    """
    order_id = request.get("order_id")
    channel = request.get("channel")
    if order_id is None and baggage:  # no order_context in the handler: the caller's baggage
        order_id, channel = current_order()
    if order_id is not None:
        fields["order_id"] = order_id
        if channel is not None:
            fields["channel"] = channel
    extra = request.get("extra")
    if extra:
        for k, v in extra.items():
            fields.setdefault(k, v)


state: ServerState | None = None
_users: set[str] = set()  # integrations that asked for the state (fastapi, starlette, flask)


def configure(handle: Handle, user: str) -> ServerState:
    global state

    tracer = None
    if handle.tracer_provider is not None:
        tracer = FastTracer(handle.tracer_provider.get_tracer("obskit.http.server"))
    cat = handle.catalogue
    state = ServerState(tracer=tracer, duration=cat.http_server_duration,
                        active=cat.http_server_active,
                        request_id=bool(handle.settings.request_id),
                        server_timing=bool(handle.settings.server_timing))
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
