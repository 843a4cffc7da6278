"""Trace pipeline: Resource, sampler, order-attribute span processor and exporters.

Exporting never blocks or breaks the app. Spans are queued in memory and exported by the SDK's
worker thread; when the queue is full (collector slow or dead) a span is dropped *before* the SDK
builds its "Queue full" log record (measured at ~5 µs per span) and ``obskit_telemetry_spans_
dropped_total{reason="queue_full"}`` counts it. A failed export counts its spans as
``reason="export_failed"``.
"""

from __future__ import annotations

import json
import math
import os
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    ParentBased,
    Sampler,
    TraceIdRatioBased,
)

from obskit import _fastpaths
from obskit._config import Settings
from obskit._context import ORDER_CHANNEL_KEY, ORDER_ID_KEY, current_order
from obskit._fastspan import LeanSpan
from obskit._logging import second_prefix
from obskit.metrics import Catalogue

#: This process's ``service.instance.id`` unless the app sets one; a forked worker gets its own.
INSTANCE_ID = str(uuid.uuid4())


def renew_instance_id(resources: Iterable[Any]) -> str:
    """A forked worker is an instance of its own: give it a new ``service.instance.id``.

    The id is replaced in place in ``resources`` (the providers' resources, shared by every
    tracer and span already created) where it is the one obskit generated; an id the app set
    stays. Resources are immutable in the SDK's API, hence the write to their attribute store.
    """
    global INSTANCE_ID
    old, INSTANCE_ID = INSTANCE_ID, str(uuid.uuid4())
    for resource in resources:
        data = getattr(getattr(resource, "_attributes", None), "_dict", None)
        if isinstance(data, dict) and data.get("service.instance.id") == old:
            data["service.instance.id"] = INSTANCE_ID
    return INSTANCE_ID


def build_resource(settings: Settings) -> Resource:
    attrs: dict[str, Any] = dict(settings.resource_attributes)
    attrs.update(
        {
            "service.name": settings.service_name,
            "service.version": settings.service_version,
            "deployment.environment": settings.environment,
            "deployment.environment.name": settings.environment,
            "service.instance.id": attrs.get("service.instance.id", INSTANCE_ID),
            "telemetry.distro.name": "obskit",
        }
    )
    return Resource.create(attrs)


def build_sampler(settings: Settings) -> Sampler:
    name = settings.traces_sampler
    ratio = 1.0 if settings.traces_sampler_arg is None else settings.traces_sampler_arg
    root: Sampler
    if name.endswith("always_on"):
        root = ALWAYS_ON
    elif name.endswith("always_off"):
        root = ALWAYS_OFF
    else:
        root = TraceIdRatioBased(ratio)
    return ParentBased(root) if name.startswith("parentbased_") else root


class OrderSpanProcessor(SpanProcessor):
    """Copies the order context (baggage) onto every span started inside it."""

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        if not span.is_recording():
            return
        order_id, channel = current_order(parent_context)
        if order_id is not None:
            span.set_attribute(ORDER_ID_KEY, order_id)
            if channel is not None:
                span.set_attribute(ORDER_CHANNEL_KEY, channel)


class _QueueTally:
    """How many items a batch processor holds, without reading its private queue.

    The fallback of the ``span_queue_drop`` / ``log_queue_drop`` fast paths: items handed to the
    processor minus items its exporter received. That includes the batch being exported, so a
    full queue is seen up to one batch early — never late: every item dropped is counted, none
    is dropped silently by the SDK.
    """

    __slots__ = ("limit", "pending", "_lock")

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.pending = 0
        self._lock = threading.Lock()

    def admit(self) -> bool:
        """Take a place in the queue; False when it is full."""
        with self._lock:
            if self.pending >= self.limit:
                return False
            self.pending += 1
            return True

    def exported(self, count: int) -> None:
        with self._lock:
            self.pending = max(0, self.pending - count)


def _queue_limit(kwargs: dict[str, Any], env: str) -> int:
    """The ``max_queue_size`` a batch processor resolves from its arguments and ``env``."""
    value = kwargs.get("max_queue_size")
    if value is None:
        try:
            value = int(os.environ.get(env, "") or 2048)
        except ValueError:
            value = 2048
    return max(1, int(value))


