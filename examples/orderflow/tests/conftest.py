"""Test bed: the real PostgreSQL, RabbitMQ and Redis, isolated per run.

* databases ``orderflow_test_<run>`` and ``orderflow_dash_test_<run>`` (created for the run and
  dropped at its end, so two runs on one machine do not clash),
* a RabbitMQ vhost of our own (deleted at the end),
* a Redis key prefix of our own (rate-limit buckets do not leak between runs),
* the ingress, outbox relay and status consumer as real processes; tests start MES workers
  themselves (``mes_worker``) so they can kill them.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple

import httpx
import psycopg
import pytest

from obskit.testing import wait_for  # the test modules import it from here
from orderflow import migrations

# OBSKIT_NO_SKIPS=1 (make test, CI): a skipped test fails, naming the service or tool to install.
pytest_plugins = ["obskit.testing.pytest_plugin"]

PG_ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
# One id per test run, shared with the test modules (and the processes they start) by the
# environment: the dashboard tests name their database after it too.
RUN = os.environ.setdefault("ORDERFLOW_TEST_RUN", uuid.uuid4().hex[:8])
TEST_DB = f"orderflow_test_{RUN}"
DASH_TEST_DB = f"orderflow_dash_test_{RUN}"
MGMT = "http://127.0.0.1:15672/api"
AUTH = ("guest", "guest")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _drop_database(name: str) -> None:
    with psycopg.connect(PG_ADMIN, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s", (name,))
        conn.execute(f'DROP DATABASE IF EXISTS "{name}"')


class Isolated(NamedTuple):
    dsn: str
    amqp_url: str
    run: str  # a fresh id, for key prefixes and names


@contextmanager
def isolated_services(prefix: str) -> Iterator[Isolated]:
    """A database and a RabbitMQ vhost of their own (``<prefix>_<run>``), dropped on exit: a
    second stack of processes cannot take the session's outbox rows or messages, nor they its."""
    run = uuid.uuid4().hex[:8]
    db_name, vhost = f"{prefix}_{run}", f"{prefix.replace('_', '-')}-{run}"
    dsn = f"postgresql://postgres@127.0.0.1:5432/{db_name}"
    httpx.put(f"{MGMT}/vhosts/{vhost}", auth=AUTH).raise_for_status()
    httpx.put(f"{MGMT}/permissions/{vhost}/guest", auth=AUTH,
              json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    migrations.upgrade(dsn)
    try:
        yield Isolated(dsn, f"amqp://guest:guest@127.0.0.1:5672/{vhost}", run)
    finally:
        httpx.delete(f"{MGMT}/vhosts/{vhost}", auth=AUTH)
        _drop_database(db_name)


@pytest.fixture(scope="session", autouse=True)
def _databases_of_this_run() -> Iterator[None]:
    yield
    for name in (TEST_DB, DASH_TEST_DB):
        _drop_database(name)


@pytest.fixture(scope="session")
def env() -> Iterator[dict[str, str]]:
    run = uuid.uuid4().hex[:8]
    vhost = f"orderflow-test-{run}"
    _drop_database(TEST_DB)
    httpx.put(f"{MGMT}/vhosts/{vhost}", auth=AUTH).raise_for_status()
    httpx.put(f"{MGMT}/permissions/{vhost}/guest", auth=AUTH,
              json={"configure": ".*", "write": ".*", "read": ".*"}).raise_for_status()
    e = {
        **os.environ,
        "ORDERFLOW_DATABASE_URL": f"postgresql://postgres@127.0.0.1:5432/{TEST_DB}",
        "ORDERFLOW_RABBITMQ_URL": f"amqp://guest:guest@127.0.0.1:5672/{vhost}",
        "ORDERFLOW_REDIS_URL": "redis://127.0.0.1:6379/0",
        "ORDERFLOW_REDIS_PREFIX": f"orderflow-test-{run}",
        "OBSKIT_JOURNEY_PREFIX": f"orderflow-test-{run}-journey",
        "ORDERFLOW_MES_STAGE_DELAY": "0.02",
        "ORDERFLOW_RETRY_DELAYS": "0.5",
        # A killed MES worker's orders are taken over this many seconds later.
        "ORDERFLOW_MES_CLAIM_LEASE": "3",
        "ORDERFLOW_TRUSTED_PROXIES": "127.0.0.1",  # tests pick client IPs with X-Forwarded-For
        "ORDERFLOW_RATE_LIMIT_B2C": "10/second",
        "ORDERFLOW_RATE_LIMIT_B2B": "100/second",
        "ORDERFLOW_RATE_LIMIT_B2B_IP": "1000/second",
        # High enough for the tests that read many statuses from 127.0.0.1 in a burst; the
        # status-limit test runs an ingress of its own with a low limit.
        "ORDERFLOW_RATE_LIMIT_STATUS": "1000/second",
        # The managers' credential for the dashboard (the demo's traffic sends it).
        "ORDERFLOW_DASHBOARD_TOKEN": "test-manager-token",
        "OTEL_SDK_DISABLED": "true",
        "OBSKIT_LOG_LEVEL": "WARNING",
    }
    e.pop("PROMETHEUS_MULTIPROC_DIR", None)
    migrations.upgrade(e["ORDERFLOW_DATABASE_URL"])
    os.environ.update({k: v for k, v in e.items() if k.startswith("ORDERFLOW_")})
    yield e
    httpx.delete(f"{MGMT}/vhosts/{vhost}", auth=AUTH)


class Procs:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = env
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, *args: str, **extra_env: str) -> subprocess.Popen[bytes]:
        p = subprocess.Popen([sys.executable, "-P", "-m", "orderflow.cli", *args],
                             env={**self.env, **extra_env})
        self.procs.append(p)
        return p

    def stop_all(self) -> None:
        for p in self.procs:
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
        for p in self.procs:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        self.procs.clear()


