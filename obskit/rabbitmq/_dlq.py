"""Dead-letter queue operations for on-call: list, show (grouped by error), replay, purge."""

from __future__ import annotations

import asyncio
import builtins
import re
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any
from urllib.parse import unquote

import aio_pika
import aiormq

from . import _headers as H
from ._env import amqp_url, vhost_of
from ._management import ManagementClient
from ._routing import Broker
from ._telemetry import header_str, utc_now_iso
from .errors import PublishNackedError, RabbitMQError, UnroutableError

__all__ = ["DeadLetter", "DeadLetterQueues", "ReplayResult", "group_by_error"]

_PREVIEW = 200


@dataclass
class DeadLetter:
    """A dead-lettered message, decoded for a human."""

    message_id: str | None
    error_type: str
    error_message: str | None
    reason: str | None  # permanent | exhausted | rejected | delivery_limit | expired | ...
    attempts: int | None
    first_failure: str | None
    last_failure: str | None
    dead_lettered_at: str | None
    service: str | None
    original_queue: str | None
    routing_key: str | None
    order_id: str | None
    trace_id: str | None
    body_preview: str
    replay_count: int

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class ReplayResult:
    replayed: int = 0
    interrupted: bool = False
    not_found: bool = False


def _int(value: Any, default: int | None = None) -> int | None:
    try:
        return int(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return default


def _x_death(headers: dict[str, Any]) -> dict[str, Any]:
    deaths = headers.get("x-death")
    if isinstance(deaths, list) and deaths and isinstance(deaths[0], dict):
        return {k: header_str(v) if not isinstance(v, int | list) else v
                for k, v in deaths[0].items()}
    return {}


def _baggage(headers: dict[str, Any], key: str) -> str | None:
    raw = header_str(headers.get("baggage"))
    for item in (raw or "").split(","):
        k, _, v = item.partition("=")
        if k.strip() == key:
            return unquote(v.split(";")[0].strip())
    return None


def decode(message: aio_pika.abc.AbstractIncomingMessage) -> DeadLetter:
    h = dict(message.headers or {})
    death = _x_death(h)
    tp = header_str(h.get("traceparent")) or ""
    m = re.match(r"^[0-9a-f]{2}-([0-9a-f]{32})-", tp)
    body = message.body[:_PREVIEW].decode("utf-8", "replace")
    if len(message.body) > _PREVIEW:
        body += "…"
    attempts = _int(h.get(H.ATTEMPT))
    # Dead-lettered by the broker (reject by a foreign consumer, delivery-limit, TTL): no
    # obskit headers, but x-death says why and from where.
    error_type = header_str(h.get(H.ERROR_TYPE)) or (
        f"broker:{death['reason']}" if death.get("reason") else "unknown")
    return DeadLetter(
        message_id=message.message_id,
        error_type=error_type,
        error_message=header_str(h.get(H.ERROR_MESSAGE)),
        reason=header_str(h.get(H.DEAD_LETTER_REASON)) or death.get("reason"),
        attempts=attempts if attempts is not None else _int(h.get("x-delivery-count")),
        first_failure=header_str(h.get(H.FIRST_FAILURE)),
        last_failure=header_str(h.get(H.LAST_FAILURE)),
        dead_lettered_at=header_str(h.get(H.DEAD_LETTERED_AT)) or (
            str(death["time"]) if death.get("time") else None),
        service=header_str(h.get(H.SERVICE)),
        original_queue=header_str(h.get(H.ORIGINAL_QUEUE)) or death.get("queue"),
        routing_key=header_str(h.get(H.ORIGINAL_ROUTING_KEY)) or message.routing_key,
        order_id=_baggage(h, "order.id"),
        trace_id=m.group(1) if m else None,
        body_preview=body,
        replay_count=_int(h.get(H.REPLAY_COUNT), 0) or 0,
    )


def group_by_error(letters: list[DeadLetter]) -> dict[str, list[DeadLetter]]:
    """ServicePulse-style failure groups: same error type, biggest group first."""
    groups: dict[str, list[DeadLetter]] = {}
    for d in letters:
        groups.setdefault(d.error_type, []).append(d)
    return dict(sorted(groups.items(), key=lambda kv: (-len(kv[1]), kv[0])))


class DeadLetterQueues:
    """DLQ operations against one vhost (``vhost`` default: the AMQP URL's)."""

    def __init__(self, url: str | None = None, *, vhost: str | None = None,
                 management_url: str | None = None) -> None:
        self.url = amqp_url(url, vhost)
        self.vhost = vhost if vhost is not None else vhost_of(self.url)
        self.management_url = management_url
        self._connection: aio_pika.abc.AbstractConnection | None = None

    async def __aenter__(self) -> DeadLetterQueues:
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _channel(self) -> aio_pika.abc.AbstractChannel:
        if self._connection is None:
            self._connection = await aio_pika.connect(self.url)
        return await self._connection.channel(publisher_confirms=True, on_return_raises=True)

    async def _queue(self, channel: aio_pika.abc.AbstractChannel,
                     name: str) -> aio_pika.abc.AbstractQueue:
        try:
            return await channel.get_queue(name, ensure=True)
        except aiormq.exceptions.ChannelNotFoundEntity as exc:
            raise RabbitMQError(f"queue {name!r} does not exist in vhost {self.vhost!r}") \
                from exc

    async def list(self) -> list[dict[str, Any]]:
        """Every DLQ of the vhost with its depth and the queues that dead-letter into it."""
        async with ManagementClient(self.management_url) as mgmt:
            queues, exchanges, bindings, policies = await asyncio.gather(
                mgmt.queues(self.vhost), mgmt.exchanges(self.vhost),
                mgmt.bindings(self.vhost), mgmt.policies(self.vhost))
        broker = Broker(queues, exchanges, bindings, policies)
        sources: dict[str, list[str]] = {}
        for q in queues:
            for t in broker.route(q).targets:
                sources.setdefault(t, []).append(q["name"])
        return [
            {"queue": name, "messages": int(broker.queues[name].get("messages") or 0),
             "consumers": int(broker.queues[name].get("consumers") or 0),
             "sources": sorted(sources.get(name, []))}
            for name in sorted(broker.dead_letter_queues())
        ]

    async def depth(self, queue: str) -> int:
        """Messages in ``queue`` now (ready ones; a concurrent peek hides its messages)."""
        channel = await self._channel()
        try:
            q = await self._queue(channel, queue)
            return int(q.declaration_result.message_count or 0)
        finally:
            await channel.close()

    async def show(self, queue: str, *, limit: int = 50) -> builtins.list[DeadLetter]:
        """Peek at up to ``limit`` messages; they stay in the queue, in order."""
        channel = await self._channel()
        try:
            q = await self._queue(channel, queue)
            held: builtins.list[aio_pika.abc.AbstractIncomingMessage] = []
            try:
                while len(held) < limit:
                    msg = await q.get(no_ack=False, fail=False)
                    if msg is None:
                        break
                    held.append(msg)
                return [decode(m) for m in held]
            finally:
                for m in held:
                    await m.nack(requeue=True)
        finally:
            await channel.close()

    async def replay(self, queue: str, *, limit: int | None = None,
                     message_id: str | None = None,
                     on_progress: Callable[[DeadLetter], None] | None = None,
                     stop: asyncio.Event | None = None,
                     total: Callable[[int], None] | None = None) -> ReplayResult:
        """Move messages back to the queue they failed in, headers kept, attempt count reset.

        One message at a time: publish with confirm (mandatory) to the original queue, *then*
        ack it in the DLQ. An interruption (``stop``) finishes the current message first; a
        crash between confirm and ack leaves a twin with the same message id, which an
        idempotent consumer skips. At most the DLQ's depth at the start is replayed, so
        messages that fail again and come back are not replayed in a loop.
        """
        result = ReplayResult()
        channel = await self._channel()
        held: builtins.list[aio_pika.abc.AbstractIncomingMessage] = []
        try:
            q = await self._queue(channel, queue)
            declared = int(q.declaration_result.message_count or 0) \
                if q.declaration_result else 0
            budget = declared if limit is None else min(limit, declared)
            if message_id is not None:
                budget = 1
            if total is not None:
                total(budget)
            scanned = 0
            while result.replayed < budget and scanned < declared:
                if stop is not None and stop.is_set():
                    result.interrupted = True
                    break
                msg = await q.get(no_ack=False, fail=False)
                if msg is None:
                    break
                scanned += 1
                if message_id is not None and msg.message_id != message_id:
                    held.append(msg)  # returned to the DLQ at the end
                    continue
                letter = decode(msg)
                await self._send_back(channel, queue, msg, letter)
                await msg.ack()
                result.replayed += 1
                if on_progress is not None:
                    on_progress(letter)
            if message_id is not None and result.replayed == 0:
                result.not_found = True
            return result
        finally:
            for m in held:
                await m.nack(requeue=True)
            if not channel.is_closed:
                await channel.close()

    async def _send_back(self, channel: aio_pika.abc.AbstractChannel, dlq: str,
                         msg: aio_pika.abc.AbstractIncomingMessage, letter: DeadLetter) -> None:
        target = letter.original_queue or (dlq[:-4] if dlq.endswith(".dlq") else None)
        if not target:
            await msg.nack(requeue=True)
            raise RabbitMQError(f"message {msg.message_id}: no {H.ORIGINAL_QUEUE} header or "
                                "x-death entry says where it came from")
        headers = {k: v for k, v in (msg.headers or {}).items() if k != "x-delivery-count"}
        headers[H.ATTEMPT] = 0  # a fresh set of attempts; the error history stays
        headers[H.REPLAY_COUNT] = (_int(headers.get(H.REPLAY_COUNT), 0) or 0) + 1
        headers[H.REPLAYED_AT] = utc_now_iso()
        copy = aio_pika.Message(
            msg.body, headers=headers, content_type=msg.content_type,
            content_encoding=msg.content_encoding, message_id=msg.message_id,
            correlation_id=msg.correlation_id, type=msg.type, app_id=msg.app_id,
            timestamp=msg.timestamp, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        try:
            # The default exchange routes straight to the named queue, whatever its bindings.
            await channel.default_exchange.publish(copy, target, mandatory=True, timeout=30)
        except aio_pika.exceptions.PublishError as exc:
            await msg.nack(requeue=True)
            raise UnroutableError(f"original queue {target!r} does not exist", exchange="",
                                  routing_key=target, message_id=msg.message_id) from exc
        except aiormq.exceptions.DeliveryError as exc:
            await msg.nack(requeue=True)
            raise PublishNackedError(f"{target!r} refused the message", exchange="",
                                     routing_key=target, message_id=msg.message_id) from exc

    async def purge(self, queue: str) -> int:
        """Delete every message of ``queue``; return how many."""
        channel = await self._channel()
        try:
            q = await self._queue(channel, queue)
            res = await q.purge()
            return int(res.message_count or 0)
        finally:
            await channel.close()
