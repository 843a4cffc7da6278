"""Helpers for testing code that uses obskit (and for obskit's own tests).

    from obskit.testing import init_for_tests

    def test_my_handler():
        with init_for_tests("svc") as t:
            handle_order(...)
        assert t.spans[0].name == "price order"
        assert t.logs[0]["order_id"] == "o-1"
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry

import obskit
from obskit._tracing import build_resource, build_sampler
from obskit.testing._otlp import OtlpReceiver, ReceivedLog, ReceivedSpan
from obskit.testing._prometheus import AlertmanagerProcess, PrometheusError, PrometheusProcess
from obskit.testing._redis import RedisServer
from obskit.testing._wait import wait_for, wait_for_async

__all__ = [
    "AlertmanagerProcess",
    "Captured",
    "OtlpReceiver",
    "PrometheusError",
    "PrometheusProcess",
    "ReceivedLog",
    "ReceivedSpan",
    "RedisServer",
    "init_for_tests",
    "reset_global_tracer_provider",
    "wait_for",
    "wait_for_async",
]


def reset_global_tracer_provider() -> None:
    """Let ``trace.set_tracer_provider`` run again (the OTel API allows it once per process).

    Test-only: touches OpenTelemetry's private globals.
    """
    from opentelemetry.util._once import Once

    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]


@dataclass
class Captured:
    handle: obskit.Handle
    exporter: InMemorySpanExporter
    stream: io.StringIO
    registry: CollectorRegistry

    @property
    def spans(self) -> tuple[ReadableSpan, ...]:
        return tuple(self.exporter.get_finished_spans())

    @property
    def logs(self) -> list[dict[str, Any]]:
        """The log lines written, without obskit's own start-up report (its fast paths)."""
        lines = [json.loads(line) for line in self.stream.getvalue().splitlines() if line.strip()]
        return [line for line in lines if not (
            line.get("logger") == "obskit"
            and str(line.get("event", "")).startswith("obskit fast paths"))]

    def metric(self, name: str, labels: dict[str, str] | None = None) -> float | None:
        return self.registry.get_sample_value(name, labels or {})


@contextmanager
def init_for_tests(service_name: str = "test", **options: Any) -> Iterator[Captured]:
    """``obskit.init()`` with spans in memory, JSON logs in a buffer and a private registry.

    Shuts obskit down afterwards so the next test can initialise again.
    """
    obskit.shutdown()
    reset_global_tracer_provider()
    options.setdefault("log_format", "json")
    options.setdefault("spans_file", "off")
    registry = CollectorRegistry()
    from obskit._config import resolve

    settings = resolve({"service_name": service_name, **options})
    provider = TracerProvider(resource=build_resource(settings), sampler=build_sampler(settings))
    exporter = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    stream = io.StringIO()
    handle = obskit.init(service_name, registry=registry, tracer_provider=provider,
                         log_stream=stream, **options)
    try:
        yield Captured(handle, exporter, stream, registry)
    finally:
        obskit.shutdown()
        reset_global_tracer_provider()

