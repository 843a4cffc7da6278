"""The export process: what reaches the collector equals the SDK's in-process encoding, the
service never blocks on it, and export survives a collector (or the process) going away."""

from __future__ import annotations

import json
import marshal
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk._logs import LoggerProvider, ReadableLogRecord
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor, SpanExporter, SpanExportResult
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace import TraceState as OTelTraceState

from obskit import _export_process, _logging
from obskit.testing import OtlpReceiver, wait_for


class _Keep(SpanExporter):
    def __init__(self) -> None:
        self.spans: list[Any] = []

    def export(self, spans: Any) -> SpanExportResult:
        self.spans.extend(spans)
        return SpanExportResult.SUCCESS


def _varied_spans() -> list[Any]:
    """Spans with every field the OTLP encoder reads, including dropped counts."""
    keep = _Keep()
    provider = TracerProvider(
        resource=Resource({"service.name": "svc", "k8s.pod": "p-1", "n": 3},
                          "https://opentelemetry.io/schemas/1.21.0"),
        span_limits=SpanLimits(max_span_attributes=4, max_events=1, max_links=1,
                               max_event_attributes=1, max_link_attributes=1))
    provider.add_span_processor(SimpleSpanProcessor(keep))
    tracer = provider.get_tracer("lib", "1.2.3", "https://schema/x", {"scope.attr": "v"})
    other = provider.get_tracer("other")
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=OTelTraceState([("vendor", "abc"), ("k", "v")]))
    parent_ctx = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    with tracer.start_as_current_span(
            "server", context=parent_ctx, kind=SpanKind.SERVER,
            attributes={"s": "x", "i": 7, "f": 1.5, "b": True, "seq": ("a", "b")},
            links=[Link(remote, {"l1": 1, "l2": 2}),
                   Link(SpanContext(0x99, 0x98, False, TraceFlags(1)))]) as span:
        span.set_attribute("over.limit", "dropped")  # 6 attributes, limit 4: 2 dropped
        span.add_event("first", {"e1": 1, "e2": 2}, timestamp=123)
        span.add_event("second")  # limit 1: dropped
        span.set_status(Status(StatusCode.ERROR, "broke"))
        with other.start_as_current_span("client", kind=SpanKind.CLIENT) as child:
            child.set_attribute("ints", [1, 2, 3])
    with tracer.start_as_current_span("plain", kind=SpanKind.CONSUMER):
        pass
    provider.shutdown()
    return keep.spans


def _through_the_pipe(spans: list[Any]) -> list[Any]:
    frame = _export_process.spans_frame(spans)
    return _export_process.rebuild_spans(marshal.loads(frame[4:]))


def test_rebuilt_spans_encode_exactly_as_the_originals() -> None:
    spans = _varied_spans()
    assert spans[1].dropped_attributes == 2 and spans[1].dropped_events == 1
    assert spans[1].dropped_links == 1 and spans[1].parent.is_remote
    original = encode_spans(spans).SerializeToString(deterministic=True)
    rebuilt = encode_spans(_through_the_pipe(spans)).SerializeToString(deterministic=True)
    assert rebuilt == original


def _logs_both_ways(emit: Any) -> tuple[bytes, bytes]:
    """The same log events through the SDK's Logger (in-process) and through the export
    process's tuples and ``LogRebuilder``; observed times set equal (they are 'now')."""
    resource = Resource({"service.name": "svc", "service.instance.id": "i-1"})
    sdk_records: list[Any] = []

    class Collect:
        def on_emit(self, record: Any) -> None:
            sdk_records.append(ReadableLogRecord(
                log_record=record.log_record, resource=record.resource,
                instrumentation_scope=record.instrumentation_scope, limits=record.limits))

        emit = on_emit

        def shutdown(self) -> None:
            pass

        def force_flush(self, timeout_millis: int = 0) -> bool:
            return True

    provider = LoggerProvider(resource=resource, shutdown_on_exit=False)
    provider.add_log_record_processor(Collect())  # type: ignore[arg-type]
    tuples: list[tuple[Any, ...]] = []

    class Handoff:
        add_log = tuples.append

    emit(_logging._OtlpExport(provider))
    emit(_logging._OtlpExport(Handoff()))
    rebuilt = _export_process.LogRebuilder(dict(resource.attributes), resource.schema_url) \
        .rebuild([_export_process.log_record((0, *t[1:])) for t in tuples])
    for r in sdk_records:
        r.log_record.observed_timestamp = 0
    return (encode_logs(sdk_records).SerializeToString(deterministic=True),
            encode_logs(rebuilt).SerializeToString(deterministic=True))


