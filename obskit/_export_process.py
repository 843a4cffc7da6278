"""OTLP export in a helper process: the service hands its finished spans and log records over a
pipe, a child process encodes and sends them.

Why: with a live collector, the SDK's protobuf encoding is pure Python (~50 µs per span, ~60 µs
per log record) and runs in the service's process, on the GIL its requests need: a trivial
FastAPI service kept 0.32 of its bare throughput (docs/explanation/performance.md). Here the
service only turns each item into a tuple of plain values and ``marshal``s a batch (a few µs per
item, in a background thread); the child rebuilds the SDK's own ``ReadableSpan`` and log record
objects from them and exports them with the SDK's own OTLP exporters, on the other core. What
reaches the collector is what the in-process SDK would send (tests/test_export_process.py
compares the two encodings).

Contracts the host relies on:

- Nothing here blocks the service: the pipe is non-blocking; when it is full (the child cannot
  keep up, or the collector is down and the child's queue is full) the batch is dropped and
  counted in ``obskit_telemetry_*_dropped_total{reason="queue_full"}``.
- The child reports what it exported and what failed (``reason="export_failed"``), and forwards
  its warnings (the SDK's "collector unavailable") to the service's log.
- The child ends when the service ends (end of file on its pipe), after sending what it holds;
  a child that dies is started again (at most once per ``RESPAWN_SECONDS``); a forked service
  process starts a child of its own.

Wire format, both ways: frames of a 4-byte little-endian length and a ``marshal``ed tuple (the
child runs the same interpreter, so the marshal version matches).
"""

from __future__ import annotations

import contextlib
import functools
import itertools
import json
import logging
import marshal
import os
import struct
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import Any, BinaryIO

import orjson

from obskit._fastspan import LeanSpan

_HEADER = struct.Struct("<I")
#: Items per frame, and how many wait in the service before new ones are dropped (the SDK
#: batch processors' defaults: 512 and 2048).
BATCH = 512
MAX_QUEUE = 2048
#: How often the service's hand-over thread sends what is waiting.
INTERVAL = 0.2
RESPAWN_SECONDS = 1.0
#: The pipe's buffer (Linux raises it to this when allowed; 64 KiB otherwise).
PIPE_BYTES = 1 << 20
_F_SETPIPE_SZ = 1031
#: The SDK's default attribute count limit of a log record (``LogRecordLimits``).
LOG_ATTRIBUTE_LIMIT = 128

_log = logging.getLogger("obskit.export")


# --- the service's side ----------------------------------------------------------------------

def _trace_state(ts: Any) -> tuple[tuple[str, str], ...] | None:
    return tuple(ts.items()) if ts else None


def _context_tuple(ctx: Any) -> tuple[int, int, int, bool, Any]:
    return (ctx.trace_id, ctx.span_id, int(ctx.trace_flags), bool(ctx.is_remote),
            _trace_state(ctx.trace_state))


def _attrs(attributes: Any) -> dict[str, Any] | None:
    return dict(attributes) if attributes else None


def _values(name: str, ctx: Any, parent: Any, kind: Any, start: int | None, end: int | None,
            status: Any, attributes: dict[str, Any] | None, events: Any, links: Any,
            dropped: tuple[int, int, int], resource_index: int,
            scope_index: int) -> tuple[Any, ...]:
    """A span's values in the order ``rebuild_spans`` and ``_otlp_encode`` read them."""
    return (name, ctx.trace_id, ctx.span_id, int(ctx.trace_flags),
            _trace_state(ctx.trace_state),
            None if parent is None else _context_tuple(parent),
            kind.value, start, end, status.status_code.value, status.description, attributes,
            tuple((e.name, e.timestamp, _attrs(e.attributes), e.dropped_attributes)
                  for e in events) if events else None,
            tuple((_context_tuple(link.context), _attrs(link.attributes), link.dropped_attributes)
                  for link in links) if links else None,
            *dropped, resource_index, scope_index)


def span_tuple(span: Any, resource_index: int, scope_index: int) -> tuple[Any, ...]:
    """A finished SDK span as plain values (``rebuild_spans`` makes it an SDK span again)."""
    return _values(span.name, span.context, span.parent, span.kind, span.start_time,
                   span.end_time, span.status, _attrs(span.attributes), span.events, span.links,
                   (span.dropped_attributes, span.dropped_events, span.dropped_links),
                   resource_index, scope_index)


