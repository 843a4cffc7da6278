"""Real Prometheus and Alertmanager processes for tests, each on a free port with its own data.

    from obskit.testing import AlertmanagerProcess, PrometheusProcess

    with AlertmanagerProcess("alertmanager.yml") as am, PrometheusProcess("prometheus.yml") as prom:
        assert prom.query("up")
        assert prom.query_exemplars('http_server_request_duration_seconds_bucket', t0, t1)

Both listen on 127.0.0.1 only and never assume a default port (a system Prometheus may hold
:9090). Prometheus runs with exemplar storage, the remote-write receiver and the lifecycle API
(``reload()``). The binaries are the ones Debian packages: ``scripts/system-deps.sh`` installs
them.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx

__all__ = ["AlertmanagerProcess", "PrometheusError", "PrometheusProcess"]

_FIX = "run scripts/system-deps.sh (Debian packages prometheus and prometheus-alertmanager)"


class PrometheusError(RuntimeError):
    """The process did not start, or its HTTP API answered with an error."""


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


#: Searched after PATH (a test runner's PATH may be a venv's only).
_binary_dirs = ("/usr/bin",)


def _find_binary(names: Sequence[str]) -> str:
    for name in names:
        found = shutil.which(name) or next(
            (p for d in _binary_dirs if os.access(p := os.path.join(d, name), os.X_OK)), None)
        if found:
            return found
    raise FileNotFoundError(f"none of {', '.join(names)} found on PATH or in "
                            f"{', '.join(_binary_dirs)}; {_FIX}")


class _Process:
    """A server binary on a port of 127.0.0.1, with a data dir removed when it stops."""

    _binaries: tuple[str, ...] = ()
    _what = ""

    def __init__(self, config_path: str | os.PathLike[str], *, port: int | None = None,
                 extra_flags: Sequence[str] = (), binary: str | None = None,
                 start_timeout: float = 30.0) -> None:
        self.config_path = Path(config_path)
        self.binary = binary or _find_binary(self._binaries)
        self.extra_flags = tuple(extra_flags)
        self.start_timeout = start_timeout
        self._fixed_port = port
        self.port = port or 0
        self.data_dir: Path | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._client: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def address(self) -> str:
        """``127.0.0.1:PORT``, as another process's config names it."""
        return f"127.0.0.1:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _flags(self) -> list[str]:
        raise NotImplementedError

    def _stderr(self) -> str:
        assert self.data_dir is not None
        try:
            return (self.data_dir / "stderr.log").read_text(errors="replace")[-4000:]
        except OSError:
            return ""

    def start(self) -> _Process:
        # A free port can be taken between the probe and the bind: try another one then.
        for attempt in range(3):
            self.port = self._fixed_port or _free_port()
            self.data_dir = Path(tempfile.mkdtemp(prefix=f"obskit-{self._what}-"))
            with open(self.data_dir / "stderr.log", "wb") as err:
                self._proc = subprocess.Popen([self.binary, *self._flags(), *self.extra_flags],
                                              stdin=subprocess.DEVNULL,
                                              stdout=subprocess.DEVNULL, stderr=err)
            try:
                self._wait_ready()
                return self
            except PrometheusError as exc:
                in_use = "address already in use" in str(exc)
                self.stop()
                if not in_use or self._fixed_port or attempt == 2:
                    raise
        raise AssertionError("unreachable")

    def _wait_ready(self) -> None:
        assert self._proc is not None
        self._client = httpx.Client(base_url=self.url, timeout=10.0)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise PrometheusError(f"{self._what} exited with {self._proc.returncode} while "
                                      f"starting ({self.binary} on {self.address}):\n"
                                      f"{self._stderr()}")
            try:
                if self._client.get("/-/ready", timeout=1.0).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            if time.monotonic() > deadline:
                raise PrometheusError(f"{self._what} on {self.address} not ready after "
                                      f"{self.start_timeout}s; stderr:\n{self._stderr()}")
            time.sleep(0.05)

    def stop(self) -> None:
        """Stop the process (SIGTERM, then SIGKILL after 10 s) and remove its data dir."""
        if self._client is not None:
            self._client.close()
            self._client = None
        if self._proc is not None:
            if self._proc.poll() is None:
                self._proc.terminate()
                try:
                    self._proc.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    self._proc.kill()
                    self._proc.wait()
            self._proc = None
        if self.data_dir is not None:
            shutil.rmtree(self.data_dir, ignore_errors=True)
            self.data_dir = None

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    def _http(self) -> httpx.Client:
        if self._client is None:
            raise PrometheusError(f"{self._what} is not running (use it as a context manager "
                                  "or call start())")
        return self._client

    def _api(self, method: str, path: str, **kwargs: Any) -> Any:
        """The ``data`` of a Prometheus-style ``{"status": ..., "data": ...}`` answer."""
        r = self._http().request(method, path, **kwargs)
        try:
            body = r.json()
        except ValueError:
            raise PrometheusError(f"{method} {path}: HTTP {r.status_code}: {r.text[:500]}"
                                  ) from None
        if r.status_code >= 400 or body.get("status") != "success":
            raise PrometheusError(f"{method} {path} {kwargs.get('params') or ''}: "
                                  f"{body.get('errorType', r.status_code)}: "
                                  f"{body.get('error', r.text[:500])}")
        return body["data"]


