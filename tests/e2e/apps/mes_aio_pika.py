"""The e2e test's MES: consumes with aio-pika's ``queue.iterator()`` and stores to PostgreSQL.

Exits after E2E_COUNT messages (obskit flushes at exit). Env: E2E_QUEUE, E2E_TABLE, PG_DSN,
AMQP_URL, plus the OTEL_* variables of the receiver.
"""

from __future__ import annotations

import asyncio
import json
import os

import obskit

obskit.init("mes")

import aio_pika  # noqa: E402
import psycopg  # noqa: E402

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_DSN = os.environ.get("PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
QUEUE = os.environ["E2E_QUEUE"]
TABLE = os.environ["E2E_TABLE"]
COUNT = int(os.environ.get("E2E_COUNT", "1"))
log = obskit.get_logger("mes")


async def main() -> None:
    connection = await aio_pika.connect(AMQP_URL)
    async with connection, await psycopg.AsyncConnection.connect(PG_DSN, autocommit=True) as db:
        channel = await connection.channel()
        queue = await channel.get_queue(QUEUE, ensure=True)
        handled = 0
        # The iterator path: the contrib instrumentor loses the context here.
        async with queue.iterator() as messages:
            async for message in messages:
                async with message.process():
                    order = json.loads(message.body)
                    log.info("order received")
                    await db.execute(f"INSERT INTO {TABLE} (order_id) VALUES (%s)",  # noqa: S608
                                     (order["order_id"],))
                    log.info("order stored")
                handled += 1
                if handled >= COUNT:
                    break


if __name__ == "__main__":
    asyncio.run(main())