@pytest.fixture(scope="session")
def stack(env: dict[str, str]) -> Iterator[dict[str, Any]]:
    """Ingress, relay and status consumer (no MES: tests start their own workers)."""
    procs = Procs(env)
    port = _free_port()
    procs.start("api", "--port", str(port))
    procs.start("relay")
    procs.start("status")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: _ready(base), timeout=30, what="ingress /readyz")
    yield {"base": base, "dsn": env["ORDERFLOW_DATABASE_URL"], "env": env}
    procs.stop_all()


@pytest.fixture
def mes_worker(env: dict[str, str]) -> Iterator[Callable[..., subprocess.Popen[bytes]]]:
    """Start MES worker processes; all are stopped after the test."""
    procs = Procs(env)

    def start(worker_id: str, *, stage_delay: float = 0.02,
              concurrency: int = 4) -> subprocess.Popen[bytes]:
        return procs.start("mes", "--worker-id", worker_id, "--concurrency", str(concurrency),
                           ORDERFLOW_MES_STAGE_DELAY=str(stage_delay))

    yield start
    procs.stop_all()


def _ready(base: str) -> bool:
    try:
        return httpx.get(base + "/readyz", timeout=2).status_code == 200
    except httpx.HTTPError:
        return False


def new_ip() -> str:
    """A client IP of its own (via X-Forwarded-For from the trusted 127.0.0.1), so per-IP
    rate-limit buckets do not leak between tests."""
    n = uuid.uuid4().int
    return f"10.{n % 250}.{(n >> 8) % 250}.{(n >> 16) % 250 + 1}"


def order_body(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "customer_email": "ada@example.com",
        "model": {"name": "bracket.stl", "volume_cm3": 12.5, "material": "PETG",
                  "quality": "standard"},
        "quantity": 3,
    }
    body.update(over)
    return body


def api_key(dsn: str, partner: str, rate_limit: str | None = None) -> str:
    out = subprocess.run([sys.executable, "-P", "-m", "orderflow.cli", "apikey", "create",
                          partner, *(["--rate-limit", rate_limit] if rate_limit else [])],
                         env={**os.environ, "ORDERFLOW_DATABASE_URL": dsn},
                         capture_output=True, text=True, check=True)
    return out.stdout.strip()


def sql(dsn: str, query: str, *params: Any) -> list[tuple[Any, ...]]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(query, params).fetchall()  # type: ignore[arg-type]


def statuses(dsn: str, order_ids: list[str]) -> dict[str, str]:
    rows = sql(dsn, "SELECT order_id::text, status FROM orders WHERE order_id = ANY(%s::uuid[])",
               order_ids)
    return dict(rows)  # type: ignore[arg-type]
