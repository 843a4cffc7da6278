"""Everything orderflow needs from RabbitMQ, in one place, on top of ``obskit.rabbitmq``.

Topology (declared by every process at start; declaring is idempotent):

* exchange ``orders`` → quorum queues ``orders.b2c`` / ``orders.b2b`` (CRM → MES), each with
  ``<queue>.dlq`` and retry tiers ``<queue>.retry.<delay>``;
* exchange ``order-events`` → queue ``order-events.status`` (MES → CRM status events), same
  guarantees: a status update is as precious as the order.

obskit.rabbitmq is being written alongside orderflow; this module is the only one that imports
it, so a change of its API is fixed here.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit

import aio_pika

from obskit.rabbitmq import (
    Consumer,
    Delivery,
    DependencyUnavailable,
    Flow,
    InFlightElsewhere,
    PermanentError,
    Publisher,
    QueueDepthPoller,
    QueueSpec,
    RetryableError,
    Topology,
)
from orderflow import db
from orderflow.config import Settings

ORDERS_EXCHANGE = "orders"
CHANNELS = ("b2c", "b2b")
STATUS_EXCHANGE = "order-events"
STATUS_ROUTING_KEY = "status"
STATUS_QUEUE = f"{STATUS_EXCHANGE}.{STATUS_ROUTING_KEY}"

__all__ = [
    "CHANNELS", "ORDERS_EXCHANGE", "STATUS_EXCHANGE", "STATUS_QUEUE", "STATUS_ROUTING_KEY",
    "Consumer", "Delivery", "DependencyUnavailable", "InFlightElsewhere", "PermanentError",
    "Publisher", "RetryableError",
    "declare_topology", "depth_poller", "order_queue", "orders_queue_name", "status_queue",
    "topology",
]


def orders_queue_name(channel: str) -> str:
    return f"{ORDERS_EXCHANGE}.{channel}"


def topology(settings: Settings) -> Topology:
    delays = settings.retry_delays or (1.0,)
    return Topology([
        Flow(ORDERS_EXCHANGE, CHANNELS, delays, max_attempts=len(delays) + 1),
        Flow(STATUS_EXCHANGE, (STATUS_ROUTING_KEY,), delays, max_attempts=len(delays) + 1),
    ])


def order_queue(settings: Settings, channel: str) -> QueueSpec:
    return topology(settings).queue(orders_queue_name(channel))


def status_queue(settings: Settings) -> QueueSpec:
    return topology(settings).queue(STATUS_QUEUE)


async def declare_topology(settings: Settings) -> None:
    connection = await aio_pika.connect(settings.rabbitmq_url)
    try:
        await topology(settings).declare(connection)
    finally:
        await connection.close()


def publisher(settings: Settings) -> Publisher:
    return Publisher(settings.rabbitmq_url)


def vhost_of(url: str) -> str:
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def depth_poller(settings: Settings) -> QueueDepthPoller:
    """Queue depths (DLQs included) as ``messaging_queue_messages``: the number on-call pages on
    when orders pile up or land in a DLQ. Needs the management API
    (``OBSKIT_RABBITMQ_MANAGEMENT_URL``)."""
    return QueueDepthPoller(vhost=vhost_of(settings.rabbitmq_url),
                            patterns=(f"{ORDERS_EXCHANGE}.*", f"{STATUS_EXCHANGE}.*"),
                            interval=settings.queue_poll_interval)


def consumer(settings: Settings, queue: QueueSpec, handler: Any, *, prefetch: int,
             concurrency: int) -> Consumer:
    async def handle(d: Delivery) -> Any:
        try:
            return await handler(d)
        except Exception as exc:
            # PostgreSQL restarting is not the message's fault: retry it for as long as the
            # outage lasts instead of spending its attempts and dead-lettering it.
            if db.unavailable(exc):
                raise DependencyUnavailable(f"postgresql: {exc!r}") from exc
            raise

    return Consumer(queue, handle, url=settings.rabbitmq_url, prefetch=prefetch,
                    concurrency=concurrency, shutdown_timeout=10.0)
