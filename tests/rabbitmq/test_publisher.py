"""Publisher: confirmed, persistent, mandatory; unroutable and nacked are exceptions."""

from __future__ import annotations

import asyncio
import gc
import shutil
import subprocess
import time
from collections.abc import Iterator

import aio_pika
import pytest
from rmq_helpers import sample

from obskit.rabbitmq import Publisher, PublishError, UnroutableError
from obskit.rabbitmq.errors import PublishConnectionError, PublishNackedError


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


def _rabbitmqctl(*args: str) -> str:
    return subprocess.run(["rabbitmqctl", *args], check=True, capture_output=True,
                          text=True, timeout=60).stdout


class MemoryAlarm:
    """Raise and lift a broker memory alarm: it blocks publishing connections (no confirms)."""

    def __init__(self) -> None:
        self.before = _rabbitmqctl(
            "eval", "vm_memory_monitor:get_vm_memory_high_watermark().").strip()

    def raise_(self) -> None:
        _rabbitmqctl("set_vm_memory_high_watermark", "absolute", "1")

    def lift(self) -> None:
        if self.before.startswith("{absolute,"):
            _rabbitmqctl("set_vm_memory_high_watermark", "absolute", self.before[10:-1].strip())
        else:
            _rabbitmqctl("set_vm_memory_high_watermark", self.before)


@pytest.fixture
def memory_alarm() -> Iterator[MemoryAlarm]:
    if shutil.which("rabbitmqctl") is None:
        pytest.fail("rabbitmqctl not found: the broker's CLI is part of the test machine")
    alarm = MemoryAlarm()
    try:
        yield alarm
    finally:
        alarm.lift()


async def test_no_confirm_within_the_timeout_raises_instead_of_hanging(url, topology,
                                                                       memory_alarm):
    async with Publisher(url, confirm_timeout=0.5, reconnect_attempts=1,
                         reconnect_backoff=0.05) as pub:
        await pub.publish("orders", "b2c", b"before the alarm")
        memory_alarm.raise_()
        t0 = time.monotonic()
        try:
            with pytest.raises(PublishConnectionError, match="no confirm within 0.5 s"):
                await pub.publish("orders", "b2c", b"during the alarm")
            elapsed = time.monotonic() - t0
        finally:
            memory_alarm.lift()  # before closing: a blocked connection cannot close cleanly
        # Two attempts of 0.5 s, each deadline enforced within a tick (0.05 s) of passing.
        assert 1.0 <= elapsed < 3.0, elapsed
        # The caller's task was not left cancelled: it still awaits and publishes.
        await asyncio.sleep(0)
        await pub.publish("orders", "b2c", b"after the alarm")


# aio-pika's own callbacks complain when a loop ends under an open connection (the first run
# below does that on purpose): noise, not a failure of the test.
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_publisher_follows_its_caller_to_a_new_event_loop(url, topology):
    """A module-level publisher used by successive asyncio.run() calls (scripts, tests, a
    worker thread with its own loop): each new loop gets a connection of its own."""
    pub = Publisher(url, confirm_timeout=5)

    async def publish_two(pub: Publisher, tag: str) -> None:  # concurrent: a contended lock
        await asyncio.wait_for(asyncio.gather(
            pub.publish("orders", "b2c", {"run": tag, "n": 1}),
            pub.publish("orders", "b2c", {"run": tag, "n": 2})), timeout=15)

    asyncio.run(publish_two(pub, "first"))  # its loop ends with the connection still open
    asyncio.run(publish_two(pub, "second"))
    asyncio.run(pub.close())

    async def depth() -> int:
        conn = await aio_pika.connect(url)
        async with conn:
            q = await (await conn.channel()).declare_queue("orders.b2c", passive=True)
            return int(q.declaration_result.message_count)

    assert asyncio.run(depth()) == 4
    del pub
    gc.collect()  # the first loop's leftovers go now, under this test's warning filter


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_given_connection_of_another_loop_is_a_clear_error(url, topology):
    async def first() -> Publisher:
        pub = Publisher(connection=await aio_pika.connect_robust(url))
        await pub.publish("orders", "b2c", b"first")
        return pub

    pub = asyncio.run(first())
    with pytest.raises(RuntimeError, match="belongs to another event loop"):
        asyncio.run(pub.publish("orders", "b2c", b"second"))
    del pub
    gc.collect()