def test_rebuilt_log_records_encode_exactly_as_the_sdks() -> None:
    request = trace.NonRecordingSpan(SpanContext(0xABC, 0xDEF, False, TraceFlags(1)))

    def emit(export: Any) -> None:
        export(None, "info", {"event": "outside a span", "level": "info", "logger": "app",
                              "order_id": "o-1", "n": 3, "ok": True, "obj": object.__name__})
        with trace.use_span(request):
            export(None, "error", {"event": "inside", "level": "error", "logger": "app",
                                   "trace_id": "ignored", "latency": 1.25, "none": None})
        export(None, "warning", {"event": "exporter trouble", "logger": "opentelemetry.x"})

    sdk, rebuilt = _logs_both_ways(emit)
    assert b"inside" in sdk and b"o-1" in sdk and b"exporter trouble" not in sdk
    assert rebuilt == sdk


APP = textwrap.dedent(
    """
    import json, os, sys, time
    import obskit
    from opentelemetry import trace
    handle = obskit.init("export-proc", otlp_timeout=1.0)
    tracer = trace.get_tracer("t")
    log = obskit.get_logger("app")
    cat = handle.catalogue

    def burst(tag, n):
        for i in range(n):
            with tracer.start_as_current_span(f"{tag}-{i}"):
                log.info(tag, i=i)

    def dropped():
        r = handle.registry
        return {k: sum(r.get_sample_value(f"obskit_telemetry_{k}_dropped_total", {"reason": x})
                       or 0 for x in ("queue_full", "export_failed"))
                for k in ("spans", "log_records")}

    def say(**kw):
        print(json.dumps(kw), file=sys.stderr, flush=True)

    for line in sys.stdin:
        cmd = line.split()
        if cmd[0] == "burst":
            t = time.monotonic()
            burst(cmd[1], int(cmd[2]))
            say(took=time.monotonic() - t)
        elif cmd[0] == "flush":
            t = time.monotonic()
            handle.force_flush(float(cmd[1]))
            say(took=time.monotonic() - t)
        elif cmd[0] == "state":
            say(dropped=dropped(), child=handle.export_link.child_pid,
                exported=handle.registry.get_sample_value(
                    "obskit_telemetry_spans_exported_total"))
    obskit.shutdown()
    """
)


class _App:
    """APP in a process of its own, driven line by line; it reports on stderr as JSON."""

    def __init__(self, endpoint: str) -> None:
        env = {**os.environ, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint,
               "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc", "OBSKIT_LOG_LEVEL": "INFO",
               "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200",
               "OBSKIT_RAISE_INTERNAL_ERRORS": "0"}
        self.proc = subprocess.Popen([sys.executable, "-c", APP], env=env, text=True,
                                     stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE)

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stderr is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        while True:  # the child's own warnings share stderr: skip what is not ours
            line = self.proc.stderr.readline()
            assert line, "the app ended"
            if line.startswith("{\""):
                try:
                    return dict(json.loads(line))
                except ValueError:
                    continue

    def close(self) -> int:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        return self.proc.wait(30)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_export_goes_on_after_the_collector_comes_back() -> None:
    port = _free_port()
    receiver = OtlpReceiver("grpc", port=port).start()
    app = _App(receiver.endpoint)
    try:
        app.ask("burst up 20")
        receiver.wait_for_spans(lambda s: sum(x.name.startswith("up-") for x in s) == 20)
        receiver.wait_for_logs(lambda s: sum(str(x.body) == "up" for x in s) == 20)
        child = app.ask("state")["child"]
        assert child is not None

        receiver.stop()  # the collector is gone: nothing blocks, drops are counted
        took = app.ask("burst down 3000")["took"]
        wait_for(lambda: min(app.ask("state")["dropped"].values()) > 0, timeout=30,
                 what="drop counters for spans and log records")
        state = app.ask("state")
        assert state["child"] == child  # the same export process carries on

        receiver = OtlpReceiver("grpc", port=port).start()  # back, same address
        # What waited in the export process's queue goes first, by itself...
        receiver.wait_for_spans(lambda s: any(x.name.startswith("down-") for x in s),
                                timeout=30)
        app.ask("flush 30")
        # ...and what comes next follows it.
        app.ask("burst again 20")
        receiver.wait_for_spans(lambda s: sum(x.name.startswith("again-") for x in s) == 20,
                                timeout=30)
        receiver.wait_for_logs(lambda s: sum(str(x.body) == "again" for x in s) == 20,
                               timeout=30)
        assert took < 30  # no export wait on the service's path (a sanity bound, not timing)
        assert app.close() == 0
    finally:
        app.proc.kill()
        receiver.stop()


