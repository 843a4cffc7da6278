"""An in-process OTLP receiver for tests: gRPC or HTTP/protobuf, spans and log records in memory.

    from obskit.testing import OtlpReceiver

    with OtlpReceiver("grpc") as rx:           # or "http/protobuf"
        run_service(env={"OTEL_EXPORTER_OTLP_ENDPOINT": rx.endpoint,
                         "OTEL_EXPORTER_OTLP_PROTOCOL": rx.protocol})
        spans = rx.wait_for_spans(lambda spans: len(spans) >= 4, timeout=10)

It listens on a free port of 127.0.0.1 and decodes what it receives into plain dataclasses
(ids as lowercase hex, attributes as Python values). No collector binary is needed.
"""

from __future__ import annotations

import gzip
import threading
import time
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import TracebackType
from typing import Any

__all__ = ["OtlpReceiver", "ReceivedLog", "ReceivedSpan"]

_KINDS = {0: "UNSPECIFIED", 1: "INTERNAL", 2: "SERVER", 3: "CLIENT", 4: "PRODUCER",
          5: "CONSUMER"}
_STATUS = {0: "UNSET", 1: "OK", 2: "ERROR"}


@dataclass(frozen=True)
class ReceivedSpan:
    trace_id: str  # 32 hex
    span_id: str  # 16 hex
    parent_span_id: str | None
    name: str
    kind: str  # SERVER, CLIENT, PRODUCER, CONSUMER, INTERNAL
    attributes: dict[str, Any]
    resource: dict[str, Any]
    scope: str
    status: str  # UNSET, OK, ERROR
    links: tuple[tuple[str, str], ...] = ()

    @property
    def service_name(self) -> str | None:
        value = self.resource.get("service.name")
        return None if value is None else str(value)


@dataclass(frozen=True)
class ReceivedLog:
    body: Any
    attributes: dict[str, Any]
    resource: dict[str, Any]
    trace_id: str | None
    span_id: str | None
    severity_text: str
    scope: str

    @property
    def service_name(self) -> str | None:
        value = self.resource.get("service.name")
        return None if value is None else str(value)


def _value(v: Any) -> Any:
    kind = v.WhichOneof("value")
    if kind is None:
        return None
    if kind == "array_value":
        return [_value(x) for x in v.array_value.values]
    if kind == "kvlist_value":
        return _attrs(v.kvlist_value.values)
    return getattr(v, kind)


def _attrs(kvs: Sequence[Any]) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in kvs}


def _hex(raw: bytes) -> str | None:
    return raw.hex() if raw and any(raw) else None


def decode_traces(request: Any) -> list[ReceivedSpan]:
    out: list[ReceivedSpan] = []
    for rs in request.resource_spans:
        resource = _attrs(rs.resource.attributes)
        for ss in rs.scope_spans:
            for s in ss.spans:
                out.append(ReceivedSpan(
                    trace_id=s.trace_id.hex(), span_id=s.span_id.hex(),
                    parent_span_id=_hex(s.parent_span_id), name=s.name,
                    kind=_KINDS.get(s.kind, str(s.kind)), attributes=_attrs(s.attributes),
                    resource=resource, scope=ss.scope.name,
                    status=_STATUS.get(s.status.code, str(s.status.code)),
                    links=tuple((lk.trace_id.hex(), lk.span_id.hex()) for lk in s.links)))
    return out


def decode_logs(request: Any) -> list[ReceivedLog]:
    out: list[ReceivedLog] = []
    for rl in request.resource_logs:
        resource = _attrs(rl.resource.attributes)
        for sl in rl.scope_logs:
            for r in sl.log_records:
                out.append(ReceivedLog(
                    body=_value(r.body), attributes=_attrs(r.attributes), resource=resource,
                    trace_id=_hex(r.trace_id), span_id=_hex(r.span_id),
                    severity_text=r.severity_text, scope=sl.scope.name))
    return out


@dataclass
class _Store:
    spans: list[ReceivedSpan] = field(default_factory=list)
    logs: list[ReceivedLog] = field(default_factory=list)
    cond: threading.Condition = field(default_factory=threading.Condition)

    def add(self, spans: list[ReceivedSpan] = (), logs: list[ReceivedLog] = ()) -> None:  # type: ignore[assignment]
        with self.cond:
            self.spans.extend(spans)
            self.logs.extend(logs)
            self.cond.notify_all()