def lean_span_tuple(span: Any, resource_index: int, scope_index: int) -> tuple[Any, ...]:
    """``span_tuple`` of obskit's own ``LeanSpan`` (its HTTP and messaging spans): read from the
    fields it set itself, without the ``ReadableSpan`` properties' copies (a third of the
    cost per span)."""
    events, links = span._events, span._links
    return _values(span._name, span._context, span._parent, span._kind, span._start_time,
                   span._end_time, span._status, span._attributes or None, events, links,
                   (span._dropped, span.dropped_events if events else 0,
                    span.dropped_links if links else 0),
                   resource_index, scope_index)


def spans_frame(spans: Sequence[Any]) -> bytes:
    """One frame with ``spans`` and the resources and scopes they refer to (by index)."""
    resources: dict[int, int] = {}
    scopes: dict[int, int] = {}
    resource_table: list[tuple[Any, ...]] = []
    scope_table: list[tuple[Any, ...] | None] = []
    items = []
    for span in spans:
        resource = span.resource
        r = resources.get(id(resource))
        if r is None:
            r = resources[id(resource)] = len(resource_table)
            resource_table.append((dict(resource.attributes), resource.schema_url))
        scope = span.instrumentation_scope
        s = scopes.get(id(scope))
        if s is None:
            s = scopes[id(scope)] = len(scope_table)
            scope_table.append(None if scope is None else (
                scope.name, scope.version, scope.schema_url, _attrs(scope.attributes)))
        items.append(lean_span_tuple(span, r, s) if type(span) is LeanSpan
                     else span_tuple(span, r, s))
    return _frame(("spans", resource_table, scope_table, items))


def _frame(payload: tuple[Any, ...]) -> bytes:
    try:
        body = marshal.dumps(payload)
    except ValueError:  # a subclass somewhere (an IntEnum attribute, a str subclass)
        body = marshal.dumps(_plain(payload))
    return _HEADER.pack(len(body)) + body


_PLAIN = (str, int, float, bool, bytes, type(None))