def test_a_dead_export_process_is_replaced_and_the_service_exits_cleanly() -> None:
    with OtlpReceiver("grpc") as receiver:
        app = _App(receiver.endpoint)
        try:
            app.ask("burst one 5")
            receiver.wait_for_spans(lambda s: sum(x.name.startswith("one-") for x in s) == 5)
            child = wait_for(lambda: app.ask("state")["child"], what="the export process")
            os.kill(child, signal.SIGKILL)
            wait_for(lambda: app.ask("burst two 1") and app.ask("state")["child"] not in
                     (None, child), timeout=20, what="a new export process")
            app.ask("burst three 5")
            receiver.wait_for_spans(lambda s: sum(x.name.startswith("three-") for x in s) == 5,
                                    timeout=30)
            last = app.ask("state")["child"]
            assert app.close() == 0
            wait_for(lambda: not os.path.exists(f"/proc/{last}") or
                     open(f"/proc/{last}/stat").read().split()[2] == "Z", timeout=10,
                     what="the export process ends with the service")
        finally:
            app.proc.kill()


def test_a_stalled_export_process_never_blocks_the_service() -> None:
    with OtlpReceiver("grpc") as receiver:
        app = _App(receiver.endpoint)
        try:
            app.ask("burst warm 2")
            child = wait_for(lambda: app.ask("state")["child"], what="the export process")
            os.kill(child, signal.SIGSTOP)  # reads nothing: the pipe fills
            try:
                took = app.ask("burst stalled 20000")["took"]
                wait_for(lambda: app.ask("state")["dropped"]["spans"] > 0, timeout=20,
                         what="queue_full drops while the export process is stalled")
                assert took < 60
            finally:
                os.kill(child, signal.SIGCONT)
            app.ask("flush 30")  # the backlog in the pipe first
            app.ask("burst after 5")
            receiver.wait_for_spans(lambda s: sum(x.name.startswith("after-") for x in s) == 5,
                                    timeout=30)
            assert app.close() == 0
        finally:
            app.proc.kill()


FORKING = textwrap.dedent(
    """
    import os, sys
    import obskit
    from opentelemetry import trace
    handle = obskit.init("forking")
    with trace.get_tracer("t").start_as_current_span("in-parent"):
        pass
    handle.force_flush(10)
    pid = os.fork()
    if pid == 0:
        with trace.get_tracer("t").start_as_current_span("in-child"):
            pass
        obskit.get_handle().force_flush(10)
        obskit.shutdown()
        os._exit(0)
    _, status = os.waitpid(pid, 0)
    obskit.shutdown()
    sys.exit(os.waitstatus_to_exitcode(status))
    """
)