def _private_queue(processor: Any, path: str) -> tuple[Any, Any, Any]:
    """``(queue, max_queue_size, emit)`` of the SDK batch processor behind ``processor`` (the
    ``span_queue_drop`` / ``log_queue_drop`` fast paths), or Nones and the reason reported."""
    if not _fastpaths.enabled(path):
        _fastpaths.report(path, False, "disabled")
        return None, None, None
    bp = getattr(processor, "_batch_processor", None)
    queue = getattr(bp, "_queue", None)
    limit = getattr(bp, "_max_queue_size", None)
    emit = getattr(bp, "emit", None)
    if not (isinstance(queue, deque) and type(limit) is int and callable(emit)):
        _fastpaths.report(path, False, f"{type(processor).__name__}._batch_processor has no "
                          "_queue/_max_queue_size/emit: queue counted by obskit")
        return None, None, None
    _fastpaths.report(path, True)
    return queue, limit, emit


class _CountingExporter(SpanExporter):
    """Counts exported and failed spans; a raising exporter becomes a FAILURE, not a crash."""

    def __init__(self, inner: SpanExporter, cat: Catalogue) -> None:
        self.inner = inner
        self._cat = cat
        self.tally: _QueueTally | None = None  # set when the processor counts its queue itself

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        if self.tally is not None:
            self.tally.exported(len(spans))
        try:
            result = self.inner.export(spans)
        except Exception:
            result = SpanExportResult.FAILURE
        if result == SpanExportResult.SUCCESS:
            self._cat.spans_exported.inc(len(spans))
        else:
            self._cat.spans_dropped.labels("export_failed").inc(len(spans))
        return result

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return self.inner.force_flush(timeout_millis)


class DroppingBatchSpanProcessor(BatchSpanProcessor):
    """BatchSpanProcessor that drops silently (and counts) when its queue is full."""

    def __init__(self, exporter: SpanExporter, cat: Catalogue, **kwargs: Any) -> None:
        counting = _CountingExporter(exporter, cat)
        super().__init__(counting, **kwargs)
        self._cat = cat
        self._dropped = cat.spans_dropped.labels("queue_full")
        self._queue, self._max, self._emit = _private_queue(self, "span_queue_drop")
        self._tally: _QueueTally | None = None
        if self._queue is None:
            self._tally = counting.tally = _QueueTally(
                _queue_limit(kwargs, "OTEL_BSP_MAX_QUEUE_SIZE"))

    def on_end(self, span: ReadableSpan) -> None:
        q = self._queue
        if q is not None:
            if len(q) >= self._max:  # type: ignore[operator]
                if span.context is not None and span.context.trace_flags.sampled:
                    self._dropped.inc()
                return
            # BatchSpanProcessor.on_end without a second dispatch
            if span.context is not None and span.context.trace_flags.sampled:
                self._emit(span)  # type: ignore[misc]
            return
        if span.context is None or not span.context.trace_flags.sampled:
            return  # BatchSpanProcessor exports sampled spans only
        if self._tally is not None and not self._tally.admit():
            self._dropped.inc()
            return
        super().on_end(span)


