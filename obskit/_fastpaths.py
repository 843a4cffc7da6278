"""obskit's fast paths, and every private internal of another library that obskit uses, in one list.

A fast path does what a library's public API would do, with less Python per call, and falls back
to that public (slower) path when the library does not look as expected. Each decides once, where
it is set up (some at import), calls :func:`report` with its decision and reason, and honours
:func:`enabled`, so that ``OBSKIT_DISABLE_FAST_PATHS=name1,name2`` (or ``all``) forces the fallback.
A reason starting with "not needed" (or "disabled") is not a problem: ``obskit.init()`` logs those
with the active paths at INFO and the other off ones at WARNING; ``obskit doctor`` shows them all
(it makes each path decide first: obskit.cli.doctor knows which module decides which path).

``private`` lists the private internals each path reads or writes ("dist: module.attr"),
``OTHER_PRIVATE`` those used for something other than speed, and ``checked`` the versions each
was verified on. docs/compatibility.md's section is generated from both
(``python -m obskit._fastpaths --write docs/compatibility.md``).

This module imports nothing of obskit, not even by name at run time: the core and the
integrations import it (tests/test_imports.py).
"""

from __future__ import annotations

import logging
import os
import threading
from dataclasses import dataclass

__all__ = ["FAST_PATHS", "OTHER_PRIVATE", "FastPath", "enabled", "log_report", "quiet_reason",
           "report", "status"]

#: The env var that turns fast paths off. Read at each ``enabled()`` call, but paths decide at
#: import or setup time: set it before the process starts (see obskit._config).
DISABLE_ENV = "OBSKIT_DISABLE_FAST_PATHS"


@dataclass(frozen=True, slots=True)
class FastPath:
    name: str
    what: str  # what it speeds up and the measured gain
    private: tuple[str, ...]  # "dist: module.attr" for each private internal it uses
    checked: str  # versions it was verified against


# The versions each entry was verified on, the floor (constraints/floor.txt) and the newest:
# each fast path reported active and its forced fallback gave the same telemetry
# (tests/test_fastpaths.py).
_OTEL = "opentelemetry-api/-sdk 1.45.0, 1.45.1"
_OTLP = "opentelemetry-exporter-otlp-proto-grpc/-common 1.45.0, 1.45.1"
_PAMQP = "pamqp 4.0.1 (aio-pika 10.0.0 and 10.2.1)"
_FASTAPI = "fastapi 0.142.0, 0.165.0 (before 0.142: no such layer, not needed)"
_SPAN_FIELDS = ("opentelemetry-sdk: trace.Span._name, _context, _parent, _kind, _attributes, "
                "_events, _links, _status, _start_time, _end_time, _resource, "
                "_instrumentation_scope, _span_processor, _limits, _record_end_metrics, _lock "
                "(set by LeanSpan instead of Span.__init__)")