def test_a_forked_worker_exports_through_an_export_process_of_its_own() -> None:
    with OtlpReceiver("grpc") as receiver:
        r = subprocess.run([sys.executable, "-c", FORKING],
                           env={**os.environ, **receiver.env()}, capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0, r.stderr[-2000:]
        spans = receiver.wait_for_spans(lambda s: {"in-parent", "in-child"} <= {x.name for x in s})
    by_name = {s.name: s for s in spans}
    assert by_name["in-parent"].resource["service.instance.id"] != \
        by_name["in-child"].resource["service.instance.id"]


def test_the_in_process_exporters_remain_when_switched_off(monkeypatch: Any) -> None:
    import obskit

    with OtlpReceiver("grpc") as receiver:
        handle = obskit.init("inproc", otlp_endpoint=receiver.endpoint, export_process=False,
                             log_stream=open(os.devnull, "w"))  # noqa: SIM115
        assert handle.export_link is None
        with trace.get_tracer("t").start_as_current_span("inproc-span"):
            obskit.get_logger("a").info("inproc-line")
        handle.force_flush(10)
        receiver.wait_for_spans(lambda s: any(x.name == "inproc-span" for x in s))
        receiver.wait_for_logs(lambda s: any(str(x.body) == "inproc-line" for x in s))


@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_spans_and_logs_arrive_through_the_export_process(protocol: str) -> None:
    import obskit

    with OtlpReceiver(protocol) as receiver:
        handle = obskit.init("via-child", otlp_endpoint=receiver.endpoint,
                             otlp_protocol=protocol, log_stream=open(os.devnull, "w"))  # noqa: SIM115
        assert handle.export_link is not None
        with trace.get_tracer("t").start_as_current_span("via-span") as span:
            obskit.get_logger("a").info("via-line", order_id="o-9")
        handle.force_flush(10)
        assert handle.export_link.child_pid is not None
        (got,) = receiver.wait_for_spans(lambda s: any(x.name == "via-span" for x in s))
        logs = receiver.wait_for_logs(lambda s: any(str(x.body) == "via-line" for x in s))
        line = next(x for x in logs if str(x.body) == "via-line")
        assert line.trace_id == got.trace_id == f"{span.get_span_context().trace_id:032x}"
        assert line.attributes["order_id"] == "o-9"
        assert handle.registry.get_sample_value("obskit_telemetry_spans_exported_total") >= 1


# --- the export process's own encoder (obskit._otlp_encode) ----------------------------------

def _frame_of(spans: list[Any]) -> tuple[Any, ...]:
    return marshal.loads(_export_process.spans_frame(spans)[4:])


def test_direct_span_encoding_is_byte_for_byte_the_sdks() -> None:
    from obskit._otlp_encode import SpanEncoder

    spans = _varied_spans()
    # Two providers' spans in one batch: two resources; one equal by value to the first.
    spans += _varied_spans()[:1]
    encoder = SpanEncoder()
    sdk = encode_spans(spans).SerializeToString(deterministic=True)
    assert encoder.request(_frame_of(spans)) == sdk
    assert encoder.request(_frame_of(spans)) == sdk  # again, from the attribute cache


@pytest.mark.parametrize("value", ["", "x" * 300, 0, -5, 2**62, True, False, 0.0, -1.5,
                                   b"\x00\xff", ("a", "b"), (1, 2), [True], (), {"k": "v"}])
def test_direct_encoding_of_every_attribute_value_type(value: Any) -> None:
    from opentelemetry.exporter.otlp.proto.common._internal import _encode_attributes
    from opentelemetry.proto.common.v1.common_pb2 import KeyValueList

    from obskit._otlp_encode import Attributes

    sdk = KeyValueList(values=_encode_attributes({"key": value})).SerializeToString()
    assert Attributes().encode(b"\x0a", {"key": value}) == sdk


def test_direct_log_encoding_is_byte_for_byte_the_sdks() -> None:
    from obskit._otlp_encode import LogEncoder

    resource = Resource({"service.name": "svc", "service.instance.id": "i-1"},
                        "https://schema/logs")
    request = trace.NonRecordingSpan(SpanContext(0xABC, 0xDEF, False, TraceFlags(1)))
    tuples: list[tuple[Any, ...]] = []

    class Handoff:
        add_log = tuples.append

    export = _logging._OtlpExport(Handoff())
    export(None, "info", {"event": "outside", "level": "info", "logger": "app", "n": 3,
                          "ok": False, "empty": ""})
    with trace.use_span(request):
        export(None, "error", {"event": "", "level": "error", "logger": "app", "f": 0.5})
    export(None, "debug", {"event": "no attributes", "level": "debug"})
    records = [_export_process.log_record(t) for t in tuples]
    rebuilt = _export_process.LogRebuilder(dict(resource.attributes), resource.schema_url) \
        .rebuild(records)
    sdk = encode_logs(rebuilt).SerializeToString(deterministic=True)
    assert LogEncoder(dict(resource.attributes), resource.schema_url).request(records) == sdk


def test_log_records_over_the_attribute_limit_are_left_to_the_sdk() -> None:
    from opentelemetry.exporter.otlp.proto.common._log_encoder import encode_logs

    resource = ({"service.name": "svc"}, "")
    many = {f"k{i}": i for i in range(_export_process.LOG_ATTRIBUTE_LIMIT + 5)}
    items = [(1, 0, 0, 0, "INFO", 9, "wide", many)]
    _, log_class = _export_process.direct_exporters(
        {"log_resource": resource, "endpoint": "http://127.0.0.1:1"})
    exporter = log_class(endpoint="http://127.0.0.1:1", insecure=True)
    try:
        request = exporter._translate_data(items)
    finally:
        exporter.shutdown()
    sdk = encode_logs(_export_process.LogRebuilder(*resource).rebuild(items))
    assert request.SerializeToString(deterministic=True) == sdk.SerializeToString(
        deterministic=True)
    assert request.resource_logs[0].scope_logs[0].log_records[0].dropped_attributes_count == 5


def test_values_marshal_refuses_are_sent_as_the_encoder_sees_them() -> None:
    import http

    from obskit._otlp_encode import LogEncoder, SpanEncoder

    keep = _Keep()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(keep))
    with provider.get_tracer("t").start_as_current_span(
            "s", attributes={"status": http.HTTPStatus.OK, "seq": [1, 2]}):
        pass
    sdk = encode_spans(keep.spans).SerializeToString(deterministic=True)
    assert SpanEncoder().request(_frame_of(keep.spans)) == sdk
    assert encode_spans(_through_the_pipe(keep.spans)).SerializeToString(deterministic=True) \
        == sdk

    tuples: list[tuple[Any, ...]] = []

    class Handoff:
        add_log = tuples.append

    _logging._OtlpExport(Handoff())(None, "info", {"event": "e", "code": http.HTTPStatus.OK})
    frame = marshal.loads(_export_process._frame(("logs", tuples))[4:])
    record = _export_process.log_record(frame[1][0])
    assert record[7] == {"code": 200}
    assert LogEncoder({}, None).request([record])