class JsonLinesSpanExporter(SpanExporter):
    """One span per line, in the shape of the SDK's ``ReadableSpan.to_json``, on one line.

    The local fallback when no collector is configured: ``tail -f`` it, or ``jq`` it by trace_id.
    Each span is encoded in one ``json.dumps`` with its resource spliced in as text encoded once
    per resource (``to_json`` pretty-prints and re-encodes the resource per span: ~75 µs per
    span, against ~19 µs here). A value JSON cannot encode is written as its ``str``, so one odd
    attribute never loses the batch.

    The export thread holds the GIL while it encodes, and a thread waiting for the GIL (the
    app's event loop) gets it only after the 5 ms switch interval: a batch of 512 spans made
    requests wait in 5 ms steps. ``export`` offers the GIL every ``_YIELD_EVERY`` spans
    (``time.sleep(0)``, ~0.5 ms of work): measured, p99.9 of a 0.2 ms request went from 5.4 to
    1.4–1.8 ms (docs/performance.md). An offer is not a guarantee: the export thread may take
    the GIL back before the waiting thread wakes.

    Past ``max_bytes`` the file is renamed to ``<path>.1`` (replacing the previous one) and a new
    one is started, so a long-running service without a collector does not fill the disk. Other
    processes appending to the same file notice the rename and reopen the new one.
    """

    def __init__(self, path: str, max_bytes: int = 0) -> None:
        self.path = path
        self.max_bytes = max_bytes  # 0: never rotated
        self._lock = threading.Lock()
        self._file: Any = None
        # id(resource) -> (resource, INSTANCE_ID when encoded, its JSON): the resource is held
        # so its id cannot be reused; a fork's new instance id re-encodes it.
        self._resources: dict[int, tuple[Resource, str, str]] = {}

    def _open(self) -> Any:
        if self._file is None or self._file.closed:
            if self.path == "-":
                import sys

                self._file = sys.stderr
            else:
                os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
                self._file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115
        elif self.max_bytes and self.path != "-":
            self._rotate_if_full()
        return self._file

    def _rotate_if_full(self) -> None:
        st = os.fstat(self._file.fileno())
        if st.st_size < self.max_bytes:
            return
        try:
            current = os.stat(self.path)
            ours = (current.st_ino, current.st_dev) == (st.st_ino, st.st_dev)
        except FileNotFoundError:
            ours = False
        if ours:  # not already rotated by another process sharing the file
            os.replace(self.path, self.path + ".1")
        self._file.close()
        self._file = None
        self._open()

    def _resource_json(self, resource: Resource) -> str:
        cached = self._resources.get(id(resource))
        if cached is not None and cached[0] is resource and cached[1] == INSTANCE_ID:
            return cached[2]
        text = json.dumps(json.loads(resource.to_json(indent=None)), separators=(",", ":"))
        if len(self._resources) > 16:  # providers come and go only in tests
            self._resources.clear()
        self._resources[id(resource)] = (resource, INSTANCE_ID, text)
        return text

    def encode(self, span: ReadableSpan) -> str:
        """``span`` as one line of JSON, equal to ``json.loads(span.to_json())`` when decoded."""
        ctx, parent, status = span.context, span.parent, span.status
        body: dict[str, Any] = {
            "name": span.name,
            "context": _context_json(ctx) if ctx else None,
            "kind": _KIND_NAMES.get(span.kind) or str(span.kind),
            "parent_id": f"0x{parent.span_id:016x}" if parent is not None else None,
            "start_time": _iso(span.start_time) if span.start_time else None,
            "end_time": _iso(span.end_time) if span.end_time else None,
            "status": ({"status_code": status.status_code.name, "description":
                        status.description} if status.description
                       else {"status_code": status.status_code.name}),
            "attributes": _attributes_json(span.attributes),
            "events": [{"name": e.name, "timestamp": _iso(e.timestamp),
                        "attributes": _attributes_json(e.attributes)} for e in span.events],
            "links": [{"context": _context_json(link.context),
                       "attributes": _attributes_json(link.attributes)} for link in span.links],
        }
        head = json.dumps(body, separators=(",", ":"), default=str)
        return f'{head[:-1]},"resource":{self._resource_json(span.resource)}}}'

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        try:
            lines = []
            for i, span in enumerate(spans, 1):
                lines.append(self.encode(span))
                if not i % _YIELD_EVERY:
                    time.sleep(0)  # let a waiting thread have the GIL now, not in 5 ms
            with self._lock:
                f = self._open()
                f.write("\n".join(lines) + "\n")
                f.flush()
            return SpanExportResult.SUCCESS
        except Exception:
            return SpanExportResult.FAILURE

    def shutdown(self) -> None:
        with self._lock:
            if self._file is not None and self.path != "-":
                self._file.close()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


#: Spans encoded between two offers of the GIL (~0.5 ms of work, see ``export``).
_YIELD_EVERY = 24
_KIND_NAMES = {kind: str(kind) for kind in trace.SpanKind}


def _context_json(ctx: trace.SpanContext) -> dict[str, str]:
    state = ctx.trace_state
    return {"trace_id": f"0x{ctx.trace_id:032x}", "span_id": f"0x{ctx.span_id:016x}",
            "trace_state": repr(state) if len(state) else "[]"}


