"""``orderflow all --metrics-port BASE``: every process serves its own ``/metrics``, with exemplars.

A group of its own (database, vhost, tracing on) so the session's relay and status consumer do
not take its orders (``conftest.isolated_services``); ``test_platform_live.py`` reuses
``isolated_env`` and ``OrderflowAll``.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from conftest import (
    _free_port,
    _ready,
    api_key,
    isolated_services,
    new_ip,
    order_body,
    statuses,
    wait_for,
)
from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_om
from prometheus_client.parser import text_string_to_metric_families as parse_text

from orderflow.chaos import child_processes

#: ``orderflow all``'s processes in port order: (instance label, service label).
GROUP = [("ingress", "ingress"), ("crm-relay", "crm-relay"), ("crm-status", "crm-status"),
         ("mes-1", "mes"), ("mes-2", "mes")]
TERMINAL = ("done", "failed", "dead_lettered")


def free_port_range(n: int) -> int:
    """A base port with ``n`` consecutive free ports on this host."""
    for _ in range(50):
        base = _free_port()
        if base + n > 65535:
            continue
        socks = []
        try:
            for p in range(base, base + n):
                s = socket.socket()
                socks.append(s)
                s.bind(("0.0.0.0", p))  # noqa: S104 - the metrics servers bind 0.0.0.0
            return base
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
    raise AssertionError(f"no {n} consecutive free ports")


@contextmanager
def isolated_env(env: dict[str, str]) -> Iterator[dict[str, str]]:
    """``env`` with a database and vhost of its own and tracing on (spans kept nowhere)."""
    with isolated_services("orderflow_metrics") as own:
        e = {k: v for k, v in env.items() if k != "OTEL_SDK_DISABLED"}
        e.update({"OBSKIT_SPANS_FILE": "off", "ORDERFLOW_DATABASE_URL": own.dsn,
                  "ORDERFLOW_READ_DATABASE_URL": own.dsn, "ORDERFLOW_RABBITMQ_URL": own.amqp_url,
                  "ORDERFLOW_REDIS_PREFIX": f"orderflow-metrics-{own.run}",
                  "OBSKIT_JOURNEY_PREFIX": f"orderflow-metrics-{own.run}-journey"})
        e.pop("OTEL_EXPORTER_OTLP_ENDPOINT", None)
        yield e


class OrderflowAll:
    """``orderflow all --metrics-port BASE`` as a real process group, stopped by SIGTERM."""

    def __init__(self, env: dict[str, str], tmp: Path, *, targets_file: Path | None = None,
                 targets_host: str = "127.0.0.1", mes_workers: int = 2,
                 concurrency: int = 2, ingress: int = 1) -> None:
        self.env = env
        self.port = _free_port()
        self.mes_workers = mes_workers
        self.metrics_base = free_port_range(3 + mes_workers + ingress - 1)
        self.base = f"http://127.0.0.1:{self.port}"
        self.dsn = env["ORDERFLOW_DATABASE_URL"]
        self.log_path = tmp / f"orderflow-all-{self.port}.log"
        self.argv = [sys.executable, "-P", "-m", "orderflow.cli", "all", "--port",
                     str(self.port), "--mes-workers", str(mes_workers), "--concurrency",
                     str(concurrency), "--metrics-port", str(self.metrics_base),
                     "--ingress", str(ingress)]
        if targets_file is not None:
            self.argv += ["--targets-file", str(targets_file), "--targets-host", targets_host]
        self.proc: subprocess.Popen[bytes] | None = None

    def metrics_url(self, instance: str) -> str:
        index = [name for name, _ in GROUP].index(instance)
        return f"http://127.0.0.1:{self.metrics_base + index}/metrics"

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def __enter__(self) -> OrderflowAll:
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(self.argv, env=self.env, stdout=log,
                                         stderr=subprocess.STDOUT)
        try:
            wait_for(lambda: _ready(self.base) or self.proc.poll() is not None,  # type: ignore[union-attr]
                     timeout=60, what="orderflow all: ingress /readyz")
            assert self.proc.poll() is None, self.log()[-3000:]
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def place(self, channel: str, key: str | None = None, **over: Any) -> httpx.Response:
        if channel == "b2c":
            return httpx.post(self.base + "/api/v1/shop/orders", json=order_body(**over),
                              headers={"X-Forwarded-For": new_ip()})
        return httpx.post(self.base + "/api/v1/partner/orders", json=order_body(**over),
                          headers={"X-API-Key": key or ""})

    def wait_terminal(self, ids: list[str], timeout: float = 60) -> dict[str, str]:
        def check() -> dict[str, str] | None:
            st = statuses(self.dsn, ids)
            return st if len(st) == len(ids) and all(s in TERMINAL for s in st.values()) \
                else None

        return wait_for(check, timeout=timeout, what=f"{len(ids)} orders to finish",
                        interval=0.2)


def _stage_counts(text: str) -> dict[str, float]:
    """``obskit_order_stage_transitions_total`` by stage, summed over channels."""
    out: dict[str, float] = {}
    for family in parse_text(text):
        for s in family.samples:
            if s.name == "obskit_order_stage_transitions_total":
                out[s.labels["stage"]] = out.get(s.labels["stage"], 0) + s.value
    return out


def test_each_process_serves_its_own_metrics_with_exemplars(env: dict[str, str],
                                                            tmp_path: Path) -> None:
    targets = tmp_path / "targets" / "orderflow.json"
    with isolated_env(env) as e, OrderflowAll(e, tmp_path, targets_file=targets) as group:
        base = group.metrics_base
        assert f"ingress :{base}" in group.log() and f"mes-2 :{base + 4}" in group.log()
        key = api_key(group.dsn, "metrics-partner")
        ids = []
        for i in range(24):
            r = group.place("b2c" if i % 2 else "b2b", key)
            assert r.status_code == 202, r.text
            ids.append(r.json()["order_id"])
        assert set(group.wait_terminal(ids).values()) == {"done"}

        def scrape(instance: str) -> str:
            return httpx.get(group.metrics_url(instance), timeout=5).text

        # Each port shows its own process's stages, not the group's sum.
        ingress = _stage_counts(scrape("ingress"))
        assert ingress.get("accepted") == 24 and "received" not in ingress, ingress
        relay = _stage_counts(scrape("crm-relay"))
        assert relay.get("published") == 24 and "accepted" not in relay, relay
        mes = {m: _stage_counts(scrape(m)) for m in ("mes-1", "mes-2")}
        for m, counts in mes.items():
            assert counts.get("done", 0) > 0 and "accepted" not in counts, (m, counts)
        assert mes["mes-1"]["done"] + mes["mes-2"]["done"] == 24, mes
        assert "order-events.status" in scrape("crm-status")

        # OpenMetrics with exemplars: the trace of a request that landed in the bucket.
        om = httpx.get(group.metrics_url("ingress"),
                       headers={"Accept": "application/openmetrics-text; version=1.0.0"}).text
        exemplars = [s.exemplar for f in parse_om(om) for s in f.samples
                     if s.name == "http_server_request_duration_seconds_bucket" and s.exemplar]
        assert exemplars, om[:3000]
        assert all(len(x.labels["trace_id"]) == 32 for x in exemplars)

    entries = json.loads(targets.read_text())
    assert entries == [{"targets": [f"127.0.0.1:{base + i}"],
                        "labels": {"service": service, "instance": instance}}
                       for i, (instance, service) in enumerate(GROUP)]
    assert [p.name for p in targets.parent.iterdir()] == ["orderflow.json"]  # no temp left


def test_ingress_processes_share_the_port_and_stop_cleanly(env: dict[str, str],
                                                           tmp_path: Path) -> None:
    """``--ingress 2``: both processes answer on the one port, each with its metrics port after
    the MES workers (nothing of the one-ingress layout moves), and SIGTERM stops the group."""
    targets = tmp_path / "targets.json"
    with isolated_env(env) as e, OrderflowAll(e, tmp_path, targets_file=targets, mes_workers=1,
                                              ingress=2) as group:
        base = group.metrics_base
        assert "2 api processes on" in group.log(), group.log()[-2000:]
        assert json.loads(targets.read_text()) == [
            {"targets": [f"127.0.0.1:{base + i}"],
             "labels": {"service": service, "instance": instance}}
            for i, (instance, service) in enumerate([
                ("ingress-1", "ingress"), ("crm-relay", "crm-relay"),
                ("crm-status", "crm-status"), ("mes-1", "mes"), ("ingress-2", "ingress")])]
        # A new connection per order: the kernel picks a socket per connection (SO_REUSEPORT
        # hashes its ports), so 40 of them all landing on one process is a 2**-39 chance.
        ids = []
        for _ in range(40):
            r = group.place("b2c")
            assert r.status_code == 202, r.text
            ids.append(r.json()["order_id"])
        accepted = [_stage_counts(httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=5).text)
                    .get("accepted", 0) for port in (base, base + 4)]
        assert all(n > 0 for n in accepted) and sum(accepted) == 40, accepted
        assert set(group.wait_terminal(ids).values()) == {"done"}
        pids = [(cmd, pid) for cmd, _, pid in child_processes(group.proc.pid)]  # type: ignore[union-attr]
        assert sorted(name for name, _ in pids) == ["api", "api", "mes", "relay", "status"]
    assert group.proc is not None and group.proc.returncode == 0, group.log()[-3000:]
    alive = [name for name, pid in pids if Path(f"/proc/{pid}").exists()]
    assert not alive, alive
    with socket.socket() as s:  # nothing listens on the port any more
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # TIME_WAIT does not count
        s.bind(("127.0.0.1", group.port))
        s.listen()