@pytest.mark.parametrize("export_process", [True, False])
async def test_the_access_line_record_carries_its_requests_trace(export_process: bool) -> None:
    import httpx
    from fastapi import FastAPI

    import obskit

    with OtlpReceiver("grpc") as receiver:
        handle = obskit.init("access", otlp_endpoint=receiver.endpoint,
                             export_process=export_process,
                             log_stream=open(os.devnull, "w"))  # noqa: SIM115
        app = FastAPI()

        @app.get("/items/{item_id}")
        async def item(item_id: str) -> dict[str, str]:
            return {"item_id": item_id}

        @app.get("/basket")
        async def basket() -> dict[str, str]:
            obskit.add_request_fields(basket=("a", 1))  # not a plain value: str() as the SDK's
            return {}

        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app),
                                     base_url="http://shop.test") as client:
            assert (await client.get("/items/7")).status_code == 200
            assert (await client.get("/basket")).status_code == 200
        handle.force_flush(10)
        spans = receiver.wait_for_spans(
            lambda s: sum(x.kind == "SERVER" for x in s) == 2)
        logs = receiver.wait_for_logs(lambda s: any(x.body == "GET /basket 200" for x in s))
    span = next(x for x in spans if x.name == "GET /items/{item_id}")
    line = next(x for x in logs if x.body == "GET /items/7 200")  # not httpx's own line
    assert (line.trace_id, line.span_id) == (span.trace_id, span.span_id)
    assert line.attributes["route"] == "/items/{item_id}"
    assert line.attributes["duration_ms"] > 0 and line.attributes["status_code"] == 200
    extra = next(x for x in logs if x.body == "GET /basket 200")
    assert extra.attributes["basket"] == "('a', 1)"


