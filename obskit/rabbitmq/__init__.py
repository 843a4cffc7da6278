"""Reliable, observable RabbitMQ for orders: topology, confirmed publishes, retries, DLQs.

    from obskit.rabbitmq import Consumer, Publisher, declare, orders_topology

    topology = orders_topology()
    async with Publisher() as pub:                      # OBSKIT_RABBITMQ_URL
        await declare(topology)                         # idempotent
        await pub.publish("orders", "b2c", {"order_id": 42}, order_id=42, channel="b2c")

    consumer = Consumer(topology.queue("orders.b2c"), handle, idempotency=guard)
    await consumer.run()

Needs the ``rabbitmq`` extra: ``pip install 'obskit[rabbitmq]'``. See docs/rabbitmq.md.
"""

from ._audit import AuditReport, Finding, QueueAudit, audit
from ._consumer import Consumer, Delivery, Handler, json_body
from ._dlq import DeadLetter, DeadLetterQueues, ReplayResult, group_by_error
from ._idempotency import (
    Claim,
    IdempotencyGuard,
    InFlightElsewhere,
    PostgresIdempotency,
    RedisIdempotency,
)
from ._management import ManagementClient
from ._poller import QueueDepthPoller
from ._publisher import Publisher
from ._topology import Flow, QueueSpec, Topology, declare, orders_topology
from .errors import (
    DependencyUnavailable,
    MessageParseError,
    PermanentError,
    PublishError,
    RetryableError,
    TopologyConflictError,
    UnroutableError,
)

__all__ = [
    "AuditReport",
    "Claim",
    "Consumer",
    "DeadLetter",
    "DeadLetterQueues",
    "DependencyUnavailable",
    "Delivery",
    "Finding",
    "Flow",
    "Handler",
    "IdempotencyGuard",
    "InFlightElsewhere",
    "ManagementClient",
    "MessageParseError",
    "PermanentError",
    "PostgresIdempotency",
    "PublishError",
    "Publisher",
    "QueueAudit",
    "QueueDepthPoller",
    "QueueSpec",
    "RedisIdempotency",
    "ReplayResult",
    "RetryableError",
    "Topology",
    "TopologyConflictError",
    "UnroutableError",
    "audit",
    "declare",
    "group_by_error",
    "json_body",
    "orders_topology",
]
