import json
import os
import socket
import subprocess
import sys
import textwrap
import time
import urllib.request

import pytest
from opentelemetry import trace
from prometheus_client import CollectorRegistry

import obskit
from obskit.testing import init_for_tests


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _run(code: str, env: dict[str, str] | None = None,
         timeout: float = 60) -> subprocess.CompletedProcess:
    full_env = {**os.environ, "OBSKIT_RAISE_INTERNAL_ERRORS": "0", **(env or {})}
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], capture_output=True,
                          text=True, env=full_env, timeout=timeout)


def test_second_init_warns_and_returns_the_same_handle():
    with init_for_tests("svc", disabled_instrumentations="all") as t:
        with pytest.warns(RuntimeWarning, match="already called"):
            again = obskit.init("other")
        assert again is t.handle
        assert obskit.get_handle() is t.handle


def test_shutdown_is_idempotent_and_allows_a_new_init():
    with init_for_tests("first", disabled_instrumentations="all"):
        pass
    obskit.shutdown()
    with init_for_tests("second", disabled_instrumentations="all") as t:
        assert t.handle.service_name == "second"


def test_traced_sync_and_async_record_exceptions():
    import asyncio

    @obskit.traced
    def ok(x):
        return x * 2

    @obskit.traced(name="price order")
    async def boom():
        raise ValueError("no material")

    with init_for_tests("svc", disabled_instrumentations="all") as t:
        assert ok(21) == 42
        with pytest.raises(ValueError, match="no material"):
            asyncio.run(boom())
    sync_span, async_span = t.spans
    assert sync_span.name.endswith("ok") and sync_span.status.is_ok
    assert async_span.name == "price order"
    assert async_span.status.status_code.name == "ERROR"
    (event,) = async_span.events
    assert event.name == "exception"
    assert event.attributes["exception.type"] == "ValueError"


def test_resource_and_sampler_from_settings():
    with init_for_tests("mes", disabled_instrumentations="all", environment="staging",
                        service_version="1.2.3", traces_sampler="traceidratio",
                        traces_sampler_arg=0.0) as t:
        with trace.get_tracer("t").start_as_current_span("never sampled"):
            pass
    assert t.spans == ()
    attrs = t.handle.tracer_provider.resource.attributes
    assert attrs["service.name"] == "mes" and attrs["service.version"] == "1.2.3"
    assert attrs["deployment.environment"] == "staging"
    assert len(attrs["service.instance.id"]) == 36


def test_metrics_port_serves_the_catalogue():
    port = _free_port()
    registry = CollectorRegistry()
    obskit.init("svc", registry=registry, metrics_port=port, metrics_addr="127.0.0.1",
                spans_file="off", disabled_instrumentations="all", log_stream=open(os.devnull, "w"))
    obskit.record_stage("accepted", order_id="o-1", channel="b2c")
    body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    assert 'obskit_order_stage_transitions_total{channel="b2c",stage="accepted"} 1.0' in body
    assert "o-1" not in body
    obskit.shutdown()
    with pytest.raises(OSError):
        urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=2)


def test_port_in_use_does_not_break_the_service():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        with init_for_tests("svc", disabled_instrumentations="all", metrics_port=port,
                            metrics_addr="127.0.0.1") as t:
            assert t.handle.metrics_server is None
    assert any("cannot serve metrics" in ln["event"] for ln in t.logs)


def test_without_endpoint_spans_go_to_a_jsonl_file_and_are_flushed_at_exit(tmp_path):
    spans_file = tmp_path / "spans.jsonl"
    r = _run(
        """
        import obskit
        from opentelemetry import trace
        obskit.init("filesvc")
        with obskit.order_context("ord-9", channel="b2c"):
            with trace.get_tracer("t").start_as_current_span("work"):
                obskit.get_logger("x").info("working")
        """,
        env={"OBSKIT_SPANS_FILE": str(spans_file), "OBSKIT_LOG_FORMAT": "json"},
    )
    assert r.returncode == 0, r.stderr
    (span,) = [json.loads(line) for line in spans_file.read_text().splitlines()]
    assert span["name"] == "work" and span["attributes"]["order.id"] == "ord-9"
    (log,) = [json.loads(line) for line in r.stdout.splitlines() if "working" in line]
    assert log["trace_id"] == span["context"]["trace_id"].removeprefix("0x")


def test_sdk_disabled_keeps_logs_and_metrics():
    with init_for_tests("svc", disabled_instrumentations="all", sdk_disabled=True) as t:
        obskit.record_stage("accepted", order_id="o", channel="b2c")
    assert t.handle.tracer_provider is None
    assert t.metric("obskit_order_stage_transitions_total",
                    {"stage": "accepted", "channel": "b2c"}) == 1
    assert t.logs[0]["order_id"] == "o"


