"""Bookkeeping shared by publisher and consumer: metrics, tracer, logger, never-crash wrappers."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from opentelemetry import trace
from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY, Context
from opentelemetry.context import set_value as _set_value
from opentelemetry.trace import INVALID_SPAN, Link, Span, SpanKind
from prometheus_client import CollectorRegistry

from obskit._fastspan import FastTracer
from obskit._internal import internal_error
from obskit._semconv import (  # noqa: F401 - re-exported for this package
    ATTR_BODY_SIZE,
    ATTR_CONVERSATION_ID,
    ATTR_DELIVERY_COUNT,
    ATTR_DELIVERY_TAG,
    ATTR_DESTINATION,
    ATTR_ERROR_TYPE,
    ATTR_MESSAGE_ID,
    ATTR_OPERATION_NAME,
    ATTR_OPERATION_TYPE,
    ATTR_ROUTING_KEY,
    ATTR_SERVER_ADDRESS,
    ATTR_SERVER_PORT,
    ATTR_SUBSCRIPTION,
    ATTR_SYSTEM,
    MESSAGING_SYSTEM_RABBITMQ,
)
from obskit._tracing import set_attributes_fast
from obskit.metrics import Catalogue, catalogue

SYSTEM = MESSAGING_SYSTEM_RABBITMQ
COMPONENT = "rabbitmq"


def get_logger(name: str) -> Any:
    try:
        from obskit import get_logger as _get

        return _get(name)
    except Exception:  # the core may be mid-refactor; structlog is equivalent
        import structlog

        return structlog.get_logger(name)


class Telemetry:
    """Metric children, tracer and logger for one publisher/consumer. Every method is safe."""

    def __init__(self, tracer_provider: trace.TracerProvider | None,
                 registry: CollectorRegistry | None) -> None:
        self.metrics: Catalogue = catalogue(registry)
        self.registry = registry
        self.tracer = FastTracer(trace.get_tracer("obskit.rabbitmq",
                                                  tracer_provider=tracer_provider))
        self.log = get_logger("obskit.rabbitmq")
        self.service = service_name(tracer_provider)

    def start_span(self, name: str, kind: SpanKind,
                   attributes: Mapping[str, Any] | Callable[[], Mapping[str, Any]],
                   context: Context | None = None,
                   links: Sequence[Link] | None = None) -> Span:
        """A started (not current) span; a non-recording one if the tracer fails.

        ``attributes`` may be a function that builds them: called only for a recording span.
        A broken tracer provider costs the message its span, never the message.
        """
        try:
            # Attributes after the sampling decision, on the fast path: obskit's samplers do
            # not look at attributes, and unsampled messages never pay for them.
            span = self.tracer.start_span(name, context, kind, None, links)
            if span.is_recording():
                if callable(attributes):
                    attributes = attributes()
                set_attributes_fast(span, dict(attributes))
            return span
        except Exception as exc:
            _report(exc)
            return INVALID_SPAN

    @staticmethod
    def safe(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except Exception as exc:
            _report(exc)
            return None


def report(exc: BaseException) -> None:
    """Count and log a telemetry error; never raises (the message matters more)."""
    try:
        internal_error(COMPONENT, exc)
    except Exception:
        pass


_report = report


@contextmanager
def guarded() -> Iterator[None]:
    """Swallow (and count) telemetry errors inside the block."""
    try:
        yield
    except Exception as exc:
        _report(exc)


def end_span(span: Span) -> None:
    try:
        span.end()
    except Exception as exc:
        _report(exc)


def suppress_in(context: Context) -> Context:
    """``context`` with generic aio-pika instrumentation switched off (see ``suppressed``)."""
    return _set_value(_SUPPRESS_INSTRUMENTATION_KEY, True, context)


def service_name(tracer_provider: trace.TracerProvider | None = None) -> str:
    """``service.name`` of the SDK tracer provider's resource (what ``obskit.init`` set)."""
    provider = tracer_provider or trace.get_tracer_provider()
    resource = getattr(provider, "resource", None)
    name = resource.attributes.get("service.name") if resource is not None else None
    return str(name) if name else "unknown_service"


def utc_now_iso() -> str:
    now = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1000):03d}Z"


try:  # ~4x faster than json for a typical order body; json stays the fallback
    import orjson as _orjson
except ImportError:  # pragma: no cover - a core dependency
    _orjson = None  # type: ignore[assignment]
# datetimes and dataclasses through default=str, as json.dumps(default=str) writes them.
_ORJSON_OPTS = (_orjson.OPT_PASSTHROUGH_DATETIME | _orjson.OPT_PASSTHROUGH_DATACLASS
                if _orjson is not None else 0)


def encode_body(body: Any, content_type: str | None) -> tuple[bytes, str]:
    if isinstance(body, bytes | bytearray | memoryview):
        return bytes(body), content_type or "application/octet-stream"
    if isinstance(body, str):
        return body.encode(), content_type or "text/plain; charset=utf-8"
    if _orjson is not None:
        try:
            return (_orjson.dumps(body, default=str, option=_ORJSON_OPTS),
                    content_type or "application/json")
        except (TypeError, ValueError):  # non-str keys, huge ints...: the standard library's way
            pass
    return (json.dumps(body, separators=(",", ":"), default=str).encode(),
            content_type or "application/json")


def header_str(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes | bytearray):
        return bytes(value).decode("utf-8", "replace")
    return str(value)


@contextmanager
def suppressed() -> Iterator[None]:
    """Switch off generic aio-pika instrumentation (obskit.integrations.aio_pika) inside.

    This layer records its own spans and metrics; without this a message would count twice.
    """
    from opentelemetry import context as otel_context
    from opentelemetry.context import _SUPPRESS_INSTRUMENTATION_KEY

    token = otel_context.attach(otel_context.set_value(_SUPPRESS_INSTRUMENTATION_KEY, True))
    try:
        yield
    finally:
        otel_context.detach(token)