def _attributes_json(attributes: Any) -> dict[str, Any] | None:
    if attributes is None or isinstance(attributes, dict):
        return attributes
    return dict(attributes)


def _iso(ns: int) -> str:
    """``opentelemetry.sdk.util.ns_to_iso_str(ns)``, the same string (microseconds rounded half
    to even from the float, as ``datetime.fromtimestamp``) at a quarter of the cost: the date
    and time of day come from the log lines' once-per-second cache."""
    frac, whole = math.modf(ns / 1e9)
    us, sec = round(frac * 1e6), int(whole)
    if us >= 1_000_000:
        sec, us = sec + 1, us - 1_000_000
    return f"{second_prefix(sec)}{us:06d}Z"


#: The OTLP request's layers for spans and for log records: (resources, scopes, items).
SPAN_LAYERS = ("resource_spans", "scope_spans", "spans")
LOG_LAYERS = ("resource_logs", "scope_logs", "log_records")


def encode_in_steps(items: Sequence[Any], encode: Callable[[Sequence[Any]], Any] | None = None,
                    layers: tuple[str, str, str] = SPAN_LAYERS) -> Any:
    """The OTLP export request of ``items`` as ``encode`` (the SDK's ``encode_spans`` by
    default, or ``encode_logs`` with ``LOG_LAYERS``) makes it, encoded ``_YIELD_EVERY`` items at
    a time with the GIL offered in between.

    The SDK's protobuf encoding takes ~50 µs per span in the export thread; a full batch of 512
    held the GIL ~25 ms, and the app's event loop waited in 5 ms switch intervals (p99.9 of a
    0.2 ms request: 10.5 ms; 3.3–4.2 ms in steps). The steps' resource and scope entries are
    merged: the request equals one ``encode`` call's.
    """
    if encode is None:
        from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans

        encode = encode_spans
    if len(items) <= _YIELD_EVERY:
        return encode(items)
    resources_of, scopes_of, items_of = layers
    request = None
    scopes: dict[tuple[bytes, str, bytes, str], Any] = {}
    for start in range(0, len(items), _YIELD_EVERY):
        if start:
            time.sleep(0)  # let a waiting thread have the GIL now, not in 5 ms
        part = encode(items[start:start + _YIELD_EVERY])
        if request is None:
            request = part
            for rs in getattr(request, resources_of):
                for ss in getattr(rs, scopes_of):
                    scopes[_scope_key(rs, ss)] = ss
            continue
        for rs in getattr(part, resources_of):
            for ss in getattr(rs, scopes_of):
                key = _scope_key(rs, ss)
                target = scopes.get(key)
                if target is None:  # a resource or scope not seen in the earlier steps
                    target_rs = next((r for r in getattr(request, resources_of)
                                      if (r.resource.SerializeToString(deterministic=True),
                                          r.schema_url) == key[:2]), None)
                    if target_rs is None:
                        target_rs = getattr(request, resources_of).add()
                        target_rs.resource.CopyFrom(rs.resource)
                        target_rs.schema_url = rs.schema_url
                    target = scopes[key] = getattr(target_rs, scopes_of).add()
                    target.scope.CopyFrom(ss.scope)
                    target.schema_url = ss.schema_url
                getattr(target, items_of).extend(getattr(ss, items_of))
    return request


def _scope_key(rs: Any, ss: Any) -> tuple[bytes, str, bytes, str]:
    return (rs.resource.SerializeToString(deterministic=True), rs.schema_url,
            ss.scope.SerializeToString(deterministic=True), ss.schema_url)


def _overrides_translate(exporter_class: Any) -> bool:
    """True when the SDK exporter has the ``_translate_data`` hook the stepped exporters
    override (tests/test_fastpaths.py checks that ``export`` really calls it)."""
    return callable(getattr(exporter_class, "_translate_data", None))


