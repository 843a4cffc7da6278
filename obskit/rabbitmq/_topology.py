"""Declarative topology: an exchange per flow, a quorum queue per channel, a DLQ and retry tiers.

For a flow ``orders`` with channels ``b2c`` and ``b2b``::

    publish(rk="b2c") ─▶ [orders] ─b2c─▶ (orders.b2c) ─reject / delivery-limit─▶ [orders.dlx]
                             └────b2b─▶ (orders.b2b)                                │
                                                                       rk=orders.b2c ▼
                                                                      (orders.b2c.dlq)
    consumer, retryable failure:
      publish ─▶ [""] ─▶ (orders.b2c.retry.1s) ─TTL─▶ [""] ─▶ back to (orders.b2c)
                         (orders.b2c.retry.10s) ...
    consumer, permanent failure or attempts used up: publish ─▶ [orders.dlx] ─▶ (orders.b2c.dlq)

Retry queues are named by their delay so changing the delays creates new queues instead of a
PRECONDITION_FAILED conflict; old ones drain by themselves and can then be deleted.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq

from .errors import TopologyConflictError, TopologyError

__all__ = ["Flow", "QueueSpec", "Topology", "declare", "orders_topology"]

DEFAULT_RETRY_DELAYS: tuple[float, ...] = (1.0, 10.0, 60.0)


def _delay_name(seconds: float) -> str:
    ms = round(seconds * 1000)
    return f"{ms // 1000}s" if ms % 1000 == 0 else f"{ms}ms"


@dataclass(frozen=True)
class QueueSpec:
    """One work queue with its DLQ and retry tiers.

    ``max_attempts`` counts handler runs (first try included); attempt *k* failing waits
    ``retry_delays[k-1]`` (the last tier repeats). ``delivery_limit`` is the broker's backstop
    for messages that crash the consumer *process* (no handler error ever recorded): after that
    many redeliveries the broker dead-letters the message itself.
    """

    name: str
    exchange: str
    routing_key: str
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    max_attempts: int = 4
    delivery_limit: int = 20

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError(f"max_attempts must be >= 1, got {self.max_attempts}")
        if any(d <= 0 for d in self.retry_delays):
            raise ValueError(f"retry_delays must be positive seconds, got {self.retry_delays}")
        if self.max_attempts > 1 and not self.retry_delays:
            raise ValueError("max_attempts > 1 needs at least one retry delay")

    @property
    def dlq(self) -> str:
        return f"{self.name}.dlq"

    @property
    def dlx(self) -> str:
        return f"{self.exchange}.dlx"

    @property
    def retry_queues(self) -> tuple[str, ...]:
        return tuple(f"{self.name}.retry.{_delay_name(d)}"
                     for d in dict.fromkeys(self.retry_delays))

    def retry_queue_for(self, failed_attempts: int) -> str:
        """The tier a message goes to after its ``failed_attempts``-th failure (1-based)."""
        delay = self.retry_delays[min(failed_attempts, len(self.retry_delays)) - 1]
        return f"{self.name}.retry.{_delay_name(delay)}"

    def main_arguments(self) -> dict[str, Any]:
        # at-least-once dead-lettering (3.10+, quorum only) needs reject-publish overflow.
        return {
            "x-queue-type": "quorum",
            "x-dead-letter-exchange": self.dlx,
            "x-dead-letter-routing-key": self.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
            "x-delivery-limit": self.delivery_limit,
        }

    def retry_arguments(self, delay: float) -> dict[str, Any]:
        # One fixed TTL per tier: per-message TTL would only expire at the head of the queue.
        # Expiry dead-letters through the default exchange straight back to the work queue.
        return {
            "x-queue-type": "quorum",
            "x-message-ttl": round(delay * 1000),
            "x-dead-letter-exchange": "",
            "x-dead-letter-routing-key": self.name,
            "x-dead-letter-strategy": "at-least-once",
            "x-overflow": "reject-publish",
        }

    @staticmethod
    def dlq_arguments() -> dict[str, Any]:
        # No delivery-limit: `obskit dlq show` peeks by requeueing, which counts as a delivery.
        return {"x-queue-type": "quorum"}


@dataclass(frozen=True)
class Flow:
    """An exchange (``name``) and one queue ``<name>.<channel>`` per channel (routing key)."""

    name: str
    channels: Sequence[str]
    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS
    max_attempts: int = 4
    delivery_limit: int = 20
    exchange_type: str = "direct"

    @property
    def queues(self) -> tuple[QueueSpec, ...]:
        return tuple(
            QueueSpec(f"{self.name}.{ch}", self.name, ch, tuple(self.retry_delays),
                      self.max_attempts, self.delivery_limit)
            for ch in self.channels
        )


_INEQUIVALENT = re.compile(
    r"inequivalent arg '(?P<arg>[^']+)' for (?P<kind>queue|exchange) '(?P<name>[^']*)' in vhost "
    r"'(?P<vhost>[^']*)': received (?P<received>.+?) but current is (?P<current>.+)$"
)


def _clean(value: str) -> str:
    value = value.strip()
    m = re.match(r"the value '(.*)' of type '.*'", value)
    if m:
        return m.group(1)
    return value.strip("'")


def conflict_from(exc: BaseException, kind: str, name: str) -> TopologyConflictError:
    """Map the broker's PRECONDITION_FAILED text to an error naming the differing argument."""
    text = str(exc.args[0] if exc.args else exc)
    m = _INEQUIVALENT.search(text)
    if m is None:
        return TopologyConflictError(kind, name, None, None, None, None, text)
    return TopologyConflictError(m["kind"], m["name"], m["vhost"], m["arg"],
                                 _clean(m["received"]), _clean(m["current"]), text)