def _plain(value: Any) -> Any:
    """``value`` with what marshal refuses made plain, as the OTLP encoder sees it: subclasses
    of int, float, str and bytes as their base type; other mappings and sequences as dicts and
    tuples; anything else as its ``str()``."""
    if type(value) in _PLAIN:
        return value
    base: Any
    for base in (bool, int, float, str, bytes):
        if isinstance(value, base):
            return base(value)
    if isinstance(value, Mapping):
        return {_plain(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if isinstance(value, Sequence):
        return tuple(_plain(v) for v in value)
    return str(value)


#: In a forked process, its parent's export process handles: kept, never closed or reaped here.
_PARENTS: list[Any] = []


class ExportLink:
    """The service's end: queues of finished spans and log records, the thread that hands them
    to the child, and the child process itself.

    ``config()`` is what the child needs to build its exporters (``child_config``), read
    when a child starts (a forked worker's has its own ``service.instance.id``).
    ``on_counts(kind, exported, dropped_by_reason)`` receives what the child reports.
    """

    def __init__(self, config: Callable[[], dict[str, Any]],
                 on_counts: Callable[[str, int, dict[str, int]], None],
                 on_dropped: Callable[[str, int], None]) -> None:
        self.config = config
        self._on_counts = on_counts
        self._on_dropped = on_dropped  # (kind, n): dropped here, before the child
        self.spans: deque[Any] = deque()
        self.logs: deque[tuple[Any, ...]] = deque()
        self._wake = threading.Event()
        self._send_lock = threading.Lock()
        self._flushed = threading.Condition()
        self._acked = 0
        self._tokens = itertools.count(1)
        self._proc: subprocess.Popen[bytes] | None = None
        self._fd = -1
        self._tail = b""
        self._spawned_at = 0.0
        self._closed = False
        self._pid = os.getpid()
        self._thread: threading.Thread | None = None
        self._start_thread()

    # -- producers (the service's threads) ------------------------------------------------
    def add_span(self, span: Any) -> None:
        q = self.spans
        if len(q) >= MAX_QUEUE:
            self._on_dropped("spans", 1)
            return
        q.append(span)
        if len(q) == BATCH:
            self._wake.set()

    def add_log(self, record: tuple[Any, ...]) -> None:
        """``record``: (observed ns, trace id, span id, trace flags, the line's fields as
        ``_logging.fields_snapshot`` froze them) (``log_record`` makes the record's values in
        the export process)."""
        q = self.logs
        if len(q) >= MAX_QUEUE:
            self._on_dropped("logs", 1)
            return
        q.append(record)
        if len(q) == BATCH:
            self._wake.set()

    # -- the hand-over thread -----------------------------------------------------------------
    def _start_thread(self) -> None:
        self._thread = threading.Thread(target=self._run, name="obskit-export", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._closed:
            self._wake.wait(INTERVAL)
            self._wake.clear()
            try:
                self.send_pending()
            except Exception as exc:  # the thread must live on: telemetry never stops the host
                from obskit._internal import internal_error

                internal_error("export.handover", exc)

    def send_pending(self) -> None:
        """Hand everything queued to the child (frames of ``BATCH``)."""
        with self._send_lock:
            for kind, q in (("spans", self.spans), ("logs", self.logs)):
                pop = q.popleft
                while q:
                    # Only this thread takes from the queues (under the lock): n are there.
                    items = [pop() for _ in range(min(len(q), BATCH))]
                    if kind == "spans":
                        data = spans_frame(items)
                    else:
                        data = _frame(("logs", items))
                    if not self._write(data):
                        self._on_dropped(kind, len(items))

    def _ensure_child(self) -> bool:
        if self._proc is not None and self._proc.poll() is None:
            return True
        if self._closed or time.monotonic() - self._spawned_at < RESPAWN_SECONDS:
            return False
        self._spawned_at = time.monotonic()
        self._close_pipe()
        try:
            self._spawn()
        except Exception as exc:  # no child, no export: counted as drops, the host runs on
            _log.warning("obskit: cannot start the export process: %s", exc)
            self._proc = None
            return False
        return True

    def _spawn(self) -> None:
        # Under `opentelemetry-instrument` the child would set up exporters of its own and
        # trace its own gRPC calls: it exports only what it is handed.
        env = {**os.environ, "OTEL_TRACES_EXPORTER": "none", "OTEL_LOGS_EXPORTER": "none",
               "OTEL_METRICS_EXPORTER": "none"}
        proc = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "obskit._export_process"],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, close_fds=True, env=env)
        assert proc.stdin is not None and proc.stdout is not None
        fd = proc.stdin.fileno()
        with contextlib.suppress(OSError):  # a larger buffer where the kernel allows it
            import fcntl

            fcntl.fcntl(fd, _F_SETPIPE_SZ, PIPE_BYTES)
        config = _frame(("config", self.config()))
        os.write(fd, config)  # before non-blocking: the pipe is empty, it fits
        os.set_blocking(fd, False)
        self._proc, self._fd, self._tail = proc, fd, b""
        threading.Thread(target=self._read_reports, args=(proc, proc.stdout),
                         name="obskit-export-reports", daemon=True).start()

    def _write(self, data: bytes) -> bool:
        """Write a frame without blocking; False (dropped) when the pipe is full or gone."""
        if not self._ensure_child():
            return False
        if self._tail and not self._write_tail():
            return False
        try:
            n = os.write(self._fd, data)
        except BlockingIOError:
            return False
        except OSError:  # the child is gone: started again at the next batch
            self._close_pipe()
            return False
        if n < len(data):
            self._tail = data[n:]  # the rest of this frame goes first next time
        return True

    def _write_tail(self) -> bool:
        try:
            n = os.write(self._fd, self._tail)
        except BlockingIOError:
            return False
        except OSError:
            self._close_pipe()
            return False
        self._tail = self._tail[n:]
        return not self._tail

    def _close_pipe(self) -> None:
        proc, self._proc = self._proc, None
        self._tail = b""
        if proc is not None and proc.stdin is not None:
            with contextlib.suppress(OSError):
                proc.stdin.close()
            with contextlib.suppress(OSError):
                proc.poll()  # reap it if it has ended
        self._fd = -1

    def _read_reports(self, proc: subprocess.Popen[bytes], stream: BinaryIO) -> None:
        for message in read_frames(stream):
            kind = message[0]
            if kind == "counts":
                self._on_counts(message[1], message[2], message[3])
            elif kind == "flushed":
                with self._flushed:
                    self._acked = max(self._acked, message[1])
                    self._flushed.notify_all()
            elif kind == "log":
                logging.getLogger(message[1]).log(message[2], "%s", message[3])

    # -- flush and shutdown -------------------------------------------------------------------
    def force_flush(self, timeout_millis: int = 30000) -> bool:
        """Send what waits here and wait until the child has exported everything it holds."""
        deadline = time.monotonic() + timeout_millis / 1000
        self.send_pending()
        token = next(self._tokens)
        flush = _frame(("flush", token))
        while True:  # unlike data, the flush request waits for room in the pipe (till deadline)
            with self._send_lock:
                if self._write(flush):
                    flush = b""
                if not flush and (not self._tail or self._write_tail()):
                    break
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.005)
        with self._flushed:
            return self._flushed.wait_for(lambda: self._acked >= token,
                                          max(0.0, deadline - time.monotonic()))

    def shutdown(self, timeout_seconds: float = 5.0) -> None:
        if self._closed:
            return
        if os.getpid() == self._pid:
            self.force_flush(int(timeout_seconds * 1000))
        self._closed = True
        self._wake.set()
        proc = self._proc
        self._close_pipe()
        if proc is not None and os.getpid() == self._pid:
            try:
                proc.wait(timeout_seconds)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()

    def after_fork_in_child(self) -> None:
        """A forked process: the queues, the pipe and the child are the parent's. Start clean;
        the next batch starts a child of this process's own."""
        self.spans.clear()
        self.logs.clear()
        proc = self._proc
        if proc is not None:
            # Our copy of the parent's pipe closes (the parent's export process must see the
            # end of it when the parent ends). Its report stream stays open and referenced:
            # closing it would wait for a lock the parent's reader thread held at the fork.
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            _PARENTS.append(proc)
        self._proc, self._fd, self._tail = None, -1, b""
        self._send_lock = threading.Lock()
        self._flushed = threading.Condition()
        self._wake = threading.Event()
        self._spawned_at = 0.0
        self._pid = os.getpid()
        self._start_thread()

    @property
    def child_pid(self) -> int | None:
        proc = self._proc
        return None if proc is None or proc.poll() is not None else proc.pid