def _stepped(path: str, exporter_class: Any, encode: Any = None,
             layers: tuple[str, str, str] = SPAN_LAYERS) -> Any:
    """``exporter_class`` encoding a batch in steps (``encode_in_steps``) when the fast path
    ``path`` is on and the class has the hook to override; decides and reports it."""
    if not _fastpaths.enabled(path):
        _fastpaths.report(path, False, "disabled")
        return exporter_class
    if not _overrides_translate(exporter_class):
        _fastpaths.report(path, False,
                          f"{exporter_class.__name__} does not encode through _translate_data")
        return exporter_class

    class Stepped(exporter_class):  # type: ignore[misc,valid-type]
        def _translate_data(self, data: Sequence[Any]) -> Any:
            return encode_in_steps(data, encode, layers)

    Stepped.__name__ = Stepped.__qualname__ = f"Stepped{exporter_class.__name__}"
    _fastpaths.report(path, True)
    return Stepped


def grpc_span_exporter_class() -> Any:
    """The SDK's gRPC OTLP span exporter, stepped when ``stepped_otlp_spans`` is on."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    return _stepped("stepped_otlp_spans", OTLPSpanExporter)


def grpc_log_exporter_class() -> Any:
    """The SDK's gRPC OTLP log exporter, stepped when ``stepped_otlp_logs`` is on."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter

    try:  # the encoder's module is the SDK's own (private) one: without it, plain export
        from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
    except ImportError:
        if _fastpaths.enabled("stepped_otlp_logs"):
            _fastpaths.report("stepped_otlp_logs", False,
                              "opentelemetry.exporter.otlp.proto.common._log_encoder is missing")
        else:
            _fastpaths.report("stepped_otlp_logs", False, "disabled")
        return OTLPLogExporter
    return _stepped("stepped_otlp_logs", OTLPLogExporter, encode_logs, LOG_LAYERS)


def _otlp_span_exporter(settings: Settings) -> SpanExporter:
    endpoint = settings.otlp_endpoint.rstrip("/")
    headers = settings.otlp_headers or None
    if settings.otlp_protocol == "grpc":
        insecure = endpoint.startswith("http://")
        return grpc_span_exporter_class()(endpoint=endpoint, headers=headers, insecure=insecure,
                                          timeout=settings.otlp_timeout)
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return HttpSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers,
                            timeout=settings.otlp_timeout)


def _otlp_log_exporter(settings: Settings) -> Any:
    endpoint = settings.otlp_endpoint.rstrip("/")
    headers = settings.otlp_headers or None
    if settings.otlp_protocol == "grpc":
        return grpc_log_exporter_class()(endpoint=endpoint, headers=headers,
                                         insecure=endpoint.startswith("http://"),
                                         timeout=settings.otlp_timeout)
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )

    return HttpLogExporter(endpoint=f"{endpoint}/v1/logs", headers=headers,
                           timeout=settings.otlp_timeout)


class HandoffSpanProcessor(SpanProcessor):
    """Sampled spans to the export process (``obskit._export_process``): on the request's
    thread, only a queue append."""

    def __init__(self, link: Any) -> None:
        self._link = link
        self._add = link.add_span

    def on_end(self, span: ReadableSpan) -> None:
        ctx = span.context
        if ctx is not None and ctx.trace_flags.sampled:
            self._add(span)

    def shutdown(self) -> None:
        self._link.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._link.force_flush(timeout_millis))


class HandoffLogs:
    """What ``init()`` keeps as its logger provider when log records go to the export process:
    ``add_log`` (``_logging._OtlpExport`` calls it), flush and shutdown, and the records'
    resource (renewed in a forked worker like the SDK provider's)."""

    def __init__(self, link: Any, resource: Resource) -> None:
        self.add_log = link.add_log
        self.resource = resource
        self._link = link

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._link.force_flush(timeout_millis))

    def shutdown(self) -> None:
        self._link.shutdown()


#: Attribute limits the SDK would apply to log records: with any of them set, the export
#: process leaves encoding to the SDK (which applies them).
_LOG_LIMIT_ENVS = ("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", "OTEL_ATTRIBUTE_COUNT_LIMIT",
                   "OTEL_LOGRECORD_ATTRIBUTE_VALUE_LENGTH_LIMIT",
                   "OTEL_LOGRECORD_ATTRIBUTE_COUNT_LIMIT")


