"""Publish so that a message is either confirmed in a queue or the caller gets an exception."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import CollectorRegistry

from obskit._context import current_order, with_order
from obskit.metrics import observe_traced, trace_id_of

from ._env import amqp_url
from ._propagation import inject as inject_headers
from ._telemetry import (
    ATTR_BODY_SIZE,
    ATTR_CONVERSATION_ID,
    ATTR_DESTINATION,
    ATTR_MESSAGE_ID,
    ATTR_OPERATION_NAME,
    ATTR_OPERATION_TYPE,
    ATTR_ROUTING_KEY,
    ATTR_SERVER_ADDRESS,
    ATTR_SERVER_PORT,
    ATTR_SYSTEM,
    SYSTEM,
    Telemetry,
    encode_body,
    end_span,
    guarded,
    report,
    suppress_in,
)
from .errors import (
    PublishConnectionError,
    PublishError,
    PublishNackedError,
    UnroutableError,
)

__all__ = ["Publisher"]

# Failures after which the broker may or may not have the message: retry (same message id).
_TRANSIENT = (
    ConnectionError,
    asyncio.TimeoutError,
    aiormq.exceptions.AMQPConnectionError,
    aiormq.exceptions.ChannelInvalidStateError,
    aiormq.exceptions.ChannelClosed,
)


class Publisher:
    """Persistent, confirmed, mandatory publishes with bounded reconnects.

    ``publish()`` returns the message id only after the broker confirmed the message into at
    least one queue. Unroutable → ``UnroutableError``; nacked → ``PublishNackedError``; no
    confirm after ``reconnect_attempts`` → ``PublishConnectionError`` (the message may have
    arrived: a retry with the same message id is deduplicated by an idempotent consumer).

    ``url``: argument > ``OBSKIT_RABBITMQ_URL`` > ``amqp://guest:guest@localhost:5672/``.
    """

    def __init__(self, url: str | None = None, *, vhost: str | None = None,
                 confirm_timeout: float = 10.0, reconnect_attempts: int = 5,
                 reconnect_backoff: float = 0.25,
                 connection: aio_pika.abc.AbstractRobustConnection | None = None,
                 tracer_provider: trace.TracerProvider | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        self.url = amqp_url(url, vhost)
        self.confirm_timeout = confirm_timeout
        self.reconnect_attempts = reconnect_attempts
        self.reconnect_backoff = reconnect_backoff
        self._connection = connection
        self._own_connection = connection is None
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._exchanges: dict[str, tuple[aio_pika.abc.AbstractChannel,
                                         aio_pika.abc.AbstractExchange]] = {}
        self._lock = asyncio.Lock()
        self._tm = Telemetry(tracer_provider, registry)
        parts = urlsplit(self.url)
        self._server = (parts.hostname or "localhost", parts.port or 5672)

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        await self._ensure_channel()

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._exchanges.clear()
        if channel is not None and not channel.is_closed:
            await channel.close()
        if self._own_connection and self._connection is not None:
            await self._connection.close()
            self._connection = None

    async def _ensure_channel(self) -> aio_pika.abc.AbstractChannel:
        if self._channel is not None and not self._channel.is_closed:
            return self._channel
        async with self._lock:
            if self._channel is not None and not self._channel.is_closed:
                return self._channel
            if self._connection is None or self._connection.is_closed:
                self._connection = await aio_pika.connect_robust(self.url,
                                                                 reconnect_interval=0.5)
            self._channel = await self._connection.channel(publisher_confirms=True,
                                                           on_return_raises=True)
            self._exchanges.clear()
            return self._channel

    def _cached_exchange(self, name: str) -> aio_pika.abc.AbstractExchange | None:
        """The exchange object while its channel is open (no await on the hot path)."""
        channel = self._channel
        cached = self._exchanges.get(name)
        if cached is not None and cached[0] is channel and not channel.is_closed:
            return cached[1]
        return None

    async def _exchange(self, name: str) -> aio_pika.abc.AbstractExchange:
        channel = await self._ensure_channel()
        cached = self._exchanges.get(name)
        if cached is not None and cached[0] is channel:
            return cached[1]
        ex = (channel.default_exchange if name == ""
              else await channel.get_exchange(name, ensure=False))
        self._exchanges[name] = (channel, ex)
        return ex

    async def publish(self, exchange: str, routing_key: str, body: Any, *,
                      message_id: str | None = None, content_type: str | None = None,
                      headers: Mapping[str, Any] | None = None,
                      correlation_id: str | None = None, order_id: Any = None,
                      channel: str | None = None, message_type: str | None = None,
                      timeout: float | None = None) -> str:
        """Publish ``body`` (bytes as-is, str as UTF-8, anything else as JSON); return its id.

        ``order_id``/``channel`` set the order context for this publish (else the current
        ``order_context`` is used); they travel as W3C baggage in the headers.
        """
        # Hot path, one coroutine deep (each await layer costs on every resume): plain
        # try/except instead of guarded(), one context attach for "span is current" and
        # "generic instrumentation suppressed" (see docs/performance-rabbitmq.md).
        mid = message_id or os.urandom(16).hex()  # 32 random hex digits, like uuid4().hex
        parent = with_order(order_id, channel) if order_id is not None else None
        payload, ctype = encode_body(body, content_type)
        tm = self._tm
        m = tm.metrics
        started = time.perf_counter()
        dest = exchange or "amq.default"
        # Names and values match obskit.integrations.aio_pika, so both look alike in Tempo.
        span = tm.start_span(f"{dest} publish", SpanKind.PRODUCER, {
            ATTR_SYSTEM: SYSTEM, ATTR_DESTINATION: dest,
            ATTR_OPERATION_TYPE: "publish", ATTR_OPERATION_NAME: "publish",
            ATTR_MESSAGE_ID: mid, ATTR_ROUTING_KEY: routing_key,
            ATTR_BODY_SIZE: len(payload), ATTR_SERVER_ADDRESS: self._server[0],
            ATTR_SERVER_PORT: self._server[1],
        }, parent)
        try:
            # The order's baggage (parent) and the publish span: what the headers carry and
            # what is current while sending (log lines of a retry name the order).
            ctx = trace.set_span_in_context(span, parent)
            hdrs: dict[str, Any] = dict(headers) if headers else {}
            try:
                # The publish span is the parent of the consumer's process span.
                inject_headers(hdrs, span, ctx)
                if correlation_id and span.is_recording():
                    span.set_attribute(ATTR_CONVERSATION_ID, correlation_id)
            except Exception as exc:
                report(exc)
            message = aio_pika.Message(
                payload, headers=hdrs, content_type=ctype, message_id=mid,
                correlation_id=correlation_id, type=message_type,
                delivery_mode=aio_pika.DeliveryMode.PERSISTENT,
                timestamp=int(time.time()),  # AMQP timestamps are whole seconds
            )
            try:
                m.msg_published.labels(SYSTEM, exchange, routing_key).inc()
            except Exception as exc:
                report(exc)
            token = otel_context.attach(suppress_in(ctx))
            try:
                await self._send(exchange, routing_key, message, mid, timeout)
            except PublishError as exc:
                reason = ("unroutable" if isinstance(exc, UnroutableError) else
                          "nacked" if isinstance(exc, PublishNackedError) else "unconfirmed")
                with guarded():
                    m.msg_returned.labels(SYSTEM, exchange, routing_key, reason).inc()
                    if span.is_recording():
                        span.set_status(Status(StatusCode.ERROR, str(exc)))
                        span.set_attribute("error.type", type(exc).__name__)
                    order_id, _ = current_order(ctx)
                    tm.log.error("publish failed", exchange=exchange, routing_key=routing_key,
                                 message_id=mid, reason=reason, error=str(exc),
                                 order_id=order_id)
                raise
            finally:
                otel_context.detach(token)
            try:
                m.msg_confirmed.labels(SYSTEM, exchange, routing_key).inc()
                hist = m.msg_publish_duration.labels(SYSTEM, exchange)
                observe_traced(hist, time.perf_counter() - started, trace_id_of(span))
            except Exception as exc:
                report(exc)
        finally:
            end_span(span)
        return mid

    async def _send(self, exchange: str, routing_key: str, message: aio_pika.Message,
                    mid: str, timeout: float | None) -> None:
        """Runs with generic aio-pika instrumentation suppressed (``publish`` sets that)."""
        last: BaseException | None = None
        for attempt in range(self.reconnect_attempts + 1):
            if attempt:
                # Bounded exponential backoff while the robust connection reconnects.
                await asyncio.sleep(min(self.reconnect_backoff * 2 ** (attempt - 1), 5.0))
            try:
                ex = self._cached_exchange(exchange)
                if ex is None:
                    ex = await self._exchange(exchange)
                await ex.publish(message, routing_key, mandatory=True,
                                 timeout=timeout or self.confirm_timeout)
                return
            except aio_pika.exceptions.PublishError as exc:  # basic.return
                raise UnroutableError(
                    f"unroutable: no queue bound to exchange {exchange!r} for routing key "
                    f"{routing_key!r} ({exc.args[0] if exc.args else exc})",
                    exchange=exchange, routing_key=routing_key, message_id=mid) from exc
            except aiormq.exceptions.DeliveryError as exc:  # basic.nack
                raise PublishNackedError(
                    f"the broker nacked message {mid} to {exchange!r}/{routing_key!r} (a queue "
                    "may be at its length limit with overflow=reject-publish)",
                    exchange=exchange, routing_key=routing_key, message_id=mid) from exc
            except aiormq.exceptions.ChannelNotFoundEntity as exc:
                self._channel = None  # the broker closed it
                raise UnroutableError(
                    f"exchange {exchange!r} does not exist ({exc})",
                    exchange=exchange, routing_key=routing_key, message_id=mid) from exc
            except _TRANSIENT as exc:
                last = exc
                if self._channel is not None and self._channel.is_closed:
                    self._channel = None
                with guarded():
                    self._tm.log.warning("publish interrupted, retrying", message_id=mid,
                                         attempt=attempt + 1, error=repr(exc))
        raise PublishConnectionError(
            f"no confirm for message {mid} after {self.reconnect_attempts + 1} attempts: "
            f"{last!r}", exchange=exchange, routing_key=routing_key, message_id=mid) from last