def read_frames(stream: BinaryIO) -> Any:
    """The messages on ``stream`` until its end (or a truncated frame)."""
    while True:
        header = stream.read(4)
        if len(header) < 4:
            return
        (size,) = _HEADER.unpack(header)
        body = stream.read(size)
        if len(body) < size:
            return
        yield marshal.loads(body)


# --- the child ---------------------------------------------------------------------------------

class _Reporter:
    """The child's frames to the service (counts, flush acks, warnings), from any thread."""

    def __init__(self, fd: int) -> None:
        self._out = os.fdopen(fd, "wb", buffering=0)
        self._lock = threading.Lock()

    def send(self, *payload: Any) -> None:
        data = _frame(payload)
        with self._lock, contextlib.suppress(OSError):
            self._out.write(data)


class _ForwardWarnings(logging.Handler):
    def __init__(self, reporter: _Reporter) -> None:
        super().__init__(logging.WARNING)
        self._reporter = reporter

    def emit(self, record: logging.LogRecord) -> None:
        with contextlib.suppress(Exception):
            self._reporter.send("log", record.name, record.levelno, record.getMessage())


def rebuild_spans(frame: tuple[Any, ...]) -> list[Any]:
    """The SDK ``ReadableSpan``s of a ``("spans", ...)`` frame, equal to the originals for the
    OTLP encoder."""
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.util.instrumentation import InstrumentationScope

    _, resource_table, scope_table, items = frame
    resources = [Resource(attrs, schema_url) for attrs, schema_url in resource_table]
    scopes = [None if s is None else InstrumentationScope(s[0], s[1], s[2], s[3])
              for s in scope_table]
    return [_rebuild_span(item, resources, scopes) for item in items]


