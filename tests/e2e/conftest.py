"""Harness for the cross-process trace tests: real RabbitMQ, real PostgreSQL, an in-process OTLP
receiver, and the services of tests/e2e/apps/ run as subprocesses."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from obskit.testing import wait_for

APPS = Path(__file__).resolve().parent / "apps"
ROOT = APPS.parent.parent.parent
AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[str], timeout: float = 20.0) -> None:
    def listening() -> bool:
        if proc.poll() is not None:
            out, err = proc.communicate()
            raise AssertionError(f"server exited early ({proc.returncode}):\n{out}\n{err}")
        with socket.socket() as s:
            s.settimeout(0.2)
            return s.connect_ex(("127.0.0.1", port)) == 0

    wait_for(listening, timeout, what=f"a server listening on port {port}")


def json_lines(text: str) -> list[dict[str, Any]]:
    lines = []
    for raw in text.splitlines():
        raw = raw.strip()
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines


@dataclass
class Service:
    name: str
    proc: subprocess.Popen[str]
    stdout: str = ""
    stderr: str = ""

    def wait(self, timeout: float) -> None:
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.stop()
            raise AssertionError(f"{self.name} did not finish within {timeout}s:\n"
                                 f"{self.stdout}\n{self.stderr}") from None

    def stop(self, timeout: float = 15.0) -> None:
        """SIGINT (a graceful shutdown: obskit flushes at exit), then SIGKILL."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
        try:
            self.stdout, self.stderr = self.proc.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.stdout, self.stderr = self.proc.communicate()

    @property
    def logs(self) -> list[dict[str, Any]]:
        return json_lines(self.stdout)


@dataclass
class Stack:
    """Queue, table and env of one e2e test; the services it started."""

    queue: str
    table: str
    env: dict[str, str]
    services: list[Service] = field(default_factory=list)

    def start(self, name: str, args: list[str], **env: str) -> Service:
        proc = subprocess.Popen([sys.executable, *args], cwd=str(ROOT),
                                env={**self.env, **env}, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        service = Service(name, proc)
        self.services.append(service)
        return service

    free_port = staticmethod(free_port)
    wait_for_port = staticmethod(wait_for_port)

    def stored_orders(self) -> list[str]:
        import psycopg

        with psycopg.connect(PG_DSN, autocommit=True) as db:
            return [r[0] for r in db.execute(f"SELECT order_id FROM {self.table}")]  # noqa: S608

    def stop_all(self) -> None:
        for s in self.services:
            if s.proc.poll() is None:
                s.stop(timeout=5)


@pytest.fixture
def stack() -> Iterator[Stack]:
    pika = pytest.importorskip("pika")
    psycopg = pytest.importorskip("psycopg")
    suffix = uuid.uuid4().hex[:10]
    queue, table = f"obskit-e2e-{suffix}", f"obskit_e2e_{suffix}"
    try:
        connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
        db = psycopg.connect(PG_DSN, autocommit=True)
    except Exception as exc:  # pragma: no cover - environment
        pytest.skip(f"RabbitMQ/PostgreSQL not reachable: {exc}")
    connection.channel().queue_declare(queue)
    db.execute(f"CREATE TABLE {table} (order_id text NOT NULL)")
    env = {k: v for k, v in os.environ.items()
           if not k.startswith(("OTEL_", "OBSKIT_", "PYTEST_"))}
    env.update({"E2E_QUEUE": queue, "E2E_TABLE": table, "AMQP_URL": AMQP_URL, "PG_DSN": PG_DSN,
                "OBSKIT_LOG_FORMAT": "json", "OBSKIT_RAISE_INTERNAL_ERRORS": "0",
                "OTEL_BSP_SCHEDULE_DELAY": "200", "OTEL_BLRP_SCHEDULE_DELAY": "200",
                "PYTHONPATH": str(ROOT)})
    s = Stack(queue, table, env)
    try:
        yield s
    finally:
        s.stop_all()
        try:
            connection.channel().queue_delete(queue)
            connection.close()
        finally:
            db.execute(f"DROP TABLE IF EXISTS {table}")
            db.close()

