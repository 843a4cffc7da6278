"""Publisher: confirmed, persistent, mandatory; unroutable and nacked are exceptions."""

from __future__ import annotations

import aio_pika
import pytest
from rmq_helpers import sample

from obskit.rabbitmq import Publisher, PublishError, UnroutableError
from obskit.rabbitmq.errors import PublishNackedError


async def test_unroutable_routing_key_raises_and_is_counted(url, topology, registry):
    async with Publisher(url, registry=registry) as pub:
        with pytest.raises(UnroutableError) as info:
            await pub.publish("orders", "b2x", {"order_id": "lost"})
        assert info.value.routing_key == "b2x"
        # The channel survives a return: the next publish works.
        await pub.publish("orders", "b2c", {"order_id": "fine"})
    assert sample(registry, "messaging_returned_total", system="rabbitmq", exchange="orders",
                  routing_key="b2x", reason="unroutable") == 1
    assert sample(registry, "messaging_confirmed_total", system="rabbitmq", exchange="orders",
                  routing_key="b2x") == 0
    assert sample(registry, "messaging_confirmed_total", system="rabbitmq", exchange="orders",
                  routing_key="b2c") == 1


async def test_missing_exchange_raises_and_publisher_recovers(url, topology):
    async with Publisher(url) as pub:
        with pytest.raises(UnroutableError, match="does not exist"):
            await pub.publish("no-such-exchange", "b2c", b"x")
        await pub.publish("orders", "b2c", b"after")


async def test_message_is_persistent_with_id_type_and_trace_headers(url, topology):
    async with Publisher(url) as pub:
        mid = await pub.publish("orders", "b2c", {"order_id": "o-1"}, order_id="o-1",
                                channel="b2c", correlation_id="req-7")
    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        q = await ch.get_queue("orders.b2c")
        msg = await q.get(no_ack=True)
    assert msg.message_id == mid
    assert msg.delivery_mode == aio_pika.DeliveryMode.PERSISTENT
    assert msg.content_type == "application/json"
    assert msg.correlation_id == "req-7"
    assert "order.id=o-1" in str(msg.headers["baggage"])
    assert "order.channel=b2c" in str(msg.headers["baggage"])


async def test_nack_from_a_full_queue_raises(url, topology):
    """reject-publish overflow: the broker nacks, the caller must hear about it."""
    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        # Classic: its length limit is exact (a quorum queue applies it with a small lag).
        q = await ch.declare_queue("full", durable=True, arguments={
            "x-max-length": 1, "x-overflow": "reject-publish"})
        async with Publisher(url) as pub:
            await pub.publish("", "full", b"1")
            with pytest.raises(PublishNackedError):
                await pub.publish("", "full", b"2")
        await q.delete(if_unused=False, if_empty=False)


async def test_publish_error_tree():
    assert issubclass(UnroutableError, PublishError)
    assert issubclass(PublishNackedError, PublishError)