FAST_PATHS: tuple[FastPath, ...] = (
    FastPath(
        "lean_spans",
        "obskit's HTTP server and messaging spans as LeanSpans (no per-span locks, bounded "
        "containers or end() copy, sampling inline): a recording SDK span cost 30-45 µs inside "
        "a request in a loaded server (docs/explanation/fast-paths.md)",
        ("opentelemetry-sdk: trace.Tracer._instrumentation_scope, _span_limits, _tracer_config, "
         "_tracer_metrics",
         "opentelemetry-sdk: trace.SynchronousMultiSpanProcessor._span_processors",
         "opentelemetry-sdk: trace.SpanProcessor._on_ending",
         _SPAN_FIELDS,
         "opentelemetry-sdk: trace.sampling.ParentBased._root, _remote_parent_sampled, "
         "_remote_parent_not_sampled, _local_parent_sampled, _local_parent_not_sampled",
         "opentelemetry-sdk: trace.sampling.StaticSampler._decision",
         "opentelemetry-api: attributes._clean_attribute_value"),
        f"{_OTEL} (1.43.0, 1.44.0: off, no _clean_attribute_value)",
    ),
    FastPath(
        "stepped_otlp_spans",
        "OTLP/gRPC span export encodes a batch 24 spans at a time and offers the GIL in between "
        "(the same request): p99.9 of a 0.2 ms request 10.5 → 3.3-4.2 ms while a batch of 512 "
        "is encoded",
        ("opentelemetry-exporter-otlp-proto-grpc: trace_exporter.OTLPSpanExporter"
         "._translate_data (overridden)",),
        _OTLP,
    ),
    FastPath(
        "direct_otlp_encoding",
        "the export process writes OTLP/gRPC requests' protobuf bytes from its tuples "
        "(obskit._otlp_encode) instead of rebuilding the SDK's objects for its encoder: the "
        "same bytes, for a fraction of the export process's CPU (docs/explanation/"
        "export-process.md)",
        ("opentelemetry-exporter-otlp-proto-grpc: trace_exporter.OTLPSpanExporter"
         "._translate_data and _log_exporter.OTLPLogExporter._translate_data (overridden)",),
        _OTLP,
    ),
    FastPath(
        "stepped_otlp_logs",
        "the same stepped encoding for OTLP/gRPC log export",
        ("opentelemetry-exporter-otlp-proto-grpc: _log_exporter.OTLPLogExporter._translate_data "
         "(overridden)",
         "opentelemetry-exporter-otlp-proto-common: _log_encoder.encode_logs"),
        _OTLP,
    ),
    FastPath(
        "span_queue_drop",
        "a span that finds the export queue full is counted and dropped before the SDK builds "
        "its 'Queue full' log record (~5 µs per span), and queued without a second dispatch; "
        "the fallback counts the queue itself and may drop up to one batch early",
        ("opentelemetry-sdk: trace.export.BatchSpanProcessor._batch_processor",
         "opentelemetry-sdk: _shared_internal.BatchProcessor._queue, _max_queue_size, emit"),
        _OTEL,
    ),
    FastPath(
        "log_queue_drop",
        "an OTLP log record that finds the export queue full is counted and dropped before the "
        "SDK logs 'Queue full'; the fallback counts the queue itself (see span_queue_drop)",
        ("opentelemetry-sdk: _logs.export.BatchLogRecordProcessor._batch_processor",
         "opentelemetry-sdk: _shared_internal.BatchProcessor._queue, _max_queue_size"),
        _OTEL,
    ),
    FastPath(
        "span_attributes_direct",
        "obskit's own (already valid) attributes written straight into an SDK span's attribute "
        "dict: the SDK validates and locks per attribute (~0.7 µs each, ~30 % of a server "
        "span's cost)",
        ("opentelemetry-sdk: trace.Span._attributes",
         "opentelemetry-api: attributes.BoundedAttributes._dict, _immutable"),
        _OTEL,
    ),
    FastPath(
        "context_direct",
        "the request path's context current/attach/detach and span-in-context done on the "
        "runtime's ContextVar in one step; the API's functions are several Python calls deep "
        "(each ≤ 0.7 µs of a request's samples)",
        ("opentelemetry-api: context._RUNTIME_CONTEXT",
         "opentelemetry-api: context.contextvars_context.ContextVarsRuntimeContext"
         "._current_context",
         "opentelemetry-api: trace.propagation._SPAN_KEY"),
        _OTEL,
    ),
    FastPath(
        "baggage_direct",
        "the order id read from (and set in) the context's baggage dict itself instead of the "
        "read-only copy baggage.get_all() makes per call: current_order() ~1.1 vs ~1.9 µs, "
        "called at every span start and access line",
        ("opentelemetry-api: baggage._BAGGAGE_KEY",),
        _OTEL,
    ),
    FastPath(
        "amqp_propagation",
        "traceparent and baggage AMQP headers written and parsed directly when the global "
        "propagator is the default W3C pair: the propagator API cost more per message than the "
        "rest of the header work (docs/explanation/fast-paths.md)",
        ("opentelemetry-api: trace.propagation._SPAN_KEY",
         "opentelemetry-api: baggage._BAGGAGE_KEY",
         "opentelemetry-api: propagators.composite.CompositePropagator._propagators"),
        _OTEL,
    ),
    FastPath(
        "amqp_properties",
        "a publish's AMQP properties marshalled by obskit with pamqp's bytes: 6.6 → 3.9 µs per "
        "message (about a fifth of what obskit adds to a raw aio-pika publish)",
        ("pamqp: commands.Basic.Properties.__slots__, flags, amqp_type (the frame layout)",
         "pamqp: encode.METHODS, encode.encode_table_value"),
        _PAMQP,
    ),
    FastPath(
        "fastapi_telemetry_layer",
        "FastAPI's ExceptionTelemetryMiddleware unlinked while its native telemetry is off: one "
        "await less per request; measured within the noise (156 vs 157 µs per request)",
        ("fastapi: telemetry._asgi.ExceptionTelemetryMiddleware",
         "fastapi: FastAPI._telemetry (the app's telemetry config)"),
        _FASTAPI,
    ),
    FastPath(
        "http_deferred_bookkeeping",
        "a finished request's RED metrics and access line made in batches off the request path "
        "(obskit.integrations._http.finish): ~10 µs less per request in a loaded server than "
        "inline (docs/explanation/performance.md)",
        (),
        "",
    ),
    FastPath(
        "lean_histograms",
        "the catalogue's labelled histograms observe with one call, a bisect and one lock "
        "(obskit.metrics.LeanHistogram, exposed through prometheus-client's public collector "
        "API) instead of prometheus-client's six calls and two locks: 6.6k of the 14k "
        "instructions an observation cost per request in obskit's HTTP middleware, callgrind "
        "(benchmarks/HISTORY.md)",
        (),
        "",
    ),
    FastPath(
        "span_context_by_index",
        "the request path reads a SpanContext's fields by tuple index instead of its properties "
        "(checked once at import, obskit.integrations._http)",
        ("opentelemetry-api: trace.SpanContext tuple layout "
         "(trace_id, span_id, is_remote, trace_flags, trace_state, is_valid)",),
        _OTEL,
    ),
)