def _span_context(t: tuple[Any, ...]) -> Any:
    from opentelemetry.trace import SpanContext, TraceFlags, TraceState

    trace_id, span_id, flags, is_remote, state = t
    return SpanContext(trace_id, span_id, is_remote, TraceFlags(flags),
                       TraceState(list(state)) if state else None)


def _rebuild_span(item: tuple[Any, ...], resources: list[Any], scopes: list[Any]) -> Any:
    from opentelemetry.trace import SpanKind, Status, StatusCode

    span_class, event_class, link_class = _span_classes()
    (name, trace_id, span_id, flags, state, parent, kind, start, end, code, description,
     attributes, events, links, dropped_attributes, dropped_events, dropped_links,
     r, s) = item
    span = span_class(
        name=name,
        context=_span_context((trace_id, span_id, flags, False, state)),
        parent=None if parent is None else _span_context(parent),
        resource=resources[r],
        attributes=attributes,
        events=[event_class(e[0], e[2], e[1], e[3]) for e in events or ()],
        links=[link_class(_span_context(lk[0]), lk[1], lk[2]) for lk in links or ()],
        kind=SpanKind(kind),
        status=Status(StatusCode(code), description),
        start_time=start, end_time=end,
        instrumentation_scope=scopes[s])
    span.dropped = (dropped_attributes, dropped_events, dropped_links)
    return span


@functools.cache
def _span_classes() -> tuple[Any, Any, Any]:
    """Subclasses of the SDK's span, event and link that carry the original's dropped counts
    (the SDK derives them from its bounded containers, which rebuilt objects do not have)."""
    from opentelemetry.sdk.trace import Event, ReadableSpan
    from opentelemetry.trace import Link

    class RebuiltSpan(ReadableSpan):
        dropped = (0, 0, 0)

        @property
        def dropped_attributes(self) -> int:
            return self.dropped[0]

        @property
        def dropped_events(self) -> int:
            return self.dropped[1]

        @property
        def dropped_links(self) -> int:
            return self.dropped[2]

    class RebuiltEvent(Event):
        def __init__(self, name: str, attributes: Any, timestamp: int, dropped: int) -> None:
            super().__init__(name, attributes, timestamp)
            self._dropped = dropped

        @property
        def dropped_attributes(self) -> int:
            return self._dropped

    class RebuiltLink(Link):
        def __init__(self, context: Any, attributes: Any, dropped: int) -> None:
            super().__init__(context, attributes)
            self._dropped = dropped

        @property
        def dropped_attributes(self) -> int:
            return self._dropped

    return RebuiltSpan, RebuiltEvent, RebuiltLink


def _from_json(text: str) -> dict[str, Any]:
    """A plain line's fields from its rendered JSON (orjson, or json where orjson refuses what
    json wrote: a lone surrogate escaped)."""
    try:
        return orjson.loads(text)  # type: ignore[no-any-return]
    except orjson.JSONDecodeError:
        return json.loads(text)  # type: ignore[no-any-return]


def log_record(item: tuple[Any, ...]) -> tuple[Any, ...]:
    """A log line as the service sent it — (observed ns, trace id, span id, trace flags, the
    line's fields marshalled by ``_logging.fields_snapshot``, or a plain line's rendered JSON
    text, ``_logging.render(..., plain=True)``) — as the record's values:
    (observed, trace id, span id, flags, severity text, severity number, body, attributes or
    None), by the service's own rule (``obskit._logging.record_fields``)."""
    from obskit._logging import record_fields

    observed, trace_id, span_id, flags, fields = item
    text, number, body, attributes = record_fields(
        _from_json(fields) if type(fields) is str else marshal.loads(fields))
    return (observed, trace_id, span_id, flags, text, number, body, attributes or None)


