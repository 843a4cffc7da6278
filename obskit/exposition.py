"""Serve ``/metrics``: on a port (``OBSKIT_METRICS_PORT``) or as an ASGI/WSGI app to mount.

Multiprocess (gunicorn / ``uvicorn --workers``): set ``PROMETHEUS_MULTIPROC_DIR`` to an empty
directory *before* the server starts (prometheus-client reads it when metrics are created, so it
must be an env var, not an ``init()`` option). Each scrape then aggregates every worker's files,
and the live gauges of workers that died are removed first (``cleanup_dead_workers``), so a
restarted worker does not leave a stale ``http_server_active_requests``. Exemplars are not stored
in multiprocess mode (a prometheus-client limitation).
"""

from __future__ import annotations

import glob
import os
import re
import threading
from typing import Any

from prometheus_client import REGISTRY, CollectorRegistry

__all__ = [
    "cleanup_dead_workers",
    "metrics_asgi_app",
    "metrics_wsgi_app",
    "multiprocess_dir",
    "scrape_registry",
    "start_metrics_server",
]

_PID_FILE = re.compile(r"_(\d+)\.db$")


def multiprocess_dir() -> str | None:
    return os.environ.get("PROMETHEUS_MULTIPROC_DIR") or os.environ.get("prometheus_multiproc_dir")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def cleanup_dead_workers(path: str | None = None) -> list[int]:
    """Remove live-gauge files of worker processes that no longer exist; return their pids."""
    from prometheus_client import multiprocess

    path = path or multiprocess_dir()
    if not path:
        return []
    dead: set[int] = set()
    for f in glob.glob(os.path.join(path, "gauge_live*_*.db")):
        m = _PID_FILE.search(f)
        if m and not _alive(int(m.group(1))):
            dead.add(int(m.group(1)))
    for pid in dead:
        multiprocess.mark_process_dead(pid, path)
    return sorted(dead)


def gunicorn_child_exit(server: Any, worker: Any) -> None:
    """gunicorn's ``child_exit`` hook: ``from obskit.exposition import gunicorn_child_exit``."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


class _MultiProcessRegistry(CollectorRegistry):
    """Aggregates worker files at each scrape, after removing dead workers' live gauges."""

    def __init__(self, path: str) -> None:
        super().__init__()
        from prometheus_client import multiprocess

        self._path = path
        multiprocess.MultiProcessCollector(self, path)

    def collect(self):  # type: ignore[no-untyped-def]
        from obskit import _deferred

        _deferred.flush()  # this process's pending requests (others' wait <= 0.1 s)
        cleanup_dead_workers(self._path)
        return super().collect()


def scrape_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The registry to expose: the multiprocess aggregate when enabled, else ``registry``."""
    path = multiprocess_dir()
    if path and (registry is None or registry is REGISTRY):
        return _MultiProcessRegistry(path)
    return REGISTRY if registry is None else registry


class _MetricsASGI:
    """An ASGI app *object* (not a function), so Starlette's ``app.add_route("/metrics", ...)``
    serves it as-is at exactly ``/metrics`` — ``app.mount`` would redirect to ``/metrics/``."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        await self._inner(scope, receive, send)


def metrics_asgi_app(registry: CollectorRegistry | None = None) -> Any:
    """ASGI app serving the metrics (OpenMetrics with exemplars when the scraper asks for it).

    FastAPI / Starlette: ``app.add_route("/metrics", obskit.metrics_asgi_app())``.
    """
    from prometheus_client import make_asgi_app

    return _MetricsASGI(make_asgi_app(scrape_registry(registry)))


def metrics_wsgi_app(registry: CollectorRegistry | None = None) -> Any:
    from prometheus_client import make_wsgi_app

    return make_wsgi_app(scrape_registry(registry))


_server_lock = threading.Lock()


def start_metrics_server(port: int, addr: str = "0.0.0.0",
                         registry: CollectorRegistry | None = None) -> Any:
    """Start the /metrics HTTP server in a daemon thread; returns the server (``.server_port``)."""
    from prometheus_client import start_http_server

    with _server_lock:
        server, _thread = start_http_server(port, addr=addr, registry=scrape_registry(registry))
    return server