@dataclass
class Topology:
    """The declared flows. ``await topology.declare(connection)`` is idempotent."""

    flows: list[Flow] = field(default_factory=list)

    @property
    def queues(self) -> tuple[QueueSpec, ...]:
        return tuple(q for f in self.flows for q in f.queues)

    def queue(self, name: str) -> QueueSpec:
        for q in self.queues:
            if q.name == name:
                return q
        raise KeyError(f"no queue {name!r} in the topology; known: "
                       f"{', '.join(q.name for q in self.queues)}")

    async def declare(self, connection: aio_pika.abc.AbstractConnection) -> None:
        """Declare exchanges, queues, DLQs, retry tiers and bindings.

        Raises TopologyConflictError naming the argument when something already exists
        with different settings (the broker refuses to change it).
        """
        channel = await connection.channel(publisher_confirms=False)
        try:
            for flow in self.flows:
                await _exchange(channel, flow.name, flow.exchange_type)
                await _exchange(channel, f"{flow.name}.dlx", "direct")
                for q in flow.queues:
                    dlq = await _queue(channel, q.dlq, q.dlq_arguments())
                    await dlq.bind(q.dlx, routing_key=q.name)
                    for delay in dict.fromkeys(q.retry_delays):
                        await _queue(channel, f"{q.name}.retry.{_delay_name(delay)}",
                                     q.retry_arguments(delay))
                    main = await _queue(channel, q.name, q.main_arguments())
                    await main.bind(q.exchange, routing_key=q.routing_key)
        finally:
            if not channel.is_closed:
                await channel.close()


async def _exchange(channel: aio_pika.abc.AbstractChannel, name: str, type_: str) -> None:
    try:
        await channel.declare_exchange(name, type_, durable=True)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise conflict_from(exc, "exchange", name) from exc
    except aiormq.exceptions.AMQPError as exc:
        raise TopologyError(f"declaring exchange {name!r} failed: {exc}") from exc


async def _queue(channel: aio_pika.abc.AbstractChannel, name: str,
                 arguments: dict[str, Any]) -> aio_pika.abc.AbstractQueue:
    try:
        return await channel.declare_queue(name, durable=True, arguments=arguments)
    except aiormq.exceptions.ChannelPreconditionFailed as exc:
        raise conflict_from(exc, "queue", name) from exc
    except aiormq.exceptions.AMQPError as exc:
        raise TopologyError(f"declaring queue {name!r} failed: {exc}") from exc


def orders_topology(*, channels: Iterable[str] = ("b2c", "b2b"),
                    retry_delays: tuple[float, ...] = DEFAULT_RETRY_DELAYS,
                    max_attempts: int = 4, delivery_limit: int = 20) -> Topology:
    """The CRM → MES topology: exchange ``orders``, queues ``orders.b2c`` and ``orders.b2b``."""
    return Topology([Flow("orders", tuple(channels), tuple(retry_delays), max_attempts,
                          delivery_limit)])


async def declare(topology: Topology, url: str | None = None, *,
                  vhost: str | None = None) -> None:
    """Connect, declare ``topology`` and disconnect (the one-liner for service start-up)."""
    from ._env import amqp_url

    connection = await aio_pika.connect(amqp_url(url, vhost))
    try:
        await topology.declare(connection)
    finally:
        await connection.close()