class LogRebuilder:
    """Log records of ``("logs", ...)`` frames as the SDK's ``Logger.emit`` makes them, with
    the service's resource and the ``obskit`` scope."""

    def __init__(self, resource_attributes: dict[str, Any], schema_url: str) -> None:
        from opentelemetry.sdk._logs import LoggerProvider
        from opentelemetry.sdk.resources import Resource

        self.records: list[Any] = []
        provider = LoggerProvider(resource=Resource(resource_attributes, schema_url),
                                  shutdown_on_exit=False)
        provider.add_log_record_processor(_Collect(self.records))  # type: ignore[arg-type]
        self._logger = provider.get_logger("obskit")

    def rebuild(self, items: Sequence[tuple[Any, ...]]) -> list[Any]:
        from opentelemetry._logs import LogRecord, SeverityNumber
        from opentelemetry.trace import (
            NonRecordingSpan,
            SpanContext,
            TraceFlags,
            set_span_in_context,
        )

        for observed, trace_id, span_id, flags, text, number, body, attributes in items:
            context = None
            if trace_id:
                context = set_span_in_context(NonRecordingSpan(
                    SpanContext(trace_id, span_id, False, TraceFlags(flags))))
            self._logger.emit(LogRecord(observed_timestamp=observed, context=context,
                                        severity_text=text,
                                        severity_number=SeverityNumber(number),
                                        body=body, attributes=attributes))
        out, self.records[:] = list(self.records), []
        return out


class _Collect:
    def __init__(self, into: list[Any]) -> None:
        self._into = into

    def on_emit(self, record: Any) -> None:
        from opentelemetry.sdk._logs import ReadableLogRecord

        self._into.append(ReadableLogRecord(
            log_record=record.log_record, resource=record.resource,
            instrumentation_scope=record.instrumentation_scope, limits=record.limits))

    emit = on_emit

    def shutdown(self) -> None:
        pass

    def force_flush(self, timeout_millis: int = 30000) -> bool:
        return True


def child_config(settings: Any, log_resource: Any, direct: bool = False) -> dict[str, Any]:
    """What the child needs, from the service's settings and its log records' resource;
    ``direct``: encode with ``obskit._otlp_encode`` (``direct_otlp_encoding``)."""
    return {"endpoint": settings.otlp_endpoint, "protocol": settings.otlp_protocol,
            "direct": direct,
            "headers": dict(settings.otlp_headers or {}), "timeout": settings.otlp_timeout,
            "service": settings.service_name,
            "log_resource": None if log_resource is None else (
                dict(log_resource.attributes), log_resource.schema_url)}


def _exporters(config: dict[str, Any]) -> tuple[Any, Any]:
    """The SDK's OTLP exporters for ``config``; over gRPC with ``config["direct"]``, the
    subclasses whose requests ``obskit._otlp_encode`` writes (``direct_exporters``)."""
    endpoint = config["endpoint"].rstrip("/")
    headers = config["headers"] or None
    timeout = config["timeout"]
    if config["protocol"] == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        span_class, log_class = OTLPSpanExporter, OTLPLogExporter
        if config.get("direct"):
            span_class, log_class = direct_exporters(config)
        # A collector that comes back is found within seconds (gRPC's default backoff grows to
        # 120 s between connection attempts).
        options: Any = (("grpc.initial_reconnect_backoff_ms", 250),
                        ("grpc.max_reconnect_backoff_ms", 5000))
        insecure = endpoint.startswith("http://")
        return (span_class(endpoint=endpoint, headers=headers, insecure=insecure,
                           timeout=timeout, channel_options=options),
                log_class(endpoint=endpoint, headers=headers, insecure=insecure,
                          timeout=timeout, channel_options=options))
    from opentelemetry.exporter.otlp.proto.http._log_exporter import (
        OTLPLogExporter as HttpLogExporter,
    )
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import (
        OTLPSpanExporter as HttpSpanExporter,
    )

    return (HttpSpanExporter(endpoint=f"{endpoint}/v1/traces", headers=headers, timeout=timeout),
            HttpLogExporter(endpoint=f"{endpoint}/v1/logs", headers=headers, timeout=timeout))


class SpanTables:
    """The child's resources and scopes: every frame's indices mapped to one table, so spans of
    many frames go in one request (``direct_exporters``)."""

    def __init__(self) -> None:
        self.resources: list[tuple[Any, ...]] = []
        self.scopes: list[tuple[Any, ...] | None] = []
        self._index: dict[Any, int] = {}

    def _place(self, table: list[Any], key: Any, entry: Any) -> int:
        i = self._index.get(key)
        if i is None:
            i = self._index[key] = len(table)
            table.append(entry)
        return i

    def items(self, frame: tuple[Any, ...]) -> list[tuple[Any, ...]]:
        _, resource_table, scope_table, items = frame
        r_map = [self._place(self.resources, ("r", marshal.dumps(r)), r)
                 for r in resource_table]
        s_map = [self._place(self.scopes, ("s", marshal.dumps(sc)), sc) for sc in scope_table]
        return [(*item[:17], r_map[item[17]], s_map[item[18]]) for item in items]


