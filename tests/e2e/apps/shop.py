"""The e2e test's web shop: FastAPI, `obskit.init()`, publishes each order with aio-pika or pika.

Run by tests/e2e as ``uvicorn shop:app`` in a subprocess. Env: E2E_QUEUE (target queue),
E2E_CLIENT (``aio_pika`` or ``pika``), AMQP_URL, plus the OTEL_* variables of the receiver.
"""

from __future__ import annotations

import json
import os
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import obskit

obskit.init("shop")

import aio_pika  # noqa: E402
import pika  # noqa: E402
from fastapi import FastAPI  # noqa: E402
from fastapi.responses import JSONResponse  # noqa: E402

AMQP_URL = os.environ.get("AMQP_URL", "amqp://guest:guest@127.0.0.1:5672/")
QUEUE = os.environ["E2E_QUEUE"]
CLIENT = os.environ.get("E2E_CLIENT", "aio_pika")
log = obskit.get_logger("shop")
state: dict[str, Any] = {}


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    if CLIENT == "aio_pika":
        connection = await aio_pika.connect(AMQP_URL)
        state["channel"] = await connection.channel()
        yield
        await connection.close()
    else:
        yield


app = FastAPI(lifespan=lifespan)


def _publish_with_pika(body: bytes, order_id: str) -> None:
    # A sync publish in FastAPI's threadpool: the request's context travels there.
    connection = pika.BlockingConnection(pika.URLParameters(AMQP_URL))
    try:
        channel = connection.channel()
        channel.basic_publish("", QUEUE, body,
                              pika.BasicProperties(message_id=f"m-{order_id}",
                                                   content_type="application/json"))
    finally:
        connection.close()


@app.post("/orders/{order_id}", status_code=202)
async def create_order(order_id: str) -> JSONResponse:
    with obskit.order_context(order_id, channel="b2c"):
        log.info("order accepted")
        body = json.dumps({"order_id": order_id}).encode()
        if CLIENT == "aio_pika":
            await state["channel"].default_exchange.publish(
                aio_pika.Message(body, message_id=f"m-{order_id}",
                                 content_type="application/json"),
                routing_key=QUEUE)
        else:
            from starlette.concurrency import run_in_threadpool

            await run_in_threadpool(_publish_with_pika, body, order_id)
        log.info("order published", queue=QUEUE)
    return JSONResponse({"order_id": order_id, "status": "accepted"}, status_code=202)
