"""``obskit doctor``: what obskit would do in this environment, and whether it can.

Prints the effective configuration (with where each value came from; secrets masked), which
integrations would be active, which fast paths are active (and why one is off), and whether the
OTLP endpoint and the metrics port are reachable. Exit code 0 when everything configured is
reachable, 1 otherwise; a fast path that is off is a warning, not a failure.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import json
import socket
from typing import Any, NamedTuple
from urllib.parse import urlparse

from obskit import _config, _fastpaths
from obskit.integrations import INTEGRATIONS


def register(sub: Any) -> None:
    p = sub.add_parser("doctor", help="show effective configuration, integrations and "
                       "reachability of the OTLP endpoint, metrics port and journey store")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument("--timeout", type=float, default=2.0, help="seconds per reachability check")
    p.set_defaults(func=run)


def _tcp_check(host: str, port: int, timeout: float) -> tuple[bool, str]:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True, f"{host}:{port} accepts connections"
    except OSError as exc:
        return False, f"{host}:{port} unreachable: {exc.strerror or exc}"


def _otlp_check(settings: _config.Settings, timeout: float) -> dict[str, Any]:
    endpoint = settings.otlp_endpoint
    if not endpoint:
        return {"configured": False, "ok": True,
                "detail": f"no endpoint; spans go to {settings.resolved_spans_file or 'nowhere'}"}
    url = urlparse(endpoint)
    default_port = 4317 if settings.otlp_protocol == "grpc" else 4318
    ok, detail = _tcp_check(url.hostname or "localhost", url.port or default_port, timeout)
    exported_by = ("an export process (python -m obskit._export_process)"
                   if settings.export_process else "the service's own threads")
    return {"configured": True, "ok": ok, "endpoint": endpoint,
            "protocol": settings.otlp_protocol, "export_process": settings.export_process,
            "detail": f"{detail}; encoded and sent by {exported_by}"}


def _metrics_check(settings: _config.Settings, timeout: float) -> dict[str, Any]:
    port = settings.metrics_port
    if port is None:
        return {"configured": False, "ok": True,
                "detail": "OBSKIT_METRICS_PORT unset; mount obskit.metrics_asgi_app() instead"}
    # Free → init() can bind it. Taken → either this service is already serving (fine) or
    # something else holds it; we say which we saw.
    probe = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        probe.bind((settings.metrics_addr, port))
        return {"configured": True, "ok": True, "port": port,
                "detail": f"port {port} is free: init() will serve /metrics there"}
    except OSError:
        host = "127.0.0.1" if settings.metrics_addr in ("0.0.0.0", "") else settings.metrics_addr
        ok, detail = _tcp_check(host, port, timeout)
        serving = _looks_like_metrics(host, port, timeout) if ok else False
        return {"configured": True, "ok": serving, "port": port,
                "detail": "port in use and serving Prometheus metrics" if serving
                else f"port {port} is taken by something that does not serve /metrics ({detail})"}
    finally:
        probe.close()


def _journey_check(settings: _config.Settings, timeout: float) -> dict[str, Any]:
    if not settings.journey_url:
        return {"configured": False, "ok": True,
                "detail": "OBSKIT_JOURNEY_URL unset: no order journeys, no stuck/lost counts"}
    try:
        from obskit._config import safe_url
        from obskit.journey import JourneyStore, StoreUnavailable

        store = JourneyStore(settings.journey_url, settings.journey_prefix, timeout=timeout)
    except ImportError:
        return {"configured": True, "ok": False,
                "detail": "the redis package is missing: pip install 'obskit[journey]'"}
    try:
        store.ping()
        leader = store.leader()
    except StoreUnavailable as exc:
        return {"configured": True, "ok": False, "detail": str(exc)}
    finally:
        store.close()
    who = f"active sweeper: {leader}" if leader else "no active sweeper right now"
    return {"configured": True, "ok": True, "url": safe_url(settings.journey_url),
            "detail": f"{safe_url(settings.journey_url)} reachable; {who}"}


def _looks_like_metrics(host: str, port: int, timeout: float) -> bool:
    import urllib.request

    try:
        with urllib.request.urlopen(f"http://{host}:{port}/metrics", timeout=timeout) as r:
            return b"# HELP" in r.read(65536)
    except Exception:
        return False


def _integrations(settings: _config.Settings) -> list[dict[str, str]]:
    out = []
    disabled = settings.disabled_instrumentations
    for name in INTEGRATIONS:
        if name in disabled or "all" in disabled:
            out.append({"name": name, "state": "disabled"})
            continue
        try:
            module = importlib.import_module(f"obskit.integrations.{name}")
        except ImportError as exc:
            out.append({"name": name, "state": "unavailable", "detail": str(exc)})
            continue
        libs = getattr(module, "LIBRARIES", ())
        missing = [lib for lib in libs if importlib.util.find_spec(lib) is None]
        if missing:
            out.append({"name": name, "state": "missing", "detail": f"not installed: {missing[0]}"})
        else:
            out.append({"name": name, "state": "would be active"})
    return out


class _Probe(NamedTuple):
    """What makes a fast path decide in this process."""

    path: str | None  # the path it decides; None: the module decides one or more at import
    target: str  # a module that decides at import, or "module:function"
    extra: str = ""  # the obskit extra that installs what the module needs (named when missing)


#: Which module decides which fast path. Here, not in obskit._fastpaths: the core imports that
#: registry, so it must not reach back into the modules that report to it.
_PROBES: tuple[_Probe, ...] = (
    _Probe(None, "obskit._context"),  # baggage_direct
    _Probe(None, "obskit._otel_context"),  # context_direct
    _Probe(None, "obskit._tracing"),  # span_attributes_direct
    _Probe("lean_spans", "obskit._fastspan:probe_fast_path"),
    _Probe("span_queue_drop", "obskit._tracing:probe_fast_paths"),  # and the exporter paths
    _Probe("log_queue_drop", "obskit._tracing:probe_fast_paths"),
    _Probe("stepped_otlp_spans", "obskit._tracing:probe_fast_paths"),
    _Probe("stepped_otlp_logs", "obskit._tracing:probe_fast_paths"),
    _Probe("direct_otlp_encoding", "obskit._tracing:probe_fast_paths"),
    # Only obskit.rabbitmq uses these, and its package needs aio-pika (which brings pamqp).
    _Probe("amqp_propagation", "obskit.rabbitmq._propagation", "rabbitmq"),
    _Probe("amqp_properties", "obskit.rabbitmq._properties", "rabbitmq"),
    _Probe("fastapi_telemetry_layer", "obskit.integrations.fastapi:probe_fast_path"),
    _Probe(None, "obskit.integrations._http"),  # span_context_by_index
    _Probe("http_deferred_bookkeeping", "obskit.integrations._http:probe_fast_path"),
    _Probe("lean_histograms", "obskit.metrics:probe_fast_path"),
)


def probe_fast_paths() -> None:
    """Make every fast path not decided yet in this process decide now. Never raises; a path
    whose module cannot be imported is reported off, "not needed", naming what is missing."""
    for probe in _PROBES:
        if probe.path is not None and _decided(probe.path):
            continue
        module_name, _, function = probe.target.partition(":")
        try:
            module = importlib.import_module(module_name)
            if function:
                getattr(module, function)()
        except Exception as exc:
            if probe.path is not None and not _decided(probe.path):
                _fastpaths.report(probe.path, False, _reason(exc, probe.extra))


def _decided(name: str) -> bool:
    return any(path.name == name and active is not None
               for path, active, _ in _fastpaths.status())


def _reason(exc: Exception, extra: str) -> str:
    if not isinstance(exc, ImportError):
        return f"probe failed: {type(exc).__name__}: {exc}"
    fix = f" (the {extra} extra: pip install 'obskit[{extra}]')" if extra else ""
    return f"not needed: {exc.name or exc} is not installed{fix}"


def _fast_paths() -> list[dict[str, Any]]:
    """Each fast path ``active``, ``off`` (with the reason) or ``undecided``, after probing."""
    probe_fast_paths()
    out = []
    for path, active, reason in _fastpaths.status():
        state = "undecided" if active is None else "active" if active else "off"
        item: dict[str, Any] = {"name": path.name, "state": state}
        if state == "off":
            item["detail"] = reason
            item["warning"] = not _fastpaths.quiet_reason(reason)
        out.append(item)
    return out


def run(args: argparse.Namespace) -> int:
    try:
        settings = _config.resolve({})
    except ValueError as exc:
        print(f"configuration error: {exc}")
        return 1
    report: dict[str, Any] = {
        "configuration": {
            name: {"value": value, "source": settings.sources[name]}
            for name, value in settings.masked().items()
        },
        "integrations": _integrations(settings),
        "fast_paths": _fast_paths(),
        "otlp": _otlp_check(settings, args.timeout),
        "metrics": _metrics_check(settings, args.timeout),
        "journey": _journey_check(settings, args.timeout),
    }
    ok = report["otlp"]["ok"] and report["metrics"]["ok"] and report["journey"]["ok"]
    report["ok"] = ok
    if args.json:
        print(json.dumps(report, indent=2, default=str))
        return 0 if ok else 1
    print("obskit doctor\n\nconfiguration (argument > env > default):")
    for name, item in report["configuration"].items():
        value = item["value"]
        shown = "—" if value in (None, [], {}, "") else value
        print(f"  {name:<26} {shown!s:<40} ({item['source']})")
    print("\nintegrations:")
    for item in report["integrations"]:
        detail = f" ({item['detail']})" if item.get("detail") else ""
        print(f"  {item['name']:<12} {item['state']}{detail}")
    print("\nfast paths:")
    for item in report["fast_paths"]:
        detail = f" ({item['detail']})" if item.get("detail") else ""
        print(f"  {item['name']:<26} {item['state']}{detail}")
    mark = {True: "ok  ", False: "FAIL"}
    print(f"\nOTLP endpoint   {mark[report['otlp']['ok']]} {report['otlp']['detail']}")
    print(f"metrics port    {mark[report['metrics']['ok']]} {report['metrics']['detail']}")
    print(f"journey store   {mark[report['journey']['ok']]} {report['journey']['detail']}")
    return 0 if ok else 1