def direct_exporters(config: dict[str, Any]) -> tuple[Any, Any]:
    """The SDK's gRPC exporters with their request written by ``obskit._otlp_encode`` from
    the tuples (``_translate_data``, the hook the ``stepped_otlp_*`` fast paths override too;
    the ``direct_otlp_encoding`` fast path). Their batches are the tuples: spans as
    ``SpanTables.items`` makes them, log records as the service sent them."""
    from opentelemetry.exporter.otlp.proto.grpc._log_exporter import OTLPLogExporter
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.logs.v1.logs_service_pb2 import ExportLogsServiceRequest
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
        ExportTraceServiceRequest,
    )

    from obskit._otlp_encode import LogEncoder, SpanEncoder

    tables = SpanTables()
    spans = SpanEncoder()
    log_resource: tuple[Any, Any] = config["log_resource"] or ({}, None)
    logs = LogEncoder(*log_resource)
    parse_spans, parse_logs = ExportTraceServiceRequest.FromString, \
        ExportLogsServiceRequest.FromString

    class DirectSpanExporter(OTLPSpanExporter):  # type: ignore[misc]
        tables_ = tables

        def _translate_data(self, data: Sequence[Any]) -> Any:
            # Parsing the bytes back is C code: the gRPC stub wants a message object.
            return parse_spans(spans.request(("spans", tables.resources, tables.scopes, data)))

    class DirectLogExporter(OTLPLogExporter):  # type: ignore[misc]
        def _translate_data(self, data: Sequence[Any]) -> Any:
            if any(r[7] is not None and len(r[7]) > LOG_ATTRIBUTE_LIMIT for r in data):
                # the SDK drops attributes over its limit: let it, for this batch
                from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

                return encode_logs(LogRebuilder(*log_resource).rebuild(data))
            return parse_logs(logs.request(data))

    return DirectSpanExporter, DirectLogExporter


def _env_number(env: str, default: float) -> float:
    """An ``OTEL_B*P_*`` setting, as the SDK's batch processors read it."""
    try:
        value = float(os.environ.get(env, "") or default)
    except ValueError:
        return default
    return value if value > 0 else default


class _Queue:
    """One kind's items in the child, exported in batches by a thread of its own."""

    def __init__(self, kind: str, export: Callable[[list[Any]], bool], env: str,
                 default_delay_ms: float, reporter: _Reporter,
                 on_flushed: Callable[[], None]) -> None:
        """``env``: the SDK processor's prefix (``OTEL_BSP`` / ``OTEL_BLRP``), whose
        ``_SCHEDULE_DELAY``, ``_MAX_QUEUE_SIZE`` and ``_MAX_EXPORT_BATCH_SIZE`` apply here."""
        self.kind = kind
        self._delay = _env_number(f"{env}_SCHEDULE_DELAY", default_delay_ms) / 1000
        self._max = int(_env_number(f"{env}_MAX_QUEUE_SIZE", MAX_QUEUE))
        self._batch = min(self._max, int(_env_number(f"{env}_MAX_EXPORT_BATCH_SIZE", BATCH)))
        self.flushed = 0  # the last flush token this queue has exported everything for
        self._on_flushed = on_flushed
        self._export = export
        self._reporter = reporter
        self._items: list[Any] = []
        self._cond = threading.Condition()
        self._flush_to = 0  # flush token asked for
        self._closed = False
        self._since = 0.0
        self.thread = threading.Thread(target=self._run, name=f"export-{kind}", daemon=True)
        self.thread.start()

    def add(self, items: list[Any]) -> None:
        with self._cond:
            room = self._max - len(self._items)
            if room < len(items):  # the collector is slow or down: drop, and say so
                self._reporter.send("counts", self.kind, 0,
                                    {"queue_full": len(items) - max(room, 0)})
                items = items[:max(room, 0)]
            first = not self._items
            if first:
                self._since = time.monotonic()
            self._items.extend(items)
            if first or len(self._items) >= self._batch:  # start the delay, or export a full batch
                self._cond.notify()

    def flush(self, token: int) -> None:
        with self._cond:
            self._flush_to = token
            self._cond.notify()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify()

    def _run(self) -> None:
        done_token = 0
        while True:
            with self._cond:
                while not (self._closed or self._flush_to > done_token
                           or len(self._items) >= self._batch
                           or (self._items and time.monotonic() - self._since >= self._delay)):
                    wait = self._delay - (time.monotonic() - self._since) if self._items \
                        else None
                    self._cond.wait(wait)
                token = self._flush_to
                batch, self._items = self._items, []
                closed = self._closed
            for start in range(0, len(batch), self._batch):
                part = batch[start:start + self._batch]
                ok = self._export(part)
                self._reporter.send("counts", self.kind, len(part) if ok else 0,
                                    {} if ok else {"export_failed": len(part)})
            if token > done_token:
                done_token = self.flushed = token
                self._on_flushed()
            if closed:
                return


