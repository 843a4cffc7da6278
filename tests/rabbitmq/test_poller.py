"""Queue/DLQ depth gauges polled from the management API; routing helpers."""

from __future__ import annotations

from rmq_helpers import sample, wait_for

from obskit.rabbitmq import ManagementClient, Publisher, QueueDepthPoller
from obskit.rabbitmq._routing import topic_matches


async def test_poller_sets_depth_and_consumer_gauges(url, vhost, topology, registry):
    async with Publisher(url) as pub:
        for i in range(3):
            await pub.publish("orders", "b2b", {"i": i})
    async with ManagementClient() as mgmt:
        poller = QueueDepthPoller(mgmt, vhost=vhost, patterns=("orders.*",), interval=0.2,
                                  registry=registry)
        poller.start()
        try:
            # The broker's management stats refresh every ~5 s.
            await wait_for(lambda: sample(registry, "messaging_queue_messages",
                                          queue="orders.b2b") == 3, timeout=15,
                           what="depth gauge")
        finally:
            await poller.stop()
        depths = await poller.poll_once()
    assert depths["orders.b2b"] == 3 and depths["orders.b2b.dlq"] == 0
    assert "orders.b2c.dlq" in depths
    assert sample(registry, "messaging_queue_consumers", queue="orders.b2b") == 0


def test_topic_matching():
    assert topic_matches("orders.*", "orders.b2c")
    assert not topic_matches("orders.*", "orders.b2c.dlq")
    assert topic_matches("orders.#", "orders.b2c.dlq")
    assert topic_matches("#", "")
    assert not topic_matches("a.*.c", "a.c")