#: Private internals obskit uses that are not fast paths (no faster public twin): listed here so
#: that every private reach is in one place, with the versions it was checked against.
OTHER_PRIVATE: tuple[FastPath, ...] = (
    FastPath(
        "fork_instance_id",
        "a forked worker gets its own service.instance.id on the resources already shared by "
        "its tracers (resources are immutable in the API); without it the id stays the parent's",
        ("opentelemetry-sdk: resources.Resource._attributes",
         "opentelemetry-api: attributes.BoundedAttributes._dict"),
        _OTEL,
    ),
    FastPath(
        "fastapi_native_telemetry_off",
        "FastAPI's native telemetry switched off while obskit instruments FastAPI (one SERVER "
        "span per request, not five)",
        ("fastapi: telemetry._asgi.NativeTelemetry.enabled (replaced)",
         "fastapi: FastAPI._telemetry (the app's telemetry config)"),
        "fastapi 0.142.0, 0.165.0 (before 0.142: no native telemetry)",
    ),
    FastPath(
        "integration_details",
        "facts read from instrumented objects: the pika channel acks go to, the DB system of a "
        "contrib cursor tracer, an aio-pika queue iterator's queue name, whether an aio-pika "
        "message was consumed with no_ack (each with a default when missing)",
        ("pika: adapters.blocking_connection.BlockingChannel._impl",
         "opentelemetry-instrumentation-dbapi: CursorTracer._db_api_integration",
         "aio-pika: queue.QueueIterator._amqp_queue",
         "aio-pika: message.IncomingMessage.__no_ack (name-mangled)"),
        "pika 1.3.0, 1.4.4; opentelemetry-instrumentation-dbapi 0.66b0, 0.66b1; "
        "aio-pika 10.0.0, 10.2.1",
    ),
    FastPath(
        "otel_logs_api",
        "OTLP log export and the OTel logging handler: the logs API and SDK are published under "
        "underscore module names",
        ("opentelemetry-api: _logs", "opentelemetry-sdk: _logs, _logs.export"),
        _OTEL,
    ),
)