def test_lean_spans_go_over_as_the_sdks_spans_do() -> None:
    from obskit._fastspan import FastTracer, LeanSpan
    from obskit._otlp_encode import SpanEncoder

    keep = _Keep()
    provider = TracerProvider(resource=Resource({"service.name": "lean"}),
                              span_limits=SpanLimits(max_span_attributes=3, max_events=1))
    provider.add_span_processor(SimpleSpanProcessor(keep))
    fast = FastTracer(provider.get_tracer("obskit", "1.0"))
    remote = SpanContext(0x1234, 0x5678, is_remote=True, trace_flags=TraceFlags(1),
                         trace_state=OTelTraceState([("v", "1")]))
    parent = trace.set_span_in_context(trace.NonRecordingSpan(remote))
    span = fast.start_span("GET /items/{id}", parent, SpanKind.SERVER,
                           {"http.request.method": "GET", "http.response.status_code": 200},
                           links=[Link(remote, {"l": 1})])
    span.start()
    span.set_attribute("a", 1)
    span.set_attribute("b", 2)  # over the limit of 3: the oldest is dropped
    span.add_event("e1", {"k": "v"})
    span.add_event("e2")  # over the limit of 1
    span.set_status(Status(StatusCode.ERROR, "no"))
    span.end()
    plain = fast.start_span("plain", None, SpanKind.CLIENT)
    plain.start()
    plain.end()
    assert all(type(s) is LeanSpan for s in keep.spans) and keep.spans[0].dropped_attributes
    sdk = encode_spans(keep.spans).SerializeToString(deterministic=True)
    assert SpanEncoder().request(_frame_of(keep.spans)) == sdk
    assert encode_spans(_through_the_pipe(keep.spans)).SerializeToString(deterministic=True) \
        == sdk


def test_a_log_lines_fields_are_taken_as_they_are_at_the_call() -> None:
    import logging as stdlib_logging

    tuples: list[tuple[Any, ...]] = []

    class Handoff:
        add_log = tuples.append

    export = _logging._OtlpExport(Handoff())
    basket = ["a"]
    record = stdlib_logging.makeLogRecord({"msg": "from stdlib"})
    export(None, "info", {"event": "e", "basket": basket, "obj": object.__name__,
                          "_record": record, "_from_structlog": False})
    basket.append("changed later")
    record.msg = "rendered later"
    (item,) = tuples
    attributes = _export_process.log_record(item)[7]
    assert attributes == {"basket": "['a']", "obj": "object"}  # str() at the call, as the SDK's


def test_the_drop_counters_have_series_from_the_start() -> None:
    import obskit

    with OtlpReceiver("grpc") as receiver:
        handle = obskit.init("series", otlp_endpoint=receiver.endpoint,
                             log_stream=open(os.devnull, "w"))  # noqa: SIM115
        assert handle.export_link is not None
        for name in ("obskit_telemetry_spans_dropped_total",
                     "obskit_telemetry_log_records_dropped_total"):
            for reason in ("queue_full", "export_failed"):
                assert handle.registry.get_sample_value(name, {"reason": reason}) == 0


@pytest.mark.parametrize(("path", "extra"), [
    ("/items/7", {}),
    ("/café/☃ \"q\" \\ \t", {"ok": True, "none": None}),
    ("/lone/\udcff", {}),  # orjson refuses it: json writes the line, and reads it back
    ("/items/7", {"big": 2**70}),  # beyond 64 bits: the same
])
def test_a_plain_lines_json_gives_the_record_its_fields_would(path: str,
                                                              extra: dict[str, Any]) -> None:
    """The access line (plain values, ``render(..., plain=True)``) goes over as its rendered
    JSON: the export process must make the same record of it as of its fields."""
    from obskit._logging import _json_renderer

    fields = {"event": f"GET {path} 200", "method": "GET", "route": "/items/{item_id}",
              "path": path, "status_code": 200, "duration_ms": 0.1 + 0.2, "client": "::1",
              "request_id": "r" * 32, "trace_id": f"{0xABC:032x}", "span_id": f"{0xDEF:016x}",
              "order_id": "ord-1", "level": "info", "logger": "obskit.access",
              "timestamp": "2026-12-06T20:00:00.000001Z", "service": "svc", **extra}
    tuples: list[tuple[Any, ...]] = []

    class Handoff:
        add_log = tuples.append

    export = _logging._OtlpExport(Handoff())
    ids = (0xABC, 0xDEF, 1)
    export(None, "info", dict(fields), ids)
    text = _json_renderer()(None, "info", dict(fields))
    tuples.append((time.time_ns(), *ids, text))  # as _logging's fast_render hands it over
    by_fields, by_text = tuples
    assert type(by_text[4]) is str and by_text[1:4] == by_fields[1:4] == ids
    frame = marshal.loads(_export_process._frame(("logs", tuples))[4:])
    records = [_export_process.log_record(item)[1:] for item in frame[1]]
    assert records[0] == records[1]
    assert records[1][6]["path"] == path and records[1][6]["duration_ms"] == 0.1 + 0.2