class OtlpReceiver:
    """A test OTLP endpoint. ``protocol`` is ``"grpc"`` or ``"http/protobuf"``."""

    def __init__(self, protocol: str = "grpc", host: str = "127.0.0.1", port: int = 0) -> None:
        if protocol not in ("grpc", "http/protobuf"):
            raise ValueError(f"OtlpReceiver: protocol must be 'grpc' or 'http/protobuf', "
                             f"got {protocol!r}")
        self.protocol = protocol
        self.host = host
        self.port = port
        self._store = _Store()
        self._grpc_server: Any = None
        self._http_server: ThreadingHTTPServer | None = None
        self._http_thread: threading.Thread | None = None

    # --- lifecycle ------------------------------------------------------------------------
    @property
    def endpoint(self) -> str:
        """The value for ``OTEL_EXPORTER_OTLP_ENDPOINT``."""
        return f"http://{self.host}:{self.port}"

    def env(self) -> dict[str, str]:
        """Environment for a service that should export here."""
        return {"OTEL_EXPORTER_OTLP_ENDPOINT": self.endpoint,
                "OTEL_EXPORTER_OTLP_PROTOCOL": self.protocol}

    def start(self) -> OtlpReceiver:
        if self.protocol == "grpc":
            self._start_grpc()
        else:
            self._start_http()
        return self

    def stop(self) -> None:
        if self._grpc_server is not None:
            self._grpc_server.stop(grace=None)
            self._grpc_server = None
        if self._http_server is not None:
            self._http_server.shutdown()
            self._http_server.server_close()
            self._http_server = None

    def __enter__(self) -> OtlpReceiver:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # --- what was received ----------------------------------------------------------------
    @property
    def spans(self) -> list[ReceivedSpan]:
        with self._store.cond:
            return list(self._store.spans)

    @property
    def logs(self) -> list[ReceivedLog]:
        with self._store.cond:
            return list(self._store.logs)

    def clear(self) -> None:
        with self._store.cond:
            self._store.spans.clear()
            self._store.logs.clear()

    def wait_for_spans(self, predicate: Callable[[list[ReceivedSpan]], bool],
                       timeout: float = 10.0) -> list[ReceivedSpan]:
        """Block until ``predicate(spans)`` holds; return the spans. Raises ``TimeoutError``."""
        return self._wait(lambda: self._store.spans, predicate, timeout, "spans")

    def wait_for_logs(self, predicate: Callable[[list[ReceivedLog]], bool],
                      timeout: float = 10.0) -> list[ReceivedLog]:
        return self._wait(lambda: self._store.logs, predicate, timeout, "logs")

    def _wait(self, get: Callable[[], list[Any]], predicate: Callable[[list[Any]], bool],
              timeout: float, what: str) -> list[Any]:
        deadline = time.monotonic() + timeout
        with self._store.cond:
            while True:
                items = list(get())
                if predicate(items):
                    return items
                left = deadline - time.monotonic()
                if left <= 0:
                    raise TimeoutError(f"OtlpReceiver: condition on {what} not met within "
                                       f"{timeout}s; received {len(items)} {what}: "
                                       f"{_summary(items)}")
                self._store.cond.wait(left)

    # --- servers --------------------------------------------------------------------------
    def _start_grpc(self) -> None:
        from concurrent import futures

        import grpc
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2, logs_service_pb2_grpc
        from opentelemetry.proto.collector.trace.v1 import (
            trace_service_pb2,
            trace_service_pb2_grpc,
        )

        store = self._store

        class Traces(trace_service_pb2_grpc.TraceServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802 - gRPC name
                store.add(spans=decode_traces(request))
                return trace_service_pb2.ExportTraceServiceResponse()

        class Logs(logs_service_pb2_grpc.LogsServiceServicer):  # type: ignore[misc]
            def Export(self, request: Any, context: Any) -> Any:  # noqa: N802
                store.add(logs=decode_logs(request))
                return logs_service_pb2.ExportLogsServiceResponse()

        server = grpc.server(futures.ThreadPoolExecutor(max_workers=4))
        trace_service_pb2_grpc.add_TraceServiceServicer_to_server(Traces(), server)
        logs_service_pb2_grpc.add_LogsServiceServicer_to_server(Logs(), server)
        self.port = server.add_insecure_port(f"{self.host}:{self.port}")
        server.start()
        self._grpc_server = server

    def _start_http(self) -> None:
        from opentelemetry.proto.collector.logs.v1 import logs_service_pb2
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2

        store = self._store
        routes: dict[str, tuple[Any, Any, Callable[[Any], None]]] = {
            "/v1/traces": (trace_service_pb2.ExportTraceServiceRequest,
                           trace_service_pb2.ExportTraceServiceResponse,
                           lambda req: store.add(spans=decode_traces(req))),
            "/v1/logs": (logs_service_pb2.ExportLogsServiceRequest,
                         logs_service_pb2.ExportLogsServiceResponse,
                         lambda req: store.add(logs=decode_logs(req))),
        }

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server name
                route = routes.get(self.path.split("?", 1)[0])
                if route is None:
                    self.send_error(404)
                    return
                raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                encoding = (self.headers.get("Content-Encoding") or "").lower()
                if encoding == "gzip":
                    raw = gzip.decompress(raw)
                elif encoding == "deflate":
                    raw = zlib.decompress(raw)
                request_type, response_type, sink = route
                request = request_type()
                try:
                    request.ParseFromString(raw)
                except Exception:
                    self.send_error(400, "not an OTLP protobuf message")
                    return
                sink(request)
                body = response_type().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                return  # keep test output clean

        server = ThreadingHTTPServer((self.host, self.port), Handler)
        server.daemon_threads = True
        self.port = int(server.server_address[1])
        self._http_server = server
        self._http_thread = threading.Thread(target=server.serve_forever,
                                             name="obskit-otlp-receiver", daemon=True)
        self._http_thread.start()


def _summary(items: list[Any]) -> str:
    names = [getattr(i, "name", None) or str(getattr(i, "body", ""))[:40] for i in items[:20]]
    return ", ".join(names)