def direct_otlp_encoding(protocol: str) -> bool:
    """Whether the export process writes its OTLP requests itself (``direct_otlp_encoding``);
    decides and reports it."""
    path = "direct_otlp_encoding"
    if not _fastpaths.enabled(path):
        _fastpaths.report(path, False, "disabled")
        return False
    if protocol != "grpc":
        _fastpaths.report(path, False, "not needed: OTLP over HTTP is encoded by the SDK")
        return False
    limits = [env for env in _LOG_LIMIT_ENVS if os.environ.get(env)]
    if limits:
        _fastpaths.report(path, False, f"{', '.join(limits)} set: the SDK applies it")
        return False
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

    missing = [c.__name__ for c in (OTLPSpanExporter, OTLPLogExporter)
               if not _overrides_translate(c)]
    if missing:
        _fastpaths.report(path, False, f"{', '.join(missing)} do not encode through "
                          "_translate_data")
        return False
    _fastpaths.report(path, True)
    return True


def export_link(settings: Settings, cat: Catalogue, log_resource: Resource | None) -> Any:
    """The service's end of the export process (``obskit._export_process``), with its counts
    going to ``cat``; ``log_resource`` None: no log records are exported."""
    from obskit import _export_process

    for reason in ("queue_full", "export_failed"):  # series from the start, at 0 (dashboards)
        cat.spans_dropped.labels(reason)
        cat.logs_dropped.labels(reason)

    def on_counts(kind: str, exported: int, dropped: dict[str, int]) -> None:
        if kind == "spans":
            if exported:
                cat.spans_exported.inc(exported)
            for reason, n in dropped.items():
                cat.spans_dropped.labels(reason).inc(n)
        else:
            for reason, n in dropped.items():
                cat.logs_dropped.labels(reason).inc(n)

    def on_dropped(kind: str, n: int) -> None:
        on_counts(kind, 0, {"queue_full": n})

    direct = direct_otlp_encoding(settings.otlp_protocol)
    return _export_process.ExportLink(
        lambda: _export_process.child_config(settings, log_resource, direct), on_counts,
        on_dropped)


def span_processors(settings: Settings, cat: Catalogue,
                    link: Any = None) -> list[SpanProcessor]:
    processors: list[SpanProcessor] = [OrderSpanProcessor()]
    exporter: SpanExporter | None = None
    if link is not None:
        processors.append(HandoffSpanProcessor(link))
    elif settings.otlp_endpoint:
        exporter = _otlp_span_exporter(settings)
    elif settings.resolved_spans_file:
        exporter = JsonLinesSpanExporter(settings.resolved_spans_file,
                                         int(settings.spans_file_max_mb * 1024 * 1024))
    if exporter is not None:
        processors.append(DroppingBatchSpanProcessor(exporter, cat))
    return processors


def setup_tracer_provider(settings: Settings, cat: Catalogue,
                          provider: TracerProvider | None = None,
                          link: Any = None) -> TracerProvider:
    """Our processors on ``provider`` (or the global SDK one, or a new global one)."""
    if provider is None:
        current = trace.get_tracer_provider()
        if isinstance(current, TracerProvider):
            provider = current  # the app set one up: add to it rather than fight over it
        else:
            provider = TracerProvider(resource=build_resource(settings),
                                      sampler=build_sampler(settings), shutdown_on_exit=False)
            trace.set_tracer_provider(provider)
    for p in span_processors(settings, cat, link):
        provider.add_span_processor(p)
    return provider


class _TallyingLogExporter:
    """A log exporter that tells the processor's ``_QueueTally`` what left its queue."""

    def __init__(self, inner: Any, tally: _QueueTally) -> None:
        self.inner = inner
        self.tally = tally

    def export(self, batch: Sequence[Any]) -> Any:
        self.tally.exported(len(batch))
        return self.inner.export(batch)

    def shutdown(self) -> None:
        self.inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self.inner.force_flush(timeout_millis))


