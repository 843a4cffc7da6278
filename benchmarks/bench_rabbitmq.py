"""Publish-with-confirm and consume throughput: obskit.rabbitmq vs raw aio-pika, interleaved.

    .venv/bin/python benchmarks/bench_rabbitmq.py [--messages 3000] [--rounds 4]

All sides get the same guarantees and broker work: persistent messages, publisher confirms,
mandatory, the same body, the same quorum queue (orders.b2c of the obskit topology), 100
publishes in flight, prefetch 100 with manual acks. obskit also records spans (SDK tracer
provider, batch processor, discarding exporter), metrics and log calls (INFO level, as in
production) and carries traceparent/baggage headers. It runs twice: every message sampled, and
10 % sampled (parentbased_traceidratio, 0.1) to show what tracing costs. Rounds rotate which side
goes first so machine noise hits all. Uses its own vhost, deleted at the end. Needs RabbitMQ +
management API (OBSKIT_RABBITMQ_*).
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
from opentelemetry.sdk.trace.sampling import ALWAYS_ON, ParentBased, TraceIdRatioBased
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


SIDES = ("raw", "obskit", "obskit10")
LABELS = {"raw": "raw aio-pika", "obskit": "obskit, all sampled",
          "obskit10": "obskit, 10% sampled"}


async def main(messages: int, rounds: int) -> None:
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.INFO))
    providers = {}
    # "obskit10" = OTEL_TRACES_SAMPLER=parentbased_traceidratio, OTEL_TRACES_SAMPLER_ARG=0.1.
    for side, sampler in (("obskit", ALWAYS_ON), ("obskit10", ParentBased(TraceIdRatioBased(0.1)))):
        providers[side] = TracerProvider(sampler=sampler)
        providers[side].add_span_processor(BatchSpanProcessor(_Discard()))
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
                results: dict[str, list[float]] = {f"{op}_{side}": [] for op in ("pub", "con")
                                                   for side in SIDES}
                cpu: dict[str, list[float]] = {k: [] for k in results}
                await _raw_publish(url, 500)  # warm-up
                await purge()
                for r in range(rounds):
                    # Rotate who goes first so machine noise hits every side alike.
                    order = SIDES[r % 3:] + SIDES[:r % 3]
                    for side in order:
                        c0 = time.process_time()
                        if side == "raw":
                            rate = await _raw_publish(url, messages)
                        else:
                            rate = await _obskit_publish(url, messages, providers[side], registry)
                        cpu[f"pub_{side}"].append((time.process_time() - c0) / messages)
                        results[f"pub_{side}"].append(rate)
                        await purge()
                    for side in order:
                        await _fill(url, messages)
                        c0 = time.process_time()
                        if side == "raw":
                            rate = await _raw_consume(url, messages)
                        else:
                            rate = await _obskit_consume(url, messages, providers[side], registry)
                        cpu[f"con_{side}"].append((time.process_time() - c0) / messages)
                        results[f"con_{side}"].append(rate)
                        await purge()
                    print(f"round {r + 1}/{rounds}: " + "  ".join(
                        f"{k}={v[-1]:,.0f}/s" for k, v in results.items()), flush=True)
        finally:
            await mgmt.delete_vhost(vhost)
    for provider in providers.values():
        provider.shutdown()
    med = {k: statistics.median(v) for k, v in results.items()}
    us = {k: statistics.median(v) * 1e6 for k, v in cpu.items()}
    print()
    print(f"{messages} messages x {rounds} rounds, window {WINDOW}; medians "
          "(ratio = obskit / raw msgs/s)")
    print(f"{'':22}{'':22}{'msgs/s':>9}{'ratio':>7}{'CPU us/msg':>12}")
    for label, key in (("publish with confirm", "pub"), ("consume + ack", "con")):
        raw = med[f"{key}_raw"]
        for side in SIDES:
            k = f"{key}_{side}"
            print(f"{label:22}{LABELS[side]:22}{med[k]:>9,.0f}{med[k] / raw:>7.2f}"
                  f"{us[k]:>12.0f}")
            label = ""


if __name__ == "__main__":
    ap = argparse.ArgumentParser(description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--messages", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=4)
    a = ap.parse_args()
    asyncio.run(main(a.messages, a.rounds))
