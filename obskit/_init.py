"""``init()`` / ``shutdown()``: wire settings, traces, logs, metrics and integrations together.

Global state department: one ``Handle`` per process. A second ``init()`` warns and returns it.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import warnings
from dataclasses import dataclass, field
from typing import Any, TextIO

from prometheus_client import CollectorRegistry

from obskit import _config, _deferred, _fastpaths, _logging, _tracing, journey
from obskit._internal import internal_error
from obskit.integrations import IntegrationStatus, instrument_all, uninstrument_all
from obskit.metrics import Catalogue, catalogue, set_active

__all__ = ["Handle", "get_handle", "init", "shutdown"]

_log = logging.getLogger("obskit")
_lock = threading.RLock()
_handle: Handle | None = None


@dataclass
class Handle:
    """What ``init()`` set up. ``obskit doctor`` prints it; tests inspect it."""

    settings: _config.Settings
    catalogue: Catalogue
    registry: CollectorRegistry
    tracer_provider: Any | None  # None when OTEL_SDK_DISABLED
    logger_provider: Any | None  # None unless logs go over OTLP
    integrations: list[IntegrationStatus] = field(default_factory=list)
    metrics_server: Any | None = None
    export_link: Any | None = None  # the export process's link (obskit._export_process)
    pid: int = field(default_factory=os.getpid)

    @property
    def service_name(self) -> str:
        return str(self.settings.service_name)

    @property
    def metrics_port(self) -> int | None:
        server = self.metrics_server
        return None if server is None else int(server.server_port)

    def active_integrations(self) -> list[str]:
        return [s.name for s in self.integrations if s.state == "active"]

    def force_flush(self, timeout_seconds: float = 5.0) -> None:
        _deferred.flush()
        journey.flush(timeout_seconds)
        for p in (self.tracer_provider, self.logger_provider):
            if p is not None:
                try:
                    p.force_flush(int(timeout_seconds * 1000))
                except Exception:  # noqa: S110 - flushing is best effort
                    pass


def get_handle() -> Handle | None:
    return _handle


def init(service_name: str | None = None, *, registry: CollectorRegistry | None = None,
         tracer_provider: Any | None = None, log_stream: TextIO | None = None,
         **options: Any) -> Handle:
    """Make this process observable: correlated logs, traces and metrics in one call.

    ``service_name`` and every keyword in ``options`` are the options of docs/configuration.md;
    a keyword wins over its env var, which wins over the default. ``registry`` and
    ``tracer_provider`` replace the global prometheus registry / OTel tracer provider (tests);
    ``log_stream`` replaces stdout for log lines.

    Idempotent (a second call warns and returns the first handle) and safe at import time: nothing
    here blocks on the network. Bad option values raise ``ValueError`` naming the option.
    """
    global _handle
    with _lock:
        if _handle is not None:
            warnings.warn("obskit.init() was already called in this process; returning the "
                          "existing handle (call obskit.shutdown() first to re-initialise)",
                          RuntimeWarning, stacklevel=2)
            return _handle
        settings = _config.resolve({"service_name": service_name, **options})
        cat = catalogue(registry)
        set_active(cat)

        provider = None
        logger_provider = None
        link = None
        if not settings.sdk_disabled:
            log_resource = (_tracing.build_resource(settings)
                            if settings.otlp_endpoint and settings.export_logs else None)
            if settings.otlp_endpoint and settings.export_process:
                link = _tracing.export_link(settings, cat, log_resource)
            provider = _tracing.setup_tracer_provider(settings, cat, tracer_provider, link)
            if log_resource is not None:
                logger_provider = (_tracing.HandoffLogs(link, log_resource) if link is not None
                                   else _tracing.build_logger_provider(settings, log_resource,
                                                                       cat))
        _logging.configure(settings, logger_provider, stream=log_stream)

        handle = Handle(settings=settings, catalogue=cat, registry=cat.registry,
                        tracer_provider=provider, logger_provider=logger_provider,
                        export_link=link)
        if settings.metrics_port is not None:
            from obskit.exposition import start_metrics_server

            try:
                handle.metrics_server = start_metrics_server(
                    settings.metrics_port, settings.metrics_addr, registry)
            except OSError as exc:  # port taken: the service still runs, without /metrics
                _log.warning("obskit: cannot serve metrics on %s:%s: %s",
                             settings.metrics_addr, settings.metrics_port, exc)
        _handle = handle
        handle.integrations = instrument_all(handle, settings.disabled_instrumentations)
        journey.start(settings, cat)
        _logging.quiet_uvicorn_access(any(  # obskit writes the access line (now or on import)
            s.name in ("fastapi", "starlette") and s.state in ("active", "pending")
            for s in handle.integrations))
        _register_process_hooks()

        where = ("otlp " + settings.otlp_endpoint if settings.otlp_endpoint
                 else settings.resolved_spans_file or "nowhere")
        _logging.get_logger("obskit").debug(
            "obskit initialised", spans_to=None if settings.sdk_disabled else where,
            metrics_port=handle.metrics_port, integrations=handle.active_integrations())
        _fastpaths.log_report(_log)  # the decisions so far (others come with first use)
        return handle


def shutdown(timeout_seconds: float = 5.0) -> None:
    """Flush and stop exporters, undo instrumentation. Safe to call twice; registered at exit."""
    global _handle
    with _lock:
        handle, _handle = _handle, None
    if handle is None:
        return
    _deferred.flush()  # requests waiting in the batch: their metrics and lines, while all is up
    journey.stop(timeout_seconds)
    uninstrument_all()
    set_active(None)
    _logging.quiet_uvicorn_access(False)
    for p in (handle.tracer_provider, handle.logger_provider):
        if p is None:
            continue
        try:
            p.force_flush(int(timeout_seconds * 1000))
            p.shutdown()
        except Exception:  # noqa: S110 - exit must not fail because a collector is gone
            pass
    if handle.metrics_server is not None and handle.pid == os.getpid():
        try:
            handle.metrics_server.shutdown()
            handle.metrics_server.server_close()
        except Exception:  # noqa: S110
            pass
    _logging.reset()


_hooks_registered = False


def _register_process_hooks() -> None:
    global _hooks_registered
    if _hooks_registered:
        return
    _hooks_registered = True
    atexit.register(_flush_at_exit)
    if hasattr(os, "register_at_fork"):
        os.register_at_fork(after_in_child=_after_fork_in_child)


def _flush_at_exit() -> None:
    handle = _handle
    if handle is not None:
        shutdown(timeout_seconds=3.0)


def _after_fork_in_child() -> None:
    # The SDK's batch processors restart their worker threads themselves (register_at_fork).
    # The metrics server thread stayed in the parent: the child must not try to stop it, and
    # in multiprocess mode the parent's server already aggregates every worker's files.
    handle = _handle
    if handle is not None:
        handle.metrics_server = None
        handle.pid = os.getpid()
        if handle.export_link is not None:
            try:
                handle.export_link.after_fork_in_child()
            except Exception as exc:
                internal_error("fork.export", exc)
        try:
            journey.restart_after_fork(handle.settings, handle.catalogue)
        except Exception as exc:
            internal_error("fork.journey", exc)
        try:
            _tracing.renew_instance_id(
                p.resource for p in (handle.tracer_provider, handle.logger_provider)
                if p is not None)
        except Exception as exc:
            internal_error("fork.instance_id", exc)