def test_safe_at_import_time_with_a_dead_collector():
    port = _free_port()  # nothing listens there
    start = time.monotonic()
    r = _run(
        """
        import obskit
        obskit.init("importer")   # e.g. at module top level
        obskit.get_logger("x").info("up")
        """,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
             "OTEL_EXPORTER_OTLP_TIMEOUT": "500"},
    )
    assert r.returncode == 0, r.stderr
    assert any(json.loads(ln).get("event") == "up" for ln in r.stdout.splitlines())
    # exit flush is bounded even though the collector is unreachable
    assert time.monotonic() - start < 30


@pytest.mark.parametrize("export_process", ["1", "0"])
@pytest.mark.parametrize("protocol", ["grpc", "http/protobuf"])
def test_dead_collector_neither_raises_nor_blocks_and_counts_drops(protocol, export_process):
    port = _free_port()
    r = _run(
        """
        import json, sys, time, obskit
        from opentelemetry import trace
        h = obskit.init("deadcol", log_format="json")
        tracer = trace.get_tracer("t")
        t0 = time.perf_counter()
        for i in range(5000):
            with tracer.start_as_current_span("req"):
                pass
        elapsed = time.perf_counter() - t0
        cat = h.catalogue

        def dropped():
            return sum(cat.registry.get_sample_value(
                "obskit_telemetry_spans_dropped_total", {"reason": r}) or 0
                for r in ("queue_full", "export_failed"))

        # In-process, drops are counted as they happen; the export process reports its own
        # (a full queue there, failed exports) as they happen too, a moment later.
        deadline = time.monotonic() + 20
        while dropped() < 5000 - 512 - 512 and time.monotonic() < deadline:
            time.sleep(0.05)
        dropped = dropped()
        # stderr: the exporter thread's log lines go to stdout and could split a print there
        print(json.dumps({"elapsed": elapsed, "dropped": dropped}), file=sys.stderr)
        """,
        env={"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{port}",
             "OTEL_EXPORTER_OTLP_PROTOCOL": protocol, "OTEL_EXPORTER_OTLP_TIMEOUT": "1000",
             "OTEL_BSP_MAX_QUEUE_SIZE": "512", "OTEL_BSP_SCHEDULE_DELAY": "50",
             "OBSKIT_EXPORT_PROCESS": export_process},
    )
    assert r.returncode == 0, r.stderr
    (result,) = [json.loads(ln) for ln in r.stderr.splitlines() if ln.startswith('{"elapsed"')]
    # everything is accounted as dropped except what still sits in the queue or in one batch
    assert result["dropped"] >= 5000 - 512 - 512
    # 5000 spans must take well under one export timeout: nothing waited on the network.
    assert result["elapsed"] < 1.0, result
    assert "Queue full" not in r.stdout + r.stderr


def test_fork_child_keeps_working(tmp_path):
    spans_file = tmp_path / "spans.jsonl"
    r = _run(
        """
        import os, obskit
        from opentelemetry import trace
        obskit.init("forker", log_format="json")
        tracer = trace.get_tracer("t")
        with tracer.start_as_current_span("parent-before-fork"):
            pass
        pid = os.fork()
        if pid == 0:
            with tracer.start_as_current_span("in-child"):
                obskit.get_logger("child").info("child says hi", pid=os.getpid())
            obskit.shutdown()   # flushes the child's exporter
            os._exit(0)
        _, status = os.waitpid(pid, 0)
        assert status == 0, status
        with tracer.start_as_current_span("parent-after-fork"):
            pass
        """,
        env={"OBSKIT_SPANS_FILE": str(spans_file)},
        timeout=30,
    )
    assert r.returncode == 0, r.stderr
    spans = {s["name"]: s for s in map(json.loads, spans_file.read_text().splitlines())}
    assert sorted(spans) == ["in-child", "parent-after-fork", "parent-before-fork"]
    # A forked worker is an instance of its own (its spans must not look like the parent's).
    instance = {name: s["resource"]["attributes"]["service.instance.id"]
                for name, s in spans.items()}
    assert instance["parent-before-fork"] == instance["parent-after-fork"]
    assert instance["in-child"] != instance["parent-before-fork"]
    child_logs = [json.loads(line) for line in r.stdout.splitlines() if "child says hi" in line]
    assert len(child_logs) == 1 and child_logs[0]["trace_id"]


def test_public_api_is_exactly_all():
    public = {n for n in dir(obskit) if not n.startswith("_")}
    modules = {"exposition", "metrics", "processors", "propagation", "integrations", "cli",
               "testing", "rabbitmq", "bundle", "journey"}
    assert public - modules == set(obskit.__all__) - {"__version__"}