class _CountingLogProcessor:
    """A BatchLogRecordProcessor that counts drops on a full queue instead of logging each."""

    def __init__(self, exporter: Any, cat: Catalogue, **kwargs: Any) -> None:
        from opentelemetry.sdk._logs.export import BatchLogRecordProcessor

        self._tally = _QueueTally(_queue_limit(kwargs, "OTEL_BLRP_MAX_QUEUE_SIZE"))
        self._inner = BatchLogRecordProcessor(
            _TallyingLogExporter(exporter, self._tally), **kwargs)  # type: ignore[arg-type]
        self._queue, self._max, _ = _private_queue(self._inner, "log_queue_drop")
        self._dropped = cat.logs_dropped.labels("queue_full")

    def on_emit(self, log_record: Any) -> None:
        q = self._queue
        if q is not None:
            if len(q) >= self._max:  # type: ignore[operator]
                self._dropped.inc()
                return
        elif not self._tally.admit():
            self._dropped.inc()
            return
        self._inner.on_emit(log_record)

    emit = on_emit

    def shutdown(self) -> None:
        self._inner.shutdown()

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return bool(self._inner.force_flush(timeout_millis))


def build_logger_provider(settings: Settings, resource: Resource, cat: Catalogue) -> Any:
    from opentelemetry.sdk._logs import LoggerProvider

    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(
        _CountingLogProcessor(_otlp_log_exporter(settings), cat)  # type: ignore[arg-type]
    )
    return provider


def set_attributes_fast(span: Any, attributes: dict[str, Any]) -> None:
    """Set attributes that obskit built itself on a recording SDK span.

    The SDK validates and locks per attribute (~0.7 µs each, ~30 % of a server span's cost);
    obskit's own values are already valid OTel types, so they go straight into the span's
    attribute store (the ``span_attributes_direct`` fast path). Anything unexpected — another
    SDK version, limits that could be exceeded, a value-length limit, a non-SDK span — takes the
    public ``set_attributes`` path.
    """
    if type(span) is LeanSpan:
        span.set_trusted_attributes(attributes)
        return
    if _direct_attributes:
        store = getattr(span, "_attributes", None)
        data = getattr(store, "_dict", None)
        if (type(data) is dict and getattr(store, "_immutable", True) is False
                and getattr(store, "max_value_len", 0) is None
                and len(data) + len(attributes) <= (getattr(store, "maxlen", 0) or 0)):
            data.update(attributes)
            return
    span.set_attributes(attributes)


def _check_direct_attributes() -> bool:
    """Decide (once, at import) and report ``span_attributes_direct``: a direct write must read
    back from an SDK span like ``set_attributes``."""
    global _direct_attributes
    _direct_attributes = False
    if not _fastpaths.enabled("span_attributes_direct"):
        _fastpaths.report("span_attributes_direct", False, "disabled")
        return False
    reason = ""
    try:
        span = TracerProvider(sampler=ALWAYS_ON, shutdown_on_exit=False).get_tracer(
            "obskit.check").start_span("check")
        _direct_attributes = True
        set_attributes_fast(span, {"a": 1, "b": "x"})
        store = getattr(span, "_attributes", None)
        data = getattr(store, "_dict", None)
        if type(data) is not dict or data != {"a": 1, "b": "x"}:
            reason = "Span._attributes is not a BoundedAttributes with a _dict"
        elif getattr(store, "max_value_len", 0) is not None:
            reason = "a span attribute length limit is set"
        elif dict(span.attributes) != {"a": 1, "b": "x"}:  # type: ignore[attr-defined]
            reason = "a direct write does not read back from Span.attributes"
    except Exception as exc:
        reason = f"{type(exc).__name__}: {exc}"
    _direct_attributes = not reason
    _fastpaths.report("span_attributes_direct", _direct_attributes, reason)
    return _direct_attributes


_direct_attributes = False
_check_direct_attributes()


def probe_fast_paths() -> None:
    """Decide (and report) the exporter fast paths with throwaway processors: ``obskit doctor``.
    ``span_attributes_direct`` decided at import."""
    from opentelemetry.sdk._logs.export import BatchLogRecordProcessor, InMemoryLogExporter
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

    for processor, path in ((BatchSpanProcessor(InMemorySpanExporter()), "span_queue_drop"),
                            (BatchLogRecordProcessor(InMemoryLogExporter()), "log_queue_drop")):
        try:
            _private_queue(processor, path)
        finally:
            processor.shutdown()
    grpc_span_exporter_class()
    grpc_log_exporter_class()
    direct_otlp_encoding("grpc")
