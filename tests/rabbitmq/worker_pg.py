"""A consumer *process* for the SIGKILL test: applies orders into PostgreSQL exactly once.

usage: python worker_pg.py AMQP_URL DSN APPLIED_TABLE GUARD_TABLE
"""

from __future__ import annotations

import asyncio
import sys

from obskit.rabbitmq import Consumer, Delivery, PostgresIdempotency, orders_topology


async def main(url: str, dsn: str, applied: str, guard_table: str) -> None:
    guard = PostgresIdempotency(dsn, table=guard_table)
    await guard.setup()

    async def handler(d: Delivery) -> None:
        # The effect and the idempotency mark commit in one transaction (d.db).
        await d.db.execute(f"INSERT INTO {applied} (message_id) VALUES ($1)", d.message_id)
        await asyncio.sleep(0.005)  # the work: the test's SIGKILL lands while some is in flight

    spec = orders_topology(retry_delays=(0.2, 0.4), max_attempts=3).queue("orders.b2c")
    consumer = Consumer(spec, handler, url=url, idempotency=guard, prefetch=50, concurrency=8)
    print("ready", flush=True)
    await consumer.run()
    await guard.close()


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:5]))
