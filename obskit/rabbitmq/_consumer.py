"""Consume with manual acks, classified retries, a DLQ with error headers, and idempotency."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import time
import traceback
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import aiormq
from aiormq.abc import DeliveredMessage
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.trace import Link, Status, StatusCode
from prometheus_client import CollectorRegistry

from obskit._context import current_order
from obskit._semconv import KIND_CONSUMER
from obskit.metrics import observe_span

from . import _headers as H
from ._env import amqp_url
from ._idempotency import IdempotencyGuard, InFlightElsewhere
from ._incoming import Incoming
from ._propagation import extract as extract_headers
from ._telemetry import (
    ATTR_BODY_SIZE,
    ATTR_CONVERSATION_ID,
    ATTR_DELIVERY_COUNT,
    ATTR_DELIVERY_TAG,
    ATTR_DESTINATION,
    ATTR_ERROR_TYPE,
    ATTR_MESSAGE_ID,
    ATTR_OPERATION_NAME,
    ATTR_OPERATION_TYPE,
    ATTR_ROUTING_KEY,
    ATTR_SUBSCRIPTION,
    ATTR_SYSTEM,
    SYSTEM,
    Telemetry,
    end_span,
    guarded,
    report,
    suppressed,
    utc_now_iso,
)
from ._topology import QueueSpec
from .errors import (
    DependencyUnavailable,
    MessageParseError,
    PermanentError,
    PublishError,
    RetryableError,
)

__all__ = ["Consumer", "Delivery", "Handler", "json_body"]

_MAX_ERROR_MESSAGE = 1000
_MAX_STACK = 4000


def json_body(body: bytes) -> Any:
    """The default parser: JSON. Any failure is a ``MessageParseError`` (→ DLQ at once)."""
    return json.loads(body)


@dataclass
class Delivery:
    """What a handler receives. ``data`` is the parsed body; ``db`` the idempotency transaction.

    The order context (``order_id``/``channel`` from the W3C baggage header) is already active
    while the handler runs: logs and spans inside carry it. Re-enter
    ``obskit.order_context(d.order_id, d.channel, **local_attrs)`` to add local attributes.
    """

    body: bytes
    data: Any
    message_id: str | None
    headers: dict[str, Any]
    attempt: int
    queue: str
    exchange: str
    routing_key: str
    redelivered: bool
    order_id: str | None
    channel: str | None
    content_type: str | None
    correlation_id: str | None
    db: Any = None
    incoming: Incoming | None = field(default=None, repr=False)

    @property
    def message(self) -> aio_pika.abc.AbstractIncomingMessage | None:
        """The delivery as aio-pika's ``IncomingMessage`` (built on first use).

        obskit settles it after the handler (ack, retry or dead-letter): don't ack it yourself.
        """
        return self.incoming.message() if self.incoming is not None else None


Handler = Callable[[Delivery], Awaitable[None]]


def _is_permanent(exc: BaseException, extra: tuple[type[BaseException], ...]) -> bool:
    if isinstance(exc, RetryableError):
        return False
    if isinstance(exc, PermanentError | UnicodeDecodeError) or isinstance(exc, extra):
        return True
    # Validation errors of pydantic / jsonschema / marshmallow: retrying cannot fix the data.
    return any(c.__name__ == "ValidationError" for c in type(exc).__mro__)


def _qualname(exc: BaseException) -> str:
    t = type(exc)
    return t.__qualname__ if t.__module__ == "builtins" else f"{t.__module__}.{t.__qualname__}"


class Consumer:
    """Consume one queue of the topology.

    * manual ack after the handler returns; ``prefetch`` bounds unacked deliveries and
      ``concurrency`` the handlers running at once;
    * ``PermanentError``, a body ``parse`` cannot read, validation errors and ``permanent_errors``
      go to ``<queue>.dlq`` at once; other exceptions retry through the delay tiers until
      ``queue.max_attempts``, then the DLQ. DLQ messages carry ``x-obskit-*`` error headers;
    * the copy to the retry tier / DLQ is published with a confirm *before* the original is
      acked: a crash in between duplicates (deduplicated by ``idempotency``), never loses;
    * reconnects (robust connection) and resumes; ``stop()`` stops taking messages, lets
      in-flight handlers finish for ``shutdown_timeout`` seconds, then returns the rest to the
      queue unacked.
    """

    def __init__(self, queue: QueueSpec, handler: Handler, *, url: str | None = None,
                 vhost: str | None = None, prefetch: int = 32, concurrency: int = 8,
                 parse: Callable[[bytes], Any] | None = json_body,
                 idempotency: IdempotencyGuard | None = None,
                 permanent_errors: tuple[type[BaseException], ...] = (),
                 shutdown_timeout: float = 30.0, reconnect_interval: float = 1.0,
                 record_dead_letter_stage: bool = True,
                 tracer_provider: trace.TracerProvider | None = None,
                 registry: CollectorRegistry | None = None) -> None:
        if concurrency < 1 or prefetch < 1:
            raise ValueError("prefetch and concurrency must be >= 1")
        self.spec = queue
        self.handler = handler
        self.url = amqp_url(url, vhost)
        self.prefetch = prefetch
        self.concurrency = concurrency
        self.parse = parse
        self.idempotency = idempotency
        self.permanent_errors = permanent_errors
        self.shutdown_timeout = shutdown_timeout
        self.reconnect_interval = reconnect_interval
        self.record_dead_letter_stage = record_dead_letter_stage
        self._registry = registry
        self._tm = Telemetry(tracer_provider, registry)
        self._sem = asyncio.Semaphore(concurrency)
        self._connection: aio_pika.abc.AbstractConnection | None = None
        self._supervisor: asyncio.Task[None] | None = None
        self._lost = asyncio.Event()
        self._channel: aio_pika.abc.AbstractChannel | None = None
        self._queue: aio_pika.abc.AbstractQueue | None = None
        self._tag: str | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._stopping = False
        self._stopped = asyncio.Event()
        m = self._tm.metrics
        q = queue.name
        self._m_consumed = m.msg_consumed.labels(SYSTEM, q)
        self._m_acked = m.msg_acked.labels(SYSTEM, q)
        self._m_duration = {o: m.msg_process_duration.labels(SYSTEM, q, o)
                            for o in ("ack", "retry", "dead_letter", "duplicate", "requeue")}
        self._span_name = f"{q} process"
        self._log_success = True

    # --- lifecycle ---------------------------------------------------------------------------
    async def __aenter__(self) -> Consumer:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    async def start(self) -> None:
        """Connect and start consuming; returns at once (handlers run in the background).

        Raises if the broker is unreachable now; after that, connection losses are retried
        forever (with backoff up to 30 s) and consumption resumes.
        """
        self._stopping = False
        self._stopped.clear()
        # Per-message success lines are debug: skip building them when debug is off (decided
        # here, not per message — a level change takes effect at the next start()).
        self._log_success = _debug_enabled(self._tm.log)
        await self._connect()
        self._supervisor = asyncio.create_task(self._supervise(),
                                               name=f"obskit-consumer-{self.spec.name}")
        with guarded():
            self._tm.log.info("consumer started", queue=self.spec.name, prefetch=self.prefetch,
                              concurrency=self.concurrency)

    async def _connect(self) -> None:
        # A plain connection plus our own reconnect loop (not connect_robust, whose restore
        # would re-consume through aio-pika's Queue.consume, not on the aiormq channel).
        lost = asyncio.Event()
        connection = await aio_pika.connect(self.url)
        try:
            # Confirms on the consuming channel: retry/DLQ copies are confirmed before the ack.
            channel = await connection.channel(publisher_confirms=True, on_return_raises=True)
            await channel.set_qos(prefetch_count=self.prefetch)
            queue = await channel.get_queue(self.spec.name, ensure=True)
            connection.close_callbacks.add(lambda *_: lost.set())
            channel.close_callbacks.add(lambda *_: lost.set())
            # On the aiormq channel under aio-pika's: no IncomingMessage and no second task per
            # delivery (see _incoming.py); generic aio-pika instrumentation never sees it.
            underlay = await channel.get_underlay_channel()
            # Set before consuming: a delivery can arrive before basic_consume returns, and its
            # retry or dead letter goes out on this channel.
            self._connection, self._channel, self._queue = connection, channel, queue
            self._lost = lost
            tag = (await underlay.basic_consume(self.spec.name, self._on_message)).consumer_tag
            if tag is None:
                raise RuntimeError("the broker returned no consumer tag")
        except BaseException:
            self._connection = self._channel = self._queue = None
            await connection.close()
            raise
        self._tag = tag

    async def _supervise(self) -> None:
        while not self._stopping:
            await self._lost.wait()
            if self._stopping:
                return
            with guarded():
                self._tm.log.warning("consumer connection lost, reconnecting",
                                     queue=self.spec.name)
            old = self._connection
            if old is not None and not old.is_closed:
                with contextlib.suppress(Exception):
                    await old.close()
            delay = self.reconnect_interval
            while not self._stopping:
                try:
                    await self._connect()
                    with guarded():
                        self._tm.log.info("consumer reconnected", queue=self.spec.name)
                    break
                except Exception as exc:
                    with guarded():
                        self._tm.log.warning("reconnect failed", queue=self.spec.name,
                                             error=repr(exc), retry_in=delay)
                    await asyncio.sleep(delay)
                    delay = min(delay * 2, 30.0)

    async def run(self, *, handle_signals: bool = True) -> None:
        """``start()`` then wait until ``stop()`` (or SIGTERM/SIGINT when ``handle_signals``)."""
        await self.start()
        if handle_signals:
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGTERM, signal.SIGINT):
                try:
                    loop.add_signal_handler(sig, lambda: asyncio.ensure_future(self.stop()))
                except (NotImplementedError, RuntimeError):  # not the main thread
                    pass
        await self._stopped.wait()

    async def stop(self, timeout: float | None = None) -> None:
        """Stop taking messages; finish in-flight handlers or return their messages."""
        if self._stopping:
            await self._stopped.wait()
            return
        self._stopping = True
        self._lost.set()  # wake the supervisor so it exits
        try:
            if self._queue is not None and self._tag is not None:
                with contextlib.suppress(Exception):  # channel gone: the broker requeues
                    await self._queue.cancel(self._tag)
            pending = {t for t in self._tasks if not t.done()}
            if pending:
                _, still = await asyncio.wait(pending, timeout=timeout or self.shutdown_timeout)
                for t in still:
                    t.cancel()  # its message is nacked back to the queue
                if still:
                    await asyncio.wait(still, timeout=5)
            if self._supervisor is not None:
                self._supervisor.cancel()
                with contextlib.suppress(BaseException):
                    await self._supervisor
            if self._connection is not None and not self._connection.is_closed:
                await self._connection.close()
        finally:
            self._connection = self._channel = self._queue = None
            self._supervisor = None
            with guarded():
                self._tm.log.info("consumer stopped", queue=self.spec.name)
            self._stopped.set()

    # --- per message -------------------------------------------------------------------------
    async def _on_message(self, raw: DeliveredMessage) -> None:
        message = Incoming(raw)
        task = asyncio.current_task()
        if task is not None:  # removed in the finally below: no done-callback per message
            self._tasks.add(task)
        try:
            channel = self._channel  # retry/DLQ copies go out on the delivery's channel
            async with self._sem:
                if self._stopping:
                    await _settle(message.nack, requeue=True)
                    return
                # One coroutine layer less per message: the processing is inlined here.
                tm = self._tm
                spec = self.spec
                started = time.perf_counter()
                headers: dict[str, Any] = dict(message.headers)
                try:
                    failed_before = int(headers.get(H.ATTEMPT, 0) or 0)
                except (TypeError, ValueError):
                    failed_before = 0
                attempt = failed_before + 1
                mid = message.message_id
                try:
                    self._m_consumed.inc()
                except Exception as exc:
                    report(exc)
                try:
                    ctx = extract_headers(headers)
                except Exception as exc:
                    report(exc)
                    ctx = Context()
                links: list[Link] = []
                order_id = order_channel = None
                try:
                    parent = trace.get_current_span(ctx).get_span_context()
                    if parent.is_valid:
                        links.append(Link(parent))
                    order_id, order_channel = current_order(ctx)
                except Exception as exc:
                    report(exc)
                span = tm.start_span(self._span_name, KIND_CONSUMER,
                                     lambda: _process_attributes(message, spec.name, mid,
                                                                 attempt, order_id),
                                     ctx, links)
                # The sender's context (order baggage) and our span, current for the handler.
                token = otel_context.attach(trace.set_span_in_context(span, ctx))
                try:
                    outcome = await self._run_handler(message, channel, headers, mid, attempt,
                                                      failed_before, order_id, order_channel, span)
                finally:
                    otel_context.detach(token)
                    end_span(span)
                try:
                    hist = self._m_duration[outcome]
                    observe_span(hist, time.perf_counter() - started, span)
                except Exception as exc:
                    report(exc)
        except asyncio.CancelledError:
            await _settle(message.nack, requeue=True)
            raise
        finally:
            if task is not None:
                self._tasks.discard(task)

    async def _run_handler(self, message: Incoming,
                           channel: aio_pika.abc.AbstractChannel | None,
                           headers: dict[str, Any], mid: str | None, attempt: int,
                           failed_before: int, order_id: str | None,
                           order_channel: str | None, span: trace.Span) -> str:
        tm = self._tm
        spec = self.spec
        try:
            try:
                data = self.parse(message.body) if self.parse is not None else None
            except Exception as exc:
                raise MessageParseError(f"cannot parse body: {type(exc).__name__}: {exc}") \
                    from exc
            delivery = Delivery(
                body=message.body, data=data, message_id=mid, headers=headers, attempt=attempt,
                queue=spec.name, exchange=message.exchange or "",
                routing_key=message.routing_key or "", redelivered=bool(message.redelivered),
                order_id=order_id, channel=order_channel, content_type=message.content_type,
                correlation_id=message.correlation_id, incoming=message)
            if self.idempotency is not None and mid:
                async with self.idempotency.claim(mid, spec.name) as claim:
                    if claim.duplicate:
                        with guarded():
                            span.set_attribute("messaging.obskit.duplicate", True)
                            tm.log.info("duplicate message skipped",
                                        **_log_fields(spec.name, mid, attempt, order_id))
                        await _settle(message.ack)
                        return "duplicate"
                    delivery.db = claim.connection
                    await self.handler(delivery)
            else:
                await self.handler(delivery)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            return await self._failed(message, channel, headers, mid, attempt, failed_before,
                                      exc, span, _log_fields(spec.name, mid, attempt, order_id))
        # Ack only after the handler (and the idempotency commit) succeeded. Inline rather than
        # _settle(): one await layer less on the path of every message.
        try:
            await message.ack()
        except aio_pika.exceptions.MessageProcessError:  # already settled
            pass
        except _CHANNEL_GONE:  # the broker requeues the message
            return "requeue"
        try:
            self._m_acked.inc()
            if self._log_success:
                tm.log.debug("message processed", **_log_fields(spec.name, mid, attempt, order_id))
        except Exception as exc:
            report(exc)
        return "ack"

    async def _failed(self, message: Incoming,
                      channel: aio_pika.abc.AbstractChannel | None,
                      headers: dict[str, Any], mid: str | None, attempt: int,
                      failed_before: int, exc: Exception, span: trace.Span,
                      log_fields: dict[str, Any]) -> str:
        tm = self._tm
        spec = self.spec
        error_type = type(exc).__name__
        permanent = _is_permanent(exc, self.permanent_errors)
        in_flight = isinstance(exc, InFlightElsewhere)
        unavailable = isinstance(exc, DependencyUnavailable)
        # Neither is the message's fault: retried without spending an attempt.
        failed = failed_before if in_flight or unavailable else attempt
        retry = not permanent and (in_flight or unavailable or failed < spec.max_attempts)
        now = utc_now_iso()
        new = {k: v for k, v in headers.items() if k not in H.BROKER_OWNED}
        new[H.ATTEMPT] = failed
        outage = 0
        if unavailable:
            try:
                outage = int(headers.get(H.UNAVAILABLE, 0) or 0) + 1
            except (TypeError, ValueError):
                outage = 1
            new[H.UNAVAILABLE] = outage
        else:
            new.pop(H.UNAVAILABLE, None)
        new[H.ERROR_TYPE] = _qualname(exc)
        new[H.ERROR_MESSAGE] = str(exc)[:_MAX_ERROR_MESSAGE]
        new.setdefault(H.FIRST_FAILURE, now)
        new[H.LAST_FAILURE] = now
        new[H.SERVICE] = tm.service
        new.setdefault(H.ORIGINAL_QUEUE, spec.name)
        new.setdefault(H.ORIGINAL_EXCHANGE, message.exchange or "")
        new.setdefault(H.ORIGINAL_ROUTING_KEY, message.routing_key or "")
        with guarded():
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{error_type}: {exc}"[:200]))
            span.set_attribute(ATTR_ERROR_TYPE, error_type)
        if retry:
            # An outage backs off through the tiers by its own count (the last tier repeats).
            target_ex, target_rk = "", spec.retry_queue_for(max(outage or failed, 1))
        else:
            new[H.DEAD_LETTER_REASON] = "permanent" if permanent else "exhausted"
            new[H.DEAD_LETTERED_AT] = now
            new[H.ERROR_STACK] = "".join(
                traceback.format_exception(type(exc), exc, exc.__traceback__))[-_MAX_STACK:]
            target_ex, target_rk = spec.dlx, spec.name
        copy = aio_pika.Message(
            message.body, headers=new, content_type=message.content_type,
            content_encoding=message.content_encoding, message_id=mid,
            correlation_id=message.correlation_id, type=message.type, app_id=message.app_id,
            timestamp=message.timestamp, delivery_mode=aio_pika.DeliveryMode.PERSISTENT)
        try:
            if channel is None or channel.is_closed:
                raise ConnectionError("the delivery's channel is closed")
            ex = (channel.default_exchange if target_ex == ""
                  else await channel.get_exchange(target_ex, ensure=False))
            with suppressed():
                await ex.publish(copy, target_rk, mandatory=True, timeout=10)
        except (PublishError, aiormq.exceptions.DeliveryError) as pub_exc:
            # The retry tier / DLX is missing or full: let the broker dead-letter the original
            # (at-least-once DLX on quorum queues) rather than spin on it.
            with guarded():
                tm.log.error("cannot publish failed message, rejecting to the DLX",
                             target=target_rk, error=repr(pub_exc), **log_fields)
            await _settle(message.reject, requeue=False)
            return "dead_letter"
        except Exception as pub_exc:
            # Connection trouble: the unacked original comes back after the reconnect.
            with guarded():
                tm.log.warning("cannot publish failed message, leaving it unacked",
                               target=target_rk, error=repr(pub_exc), **log_fields)
            return "requeue"
        await _settle(message.ack)
        with guarded():
            m = tm.metrics
            if retry:
                m.msg_retried.labels(SYSTEM, spec.name, error_type).inc()
                tm.log.warning("dependency unavailable, will retry" if unavailable
                               else "message failed, will retry", error_type=error_type,
                               error=str(exc)[:200], retry_queue=target_rk, **log_fields)
            else:
                m.msg_dead_lettered.labels(SYSTEM, spec.name, error_type).inc()
                tm.log.error("message dead-lettered", error_type=error_type,
                             error=str(exc)[:200], reason=new[H.DEAD_LETTER_REASON],
                             dlq=spec.dlq, **log_fields)
                if self.record_dead_letter_stage and log_fields.get("order_id"):
                    from obskit._orders import record_stage

                    record_stage("dead_lettered", registry=self._registry,
                                 queue=spec.name, error_type=error_type)
        return "retry" if retry else "dead_letter"


def _log_fields(queue: str, mid: str | None, attempt: int,
                order_id: str | None) -> dict[str, Any]:
    """The fields of every log line about one delivery (built only when a line is written)."""
    fields: dict[str, Any] = {"queue": queue, "message_id": mid, "attempt": attempt}
    if order_id:
        fields["order_id"] = order_id
    return fields


def _debug_enabled(log: Any) -> bool:
    try:
        bound = log.bind()  # structlog's lazy proxy resolves the configured wrapper class
        check = getattr(bound, "is_enabled_for", None) or getattr(bound, "isEnabledFor", None)
        return True if check is None else bool(check(logging.DEBUG))
    except Exception:
        return True


def _process_attributes(message: Incoming, queue: str,
                        mid: str | None, attempt: int, order_id: str | None) -> dict[str, Any]:
    """The process span's attributes (built only for a sampled span)."""
    attributes: dict[str, Any] = {
        ATTR_SYSTEM: SYSTEM, ATTR_DESTINATION: queue,
        "messaging.rabbitmq.destination.exchange": message.exchange or "amq.default",
        "messaging.rabbitmq.message.redelivered": bool(message.redelivered),
        ATTR_SUBSCRIPTION: queue, ATTR_OPERATION_TYPE: "process",
        ATTR_OPERATION_NAME: "process", ATTR_MESSAGE_ID: mid or "",
        ATTR_ROUTING_KEY: message.routing_key or "",
        ATTR_DELIVERY_TAG: message.delivery_tag or 0,
        ATTR_DELIVERY_COUNT: attempt, ATTR_BODY_SIZE: len(message.body),
    }
    if order_id:
        attributes["order.id"] = order_id
    if message.correlation_id:
        attributes[ATTR_CONVERSATION_ID] = message.correlation_id
    return attributes


# A settle that fails with these did not reach the broker: it requeues the message itself.
_CHANNEL_GONE = (aiormq.exceptions.AMQPError, aiormq.exceptions.ChannelInvalidStateError,
                 ConnectionError, RuntimeError)


async def _settle(fn: Callable[..., Awaitable[Any]], **kwargs: Any) -> bool:
    """ack/nack/reject; False when the channel is gone (the broker requeues the message)."""
    try:
        await fn(**kwargs)
        return True
    except aio_pika.exceptions.MessageProcessError:  # already settled
        return True
    except _CHANNEL_GONE:
        return False
