"""The e2e test's MES on pika: ``basic_consume`` callback (or the ``channel.consume()``
generator with E2E_MODE=generator), stores to PostgreSQL with psycopg.

Exits after E2E_COUNT messages (obskit flushes at exit). Env: E2E_QUEUE, E2E_TABLE, PG_DSN,
AMQP_URL, plus the OTEL_* variables of the receiver.
"""

from __future__ import annotations

import json
import os
from typing import Any

import obskit

obskit.init("mes")

import pika  # noqa: E402
import psycopg  # noqa: E402

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
PG_DSN = os.environ.get("PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
QUEUE = os.environ["E2E_QUEUE"]
TABLE = os.environ["E2E_TABLE"]
COUNT = int(os.environ.get("E2E_COUNT", "1"))
MODE = os.environ.get("E2E_MODE", "callback")
log = obskit.get_logger("mes")


def main() -> None:
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    channel = connection.channel()
    handled = 0
    with psycopg.connect(PG_DSN, autocommit=True) as db:
        def handle(ch: Any, method: Any, properties: Any, body: bytes) -> None:
            nonlocal handled
            order = json.loads(body)
            log.info("order received")
            db.execute(f"INSERT INTO {TABLE} (order_id) VALUES (%s)",  # noqa: S608
                       (order["order_id"],))
            log.info("order stored")
            ch.basic_ack(method.delivery_tag)
            handled += 1
            if handled >= COUNT:
                ch.stop_consuming()

        if MODE == "generator":
            for method, properties, body in channel.consume(QUEUE, inactivity_timeout=30):
                if method is None:
                    break
                handle(channel, method, properties, body)
                if handled >= COUNT:
                    break
            channel.cancel()
        else:
            channel.basic_consume(QUEUE, handle)
            channel.start_consuming()
    connection.close()


if __name__ == "__main__":
    main()