class PrometheusProcess(_Process):
    """``prometheus`` with ``config_path``, exemplar storage, remote-write receiver, lifecycle."""

    _binaries = ("prometheus",)
    _what = "prometheus"

    def _flags(self) -> list[str]:
        assert self.data_dir is not None
        return [f"--config.file={self.config_path}",
                f"--storage.tsdb.path={self.data_dir / 'tsdb'}",
                f"--web.listen-address={self.address}",
                "--enable-feature=exemplar-storage",
                "--web.enable-remote-write-receiver",
                "--web.enable-lifecycle"]

    def __enter__(self) -> PrometheusProcess:
        self.start()
        return self

    def query(self, expr: str, at: float | None = None) -> list[dict[str, Any]]:
        """Instant query: the result's series (``{"metric": {...}, "value": [t, "v"]}``).

        A scalar or string result comes back as one series without labels. Raises
        ``PrometheusError`` with Prometheus's own message when the query does not evaluate.
        """
        params = {"query": expr} if at is None else {"query": expr, "time": str(at)}
        data = self._api("POST", "/api/v1/query", data=params)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def query_exemplars(self, expr: str, start: float, end: float) -> list[dict[str, Any]]:
        """``/api/v1/query_exemplars``: ``[{"seriesLabels": {...}, "exemplars": [...]}]``."""
        return list(self._api("POST", "/api/v1/query_exemplars",
                              data={"query": expr, "start": str(start), "end": str(end)}) or [])

    def targets(self) -> list[dict[str, Any]]:
        """Active scrape targets, each with ``labels``, ``health`` and ``lastError``."""
        return list(self._api("GET", "/api/v1/targets", params={"state": "active"})
                    ["activeTargets"])

    def alertmanagers(self) -> list[str]:
        """URLs of the Alertmanagers Prometheus sends alerts to."""
        data = self._api("GET", "/api/v1/alertmanagers")
        return [a["url"] for a in data["activeAlertmanagers"]]

    def rules(self) -> list[dict[str, Any]]:
        """Loaded rule groups, each with its rules' ``health`` and ``lastError``."""
        return list(self._api("GET", "/api/v1/rules")["groups"])

    def config(self) -> str:
        """The configuration Prometheus runs with, as YAML (after ``reload()``: the new one)."""
        return str(self._api("GET", "/api/v1/status/config")["yaml"])

    def reload(self) -> None:
        """Re-read the configuration (``/-/reload``); raises with the reason if it is invalid."""
        r = self._http().post("/-/reload")
        if r.status_code != 200:
            raise PrometheusError(f"reload failed: HTTP {r.status_code}: {r.text.strip()}")


class AlertmanagerProcess(_Process):
    """Alertmanager with ``config_path``, clustering off."""

    _binaries = ("prometheus-alertmanager", "alertmanager")  # Debian's name first
    _what = "alertmanager"

    def __init__(self, config_path: str | os.PathLike[str], port: int | None = None, *,
                 extra_flags: Sequence[str] = (), binary: str | None = None,
                 start_timeout: float = 30.0) -> None:
        super().__init__(config_path, port=port, extra_flags=extra_flags, binary=binary,
                         start_timeout=start_timeout)

    def _flags(self) -> list[str]:
        assert self.data_dir is not None
        return [f"--config.file={self.config_path}",
                f"--storage.path={self.data_dir}",
                f"--web.listen-address={self.address}",
                "--cluster.listen-address="]

    def __enter__(self) -> AlertmanagerProcess:
        self.start()
        return self

    def alerts(self) -> list[dict[str, Any]]:
        """The alerts Alertmanager holds (``/api/v2/alerts``)."""
        r = self._http().get("/api/v2/alerts")
        if r.status_code != 200:
            raise PrometheusError(f"/api/v2/alerts: HTTP {r.status_code}: {r.text[:500]}")
        return list(r.json())