_BY_NAME = {path.name: path for path in FAST_PATHS}
_decisions: dict[str, tuple[bool, str]] = {}
_lock = threading.Lock()


def enabled(name: str) -> bool:
    """False when ``OBSKIT_DISABLE_FAST_PATHS`` names ``name`` (or says ``all``)."""
    _known(name)
    raw = os.environ.get(DISABLE_ENV, "")
    if not raw:
        return True
    names = {part.strip().lower().replace("-", "_") for part in raw.split(",")}
    return name not in names and "all" not in names


def report(name: str, active: bool, reason: str = "") -> None:
    """A fast path's own decision for this process (the latest wins)."""
    _known(name)
    with _lock:
        _decisions[name] = (bool(active), "" if active else reason or "off")


def status() -> list[tuple[FastPath, bool | None, str]]:
    """Each fast path with its decision in this process (None: not decided yet) and why."""
    with _lock:
        decided = dict(_decisions)
    return [(path, *decided.get(path.name, (None, ""))) for path in FAST_PATHS]


def quiet_reason(reason: str) -> bool:
    """An off path that is not a problem: switched off by the user, or not needed here."""
    return reason == "disabled" or reason.startswith("not needed")


def log_report(log: logging.Logger) -> None:
    """The decisions taken so far: active ones (and deliberately off ones) in one INFO line, the
    others in one WARNING line."""
    active: list[str] = []
    quiet: list[str] = []
    off: list[str] = []
    for path, on, reason in status():
        if on:
            active.append(path.name)
        elif on is False:
            (quiet if quiet_reason(reason) else off).append(f"{path.name} ({reason})")
    if active or quiet:
        log.info("obskit fast paths active: %s%s", ", ".join(active) or "none",
                 f"; off: {', '.join(quiet)}" if quiet else "")
    if off:
        log.warning("obskit fast paths off (the public, slower path is used): %s",
                    "; ".join(off))


def _known(name: str) -> None:
    if name not in _BY_NAME:
        raise ValueError(f"unknown fast path {name!r}; known: {', '.join(_BY_NAME)}")


def markdown() -> str:
    """The table of docs/compatibility.md (between its ``fastpaths`` markers)."""
    def row(path: FastPath) -> str:
        private = "<br>".join(f"`{p}`" for p in path.private) or "—"
        return f"| `{path.name}` | {path.what} | {private} | {path.checked or '—'} |"

    head = "| path | what it buys | private internals used | checked on |\n|---|---|---|---|"
    lines = ["Fast paths (each can be switched off with `OBSKIT_DISABLE_FAST_PATHS`; "
             "`obskit doctor` shows which are active):", "", head]
    lines += [row(p) for p in FAST_PATHS]
    lines += ["", "Other private internals (no faster public twin; each has a default when "
              "missing):", "", head.replace("what it buys", "what for")]
    lines += [row(p) for p in OTHER_PRIVATE]
    return "\n".join(lines) + "\n"


def with_section(text: str) -> str:
    """``text`` (docs/compatibility.md) with its ``fastpaths`` section regenerated."""
    begin, end = "<!-- fastpaths:begin -->\n", "<!-- fastpaths:end -->"
    head, rest = text.split(begin, 1)
    return head + begin + markdown() + end + rest.split(end, 1)[1]


if __name__ == "__main__":  # ``--write FILE``: regenerate FILE's section; else print the table
    import sys

    if sys.argv[1:2] == ["--write"]:
        with open(sys.argv[2], encoding="utf-8") as f:
            updated = with_section(f.read())
        with open(sys.argv[2], "w", encoding="utf-8") as f:
            f.write(updated)
    else:
        print(markdown(), end="")
