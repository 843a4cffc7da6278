"""Publish so that a message is either confirmed in a queue or the caller gets an exception."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import aio_pika
import aiormq
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Status, StatusCode
from prometheus_client import CollectorRegistry

from obskit._context import current_order, with_order
from obskit._semconv import KIND_PRODUCER
from obskit.metrics import observe_span

from ._env import amqp_url
from ._propagation import inject as inject_headers
from ._properties import PublishProperties
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


_TICKS_PER_LIMIT = 10
_MAX_SERIES = 1_000  # destinations whose metric children a publisher keeps
_PERSISTENT = int(aio_pika.DeliveryMode.PERSISTENT)
_stamp: tuple[int, datetime] = (0, datetime.fromtimestamp(0, tz=UTC))


def _now_seconds() -> datetime:
    """Now as an AMQP timestamp (whole seconds, UTC); one datetime per second."""
    global _stamp
    sec = int(time.time())
    if _stamp[0] != sec:
        _stamp = (sec, datetime.fromtimestamp(sec, tz=UTC))
    return _stamp[1]


def _tick_for(limit: float) -> float:
    return max(0.005, min(0.5, limit / _TICKS_PER_LIMIT))


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
        # The aiormq channel under ``_channel`` (replaced by aio-pika when it reconnects).
        self._underlay: tuple[aio_pika.abc.AbstractChannel,
                              aiormq.abc.AbstractChannel] | None = None
        self._lock = asyncio.Lock()
        # Confirm deadlines: one watchdog task for all publishes instead of an asyncio timeout
        # (a timer handle, a countdown and two context managers) per message.
        self._deadlines: dict[asyncio.Task[Any], float] = {}
        self._expired: set[asyncio.Task[Any]] = set()
        self._watchdog: asyncio.Task[None] | None = None
        self._tick = _tick_for(confirm_timeout)
        self._tm = Telemetry(tracer_provider, registry)
        self._series: dict[tuple[str, str], tuple[Any, Any, Any]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None  # the loop of the connection state
        parts = urlsplit(self.url)
        self._server = (parts.hostname or "localhost", parts.port or 5672)

    async def __aenter__(self) -> Publisher:
        await self.connect()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def connect(self) -> None:
        self._follow_loop()
        await self._ensure_channel()

    def _follow_loop(self) -> None:
        """Connection, channel, lock and watchdog belong to one event loop. Called from another
        (a second ``asyncio.run()``, a thread with its own loop), start over on that one: the old
        loop cannot close what it owned any more, so its objects are dropped, not closed."""
        loop = asyncio.get_running_loop()
        if loop is self._loop:
            return
        if self._loop is not None:
            if not self._own_connection:
                raise RuntimeError(
                    "the connection given to this Publisher belongs to another event loop; "
                    "create the Publisher (and its connection) in the loop that publishes")
            self._connection = None
            self._channel = self._underlay = None
            self._deadlines.clear()
            self._expired.clear()
            self._watchdog = None
            self._lock = asyncio.Lock()
        self._loop = loop

    async def close(self) -> None:
        self._follow_loop()  # from another loop: what the old one owned cannot be closed here
        watchdog, self._watchdog = self._watchdog, None
        if watchdog is not None:
            watchdog.cancel()
        channel, self._channel = self._channel, None
        self._underlay = None
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
            self._underlay = None
            return self._channel

    def _cached_underlay(self) -> aiormq.abc.AbstractChannel | None:
        """The open aiormq channel under the open aio-pika channel (no await on the hot path)."""
        cached = self._underlay
        if cached is None:
            return None
        channel, underlay = cached
        if channel is not self._channel or channel.is_closed or underlay.is_closed:
            return None
        return underlay

    async def _underlay_channel(self) -> aiormq.abc.AbstractChannel:
        try:
            channel = await self._ensure_channel()
            underlay = await channel.get_underlay_channel()  # waits while aio-pika reconnects
        except RuntimeError as exc:
            # aiormq refuses a channel on a connection the broker just closed ("<Connection
            # ...> closed") until the robust connection has reconnected: a transient failure.
            self._channel = self._underlay = None
            raise ConnectionError(f"connection closed while opening a channel: {exc}") from exc
        self._underlay = (channel, underlay)
        return underlay

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
        # try/except instead of guarded(), one context attach for "span is current", the
        # message sent on the aiormq channel (aio-pika's Exchange.publish, which generic
        # instrumentation wraps, is not called), see docs/performance-rabbitmq.md.
        if self._loop is not asyncio.get_running_loop():
            self._follow_loop()
        mid = message_id or os.urandom(16).hex()  # 32 random hex digits, like uuid4().hex
        parent = with_order(order_id, channel) if order_id is not None else None
        payload, ctype = encode_body(body, content_type)
        tm = self._tm
        m = tm.metrics
        started = time.perf_counter()
        dest = exchange or "amq.default"
        # Names and values match obskit.integrations.aio_pika, so both look alike in Tempo.
        span = tm.start_span(f"{dest} publish", KIND_PRODUCER, lambda: {
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
            # What aio_pika.Message(...).properties would build, without its per-field
            # setattr checks (and marshalled faster, same bytes); published on the aiormq
            # channel below aio-pika's Exchange.
            props = PublishProperties(
                content_type=ctype, correlation_id=correlation_id, delivery_mode=_PERSISTENT,
                headers=hdrs, message_id=mid, message_type=message_type,
                timestamp=_now_seconds(),
            )
            try:
                series = self._series.get((exchange, routing_key))
                if series is None:
                    series = self._new_series(exchange, routing_key)
                series[0].inc()
            except Exception as exc:
                series = None
                report(exc)
            token = otel_context.attach(ctx)
            try:
                await self._send(exchange, routing_key, payload, props, mid, timeout)
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
                if series is not None:
                    series[1].inc()
                    observe_span(series[2], time.perf_counter() - started, span)
            except Exception as exc:
                report(exc)
        finally:
            end_span(span)
        return mid

    def _new_series(self, exchange: str, routing_key: str) -> tuple[Any, Any, Any]:
        """published, confirmed and duration children for one destination, kept for reuse."""
        m = self._tm.metrics
        series = (m.msg_published.labels(SYSTEM, exchange, routing_key),
                  m.msg_confirmed.labels(SYSTEM, exchange, routing_key),
                  m.msg_publish_duration.labels(SYSTEM, exchange))
        if len(self._series) < _MAX_SERIES:
            self._series[(exchange, routing_key)] = series
        return series

    def _deadline(self, task: asyncio.Task[Any], limit: float) -> None:
        """Cancel ``task`` if it is still waiting for its confirm ``limit`` seconds from now."""
        self._deadlines[task] = time.monotonic() + limit
        if limit < self._tick * _TICKS_PER_LIMIT:
            self._tick = _tick_for(limit)
        if self._watchdog is None:
            self._watchdog = asyncio.get_running_loop().create_task(self._watch())

    def _timed_out(self, task: asyncio.Task[Any]) -> bool:
        """True when the watchdog cancelled ``task`` and nobody else did: a confirm timeout."""
        if task not in self._expired:
            return False
        self._expired.discard(task)
        return task.uncancel() == 0

    async def _watch(self) -> None:
        """Every tick, cancel the publishes past their deadline; ends when none is waiting.

        Cancelling is what ``asyncio.timeout`` does too: aiormq's ``basic_publish`` is written
        to be cancelled at any point (it forgets the pending confirm). A deadline is enforced
        within one tick (a tenth of the timeout, at most 0.5 s) after it passed.
        """
        try:
            while self._deadlines:
                await asyncio.sleep(self._tick)
                now = time.monotonic()
                for task, deadline in list(self._deadlines.items()):
                    if deadline <= now and task not in self._expired and not task.done():
                        self._expired.add(task)
                        task.cancel("obskit: publish confirm timeout")
        except Exception as exc:  # never leave publishes without a deadline silently
            report(exc)
        finally:
            if self._watchdog is asyncio.current_task():
                self._watchdog = None

    async def _send(self, exchange: str, routing_key: str, payload: bytes,
                    props: aiormq.spec.Basic.Properties, mid: str,
                    timeout: float | None) -> None:
        """Send on the aiormq channel until confirmed; bounded retries on transient failures."""
        last: BaseException | None = None
        limit = timeout or self.confirm_timeout
        task = asyncio.current_task()
        for attempt in range(self.reconnect_attempts + 1):
            if attempt:
                # Bounded exponential backoff while the robust connection reconnects.
                await asyncio.sleep(min(self.reconnect_backoff * 2 ** (attempt - 1), 5.0))
            try:
                ch = self._cached_underlay()
                if ch is None:
                    ch = await self._underlay_channel()
                if task is not None:  # else (no task to cancel): aiormq's own timeout below
                    self._deadline(task, limit)
                try:
                    await ch.basic_publish(payload, exchange=exchange, routing_key=routing_key,
                                           properties=props, mandatory=True,
                                           timeout=None if task is not None else limit)
                except asyncio.CancelledError:
                    if task is None or not self._timed_out(task):
                        raise
                    raise TimeoutError(f"no confirm within {limit:g} s") from None
                finally:
                    if task is not None:
                        self._deadlines.pop(task, None)
                        self._expired.discard(task)
                return
            except aiormq.exceptions.PublishError as exc:  # basic.return
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
                self._channel = self._underlay = None  # the broker closed it
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
