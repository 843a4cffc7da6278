"""Helpers for tests/rabbitmq (a uniquely named module: the tests are not a package)."""

from __future__ import annotations

import aio_pika
from prometheus_client import CollectorRegistry

from obskit.rabbitmq import ManagementClient
from obskit.testing import wait_for_async

AMQP = "amqp://guest:guest@127.0.0.1:5672/"
MGMT = "http://guest:guest@127.0.0.1:15672"
PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/0"


#: ``await wait_for(predicate, timeout=..., what=...)``; the predicate may be async.
wait_for = wait_for_async


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
