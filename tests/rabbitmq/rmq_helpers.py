"""Helpers for tests/rabbitmq (a uniquely named module: the tests are not a package)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import aio_pika
from prometheus_client import CollectorRegistry

from obskit.rabbitmq import ManagementClient

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
MGMT = "http://guest:guest@127.0.0.1:15672"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


async def wait_for(predicate: Callable[[], Any | Awaitable[Any]], timeout: float = 10.0,
                   interval: float = 0.05, what: str = "condition") -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        await asyncio.sleep(interval)


def sample(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


async def queue_depth(mgmt: ManagementClient, vhost: str, queue: str) -> int:
    """Total messages (ready + unacked) via AMQP passive declare: exact, unlike mgmt stats."""
    conn = await aio_pika.connect(f"amqp://guest:guest@127.0.0.1:5672/{vhost}")
    try:
        ch = await conn.channel()
        q = await ch.get_queue(queue, ensure=True)
        return int(q.declaration_result.message_count or 0)
    finally:
        await conn.close()
