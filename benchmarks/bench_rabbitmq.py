"""Publish-with-confirm and consume throughput: obskit.rabbitmq vs raw aio-pika, interleaved.

    .venv/bin/python benchmarks/bench_rabbitmq.py [--messages 3000] [--rounds 4]

Both sides get the same guarantees: persistent messages, publisher confirms, mandatory, the same
quorum queue (orders.b2c of the obskit topology), manual acks. obskit also records spans (SDK
tracer provider, batch processor, discarding exporter), metrics and log calls (INFO level, as in
production). Rounds alternate which side goes first so machine noise hits both. Uses its own
vhost, deleted at the end. Needs RabbitMQ + management API (OBSKIT_RABBITMQ_*).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import statistics
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence

import aio_pika
import structlog
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult
from prometheus_client import CollectorRegistry

from obskit.rabbitmq import Consumer, Delivery, ManagementClient, Publisher, orders_topology
from obskit.rabbitmq._env import amqp_url

WINDOW = 100  # publishes in flight at once (both sides)


class _Discard(SpanExporter):
    def export(self, spans: Sequence[object]) -> SpanExportResult:  # type: ignore[override]
        return SpanExportResult.SUCCESS


async def _raw_publish(url: str, n: int) -> float:
    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel(publisher_confirms=True, on_return_raises=True)
        ex = await ch.get_exchange("orders", ensure=False)
        t0 = time.perf_counter()
        for start in range(0, n, WINDOW):
            await asyncio.gather(*(
                ex.publish(aio_pika.Message(b'{"order_id":"%d"}' % i, message_id=uuid.uuid4().hex,
                                            content_type="application/json",
                                            delivery_mode=aio_pika.DeliveryMode.PERSISTENT),
                           "b2c", mandatory=True)
                for i in range(start, min(start + WINDOW, n))))
        return n / (time.perf_counter() - t0)


async def _obskit_publish(url: str, n: int, provider: TracerProvider,
                          registry: CollectorRegistry) -> float:
    async with Publisher(url, tracer_provider=provider, registry=registry) as pub:
        t0 = time.perf_counter()
        for start in range(0, n, WINDOW):
            await asyncio.gather(*(
                pub.publish("orders", "b2c", {"order_id": str(i)}, order_id=str(i),
                            channel="b2c")
                for i in range(start, min(start + WINDOW, n))))
        return n / (time.perf_counter() - t0)


async def _raw_consume(url: str, n: int) -> float:
    done = asyncio.Event()
    count = 0
    conn = await aio_pika.connect(url)
    async with conn:
        ch = await conn.channel()
        await ch.set_qos(prefetch_count=WINDOW)
        q = await ch.get_queue("orders.b2c")

        first = 0.0

        async def on_message(m: aio_pika.abc.AbstractIncomingMessage) -> None:
            nonlocal count, first
            if not first:
                first = time.perf_counter()
            json.loads(m.body)
            await m.ack()
            count += 1
            if count == n:
                done.set()

        tag = await q.consume(on_message)
        await done.wait()
        elapsed = time.perf_counter() - first
        await q.cancel(tag)
    return (n - 1) / elapsed


async def _obskit_consume(url: str, n: int, provider: TracerProvider,
                          registry: CollectorRegistry) -> float:
    done = asyncio.Event()
    count = 0
    spec = orders_topology().queue("orders.b2c")

    first = 0.0

    async def handler(d: Delivery) -> None:
        nonlocal count, first
        if not first:
            first = time.perf_counter()
        count += 1
        if count == n:
            done.set()

    c = Consumer(spec, handler, url=url, prefetch=WINDOW, concurrency=WINDOW,
                 tracer_provider=provider, registry=registry)
    # Timed from the first message to the last on both sides: connection set-up excluded.
    await c.start()
    await done.wait()
    elapsed = time.perf_counter() - first
    await c.stop()
    return (n - 1) / elapsed


async def _fill(url: str, n: int) -> None:
    await _raw_publish(url, n)


async def main(messages: int, rounds: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    provider = TracerProvider()
    provider.add_span_processor(BatchSpanProcessor(_Discard()))
    registry = CollectorRegistry()
    vhost = f"obskit-bench-{uuid.uuid4().hex[:6]}"
    url = amqp_url(None, vhost)
    async with ManagementClient() as mgmt:
        await mgmt.create_vhost(vhost)
        try:
            conn = await aio_pika.connect(url)
            async with conn:
                await orders_topology().declare(conn)
                queue = await (await conn.channel()).get_queue("orders.b2c")
                purge: Callable[[], Awaitable[object]] = queue.purge
                results: dict[str, list[float]] = {k: [] for k in
                                                   ("pub_raw", "pub_obskit", "con_raw",
                                                    "con_obskit")}
                cpu: dict[str, list[float]] = {k: [] for k in results}
                await _raw_publish(url, 500)  # warm-up
                await purge()
                for r in range(rounds):
                    order = ("raw", "obskit") if r % 2 == 0 else ("obskit", "raw")
                    for side in order:
                        c0 = time.process_time()
                        if side == "raw":
                            results["pub_raw"].append(await _raw_publish(url, messages))
                        else:
                            results["pub_obskit"].append(
                                await _obskit_publish(url, messages, provider, registry))
                        cpu[f"pub_{side}"].append((time.process_time() - c0) / messages)
                        await purge()
                    for side in order:
                        await _fill(url, messages)
                        c0 = time.process_time()
                        if side == "raw":
                            results["con_raw"].append(await _raw_consume(url, messages))
                        else:
                            results["con_obskit"].append(
                                await _obskit_consume(url, messages, provider, registry))
                        cpu[f"con_{side}"].append((time.process_time() - c0) / messages)
                        await purge()
                    print(f"round {r + 1}/{rounds}: " + "  ".join(
                        f"{k}={v[-1]:,.0f}/s" for k, v in results.items()), flush=True)
        finally:
            await mgmt.delete_vhost(vhost)
    provider.shutdown()
    med = {k: statistics.median(v) for k, v in results.items()}
    us = {k: statistics.median(v) * 1e6 for k, v in cpu.items()}
    print()
    print(f"{messages} messages x {rounds} rounds, window {WINDOW}; medians")
    print(f"{'':22}{'raw msgs/s':>12}{'obskit msgs/s':>15}{'ratio':>7}"
          f"{'raw CPU us/msg':>16}{'obskit CPU us/msg':>19}")
    for label, key in (("publish with confirm", "pub"), ("consume + ack", "con")):
        raw, ob = med[f"{key}_raw"], med[f"{key}_obskit"]
        print(f"{label:22}{raw:>12,.0f}{ob:>15,.0f}{ob / raw:>7.2f}"
              f"{us[f'{key}_raw']:>16.0f}{us[f'{key}_obskit']:>19.0f}")


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    asyncio.run(main(a.messages, a.rounds))
