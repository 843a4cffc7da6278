"""Fixtures for tests/rabbitmq: a fresh vhost per test on the real broker, fresh registries."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

import aio_pika
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from rmq_helpers import AMQP, MGMT

from obskit.rabbitmq import ManagementClient, Topology, orders_topology

# obskit.metrics caches catalogues by id(registry): keep every registry alive so an id is never
# reused by a later test's registry.
_registries: list[CollectorRegistry] = []


@pytest.fixture(autouse=True)
def _env(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OBSKIT_RABBITMQ_URL", AMQP)
    monkeypatch.setenv("OBSKIT_RABBITMQ_MANAGEMENT_URL", MGMT)


@pytest.fixture
async def mgmt() -> AsyncIterator[ManagementClient]:
    async with ManagementClient(MGMT) as m:
        yield m


@pytest.fixture
async def vhost(mgmt: ManagementClient) -> AsyncIterator[str]:
    name = f"obskit-test-{uuid.uuid4().hex[:10]}"
    await mgmt.create_vhost(name)
    try:
        yield name
    finally:
        await mgmt.delete_vhost(name)


@pytest.fixture
def url(vhost: str) -> str:
    return f"amqp://guest:guest@127.0.0.1:5672/{vhost}"


@pytest.fixture
def registry() -> CollectorRegistry:
    reg = CollectorRegistry()
    _registries.append(reg)
    return reg


@pytest.fixture
def spans() -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


@pytest.fixture
async def topology(url: str) -> Topology:
    """orders.b2c / orders.b2b with fast retry tiers (0.2 s, 0.4 s) and 3 attempts."""
    topo = orders_topology(retry_delays=(0.2, 0.4), max_attempts=3)
    conn = await aio_pika.connect(url)
    try:
        await topo.declare(conn)
    finally:
        await conn.close()
    return topo