def child_main() -> int:
    """The export process: frames from stdin, exports, reports to stdout."""
    reports_fd = os.dup(1)
    os.dup2(2, 1)  # stray prints go to stderr, not into the report stream
    reporter = _Reporter(reports_fd)
    root = logging.getLogger()
    root.addHandler(_ForwardWarnings(reporter))
    root.setLevel(logging.WARNING)
    stdin = os.fdopen(0, "rb", buffering=PIPE_BYTES)
    frames = read_frames(stdin)
    first = next(frames, None)
    if first is None or first[0] != "config":
        return 2
    config = first[1]
    span_exporter, log_exporter = _exporters(config)
    if getattr(span_exporter, "tables_", None) is not None:  # direct encoding: tuples go on
        tables = span_exporter.tables_

        def span_items(frame: tuple[Any, ...]) -> list[Any]:
            return tables.items(frame)

        def log_items(items: list[Any]) -> list[Any]:
            return [log_record(item) for item in items]
    else:  # the SDK's own objects, for the SDK's encoder
        span_items = rebuild_spans
        rebuilder = None if config["log_resource"] is None \
            else LogRebuilder(*config["log_resource"])

        def log_items(items: list[Any]) -> list[Any]:
            return [] if rebuilder is None else rebuilder.rebuild(
                [log_record(item) for item in items])

    from opentelemetry.sdk._logs.export import LogRecordExportResult
    from opentelemetry.sdk.trace.export import SpanExportResult

    def export_spans(batch: list[Any]) -> bool:
        try:
            return bool(span_exporter.export(batch) == SpanExportResult.SUCCESS)
        except Exception:
            return False

    def export_logs(batch: list[Any]) -> bool:
        try:
            return bool(log_exporter.export(batch) == LogRecordExportResult.SUCCESS)
        except Exception:
            return False

    acked = 0
    ack_lock = threading.Lock()

    def on_flushed() -> None:  # the service hears "flushed" once every queue is
        nonlocal acked
        with ack_lock:
            done = min(q.flushed for q in queues.values())
            if done > acked:
                acked = done
                reporter.send("flushed", done)

    queues: dict[str, _Queue] = {}
    queues["spans"] = _Queue("spans", export_spans, "OTEL_BSP", 5000, reporter, on_flushed)
    queues["logs"] = _Queue("logs", export_logs, "OTEL_BLRP", 1000, reporter, on_flushed)
    for message in frames:
        kind = message[0]
        try:
            if kind == "spans":
                queues["spans"].add(span_items(message))
            elif kind == "logs" and config["log_resource"] is not None:
                queues["logs"].add(log_items(message[1]))
            elif kind == "flush":
                for q in queues.values():
                    q.flush(message[1])
        except Exception as exc:  # a frame that cannot be rebuilt is lost, not the process
            logging.getLogger("obskit.export").warning("export process: bad %s frame: %r",
                                                       kind, exc)
    for q in queues.values():  # the service is gone: send what is left, then end
        q.close()
    for q in queues.values():
        q.thread.join(timeout=config["timeout"] * 2 + 5)
    for exporter in (span_exporter, log_exporter):
        with contextlib.suppress(Exception):
            exporter.shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(child_main())
