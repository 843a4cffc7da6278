"""aio-pika: PRODUCER spans + propagation on publish, and every consume path runs in the sender's
context (trace and order baggage) under a CONSUMER span.

Written with wrapt rather than the contrib ``AioPikaInstrumentor``: that one declares
``aio_pika < 10`` (it silently does nothing on aio-pika 10) and loses the context in
``queue.iterator()``, where the span ends before the loop body runs.

Where the sender's context is current, per consume path:

* ``queue.consume(callback)``: inside the callback (the span ends when it returns);
* ``queue.iterator()`` / ``async for message in queue``: from the moment ``__anext__`` returns a
  message until the next ``__anext__`` (or the iterator's ``async with`` exits), i.e. the loop
  body; an exception leaving ``async with queue.iterator()`` is recorded on that message's span;
* ``queue.get()``: from ``get()`` until the message is settled (``ack``/``nack``/``reject``,
  or the end of ``async with message.process()``), or the next ``get()`` in the same task;
* ``async with message.process()`` on a message obskit has not seen (instrumented late):
  inside the block.

The ``outcome`` label of ``messaging_process_duration_seconds`` is how the message was settled:
``ack``, ``requeue``, ``reject``, else ``error`` (the handler raised), ``auto_ack`` (no_ack
consumers), ``unsettled`` (left for later).
"""

from __future__ import annotations

import contextvars
import inspect
import logging
from collections.abc import Awaitable, Callable
from copy import copy
from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import unwrap

from obskit.integrations import _amqp

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("aio_pika",)

_log = logging.getLogger("obskit")
_ins: _amqp.Instruments | None = None
# id(message) -> (message, delivery): lets ack/process() find the delivery of a message
# (IncomingMessage has __slots__ and no __weakref__, so nothing can be stored on it).
_active: dict[int, tuple[Any, _amqp.Delivery]] = {}
_MAX_ACTIVE = 10_000
# The delivery started by the last get() in this task; ended by the next get().
_last_get: contextvars.ContextVar[_amqp.Delivery | None] = contextvars.ContextVar(
    "obskit_aio_pika_last_get", default=None)
# RobustQueueIterator.__anext__ may call QueueIterator.__anext__: count a message once.
_in_anext: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "obskit_aio_pika_in_anext", default=False)
_ITER_ATTR = "_obskit_delivery"


def _patches() -> list[tuple[Any, str, Any]]:
    """(owner, method, wrapper): one table for instrument() and uninstrument()."""
    from aio_pika import exchange, message, queue, robust_queue

    return [
        (exchange.Exchange, "publish", _publish),
        (queue.Queue, "consume", _consume),
        (queue.Queue, "get", _get),
        (queue.QueueIterator, "__anext__", _anext),
        (robust_queue.RobustQueueIterator, "__anext__", _anext),
        (queue.QueueIterator, "__aexit__", _iter_aexit),
        (queue.QueueIterator, "close", _iter_close),
        (message.IncomingMessage, "ack", _settle("ack")),
        (message.IncomingMessage, "nack", _settle("nack")),
        (message.IncomingMessage, "reject", _settle("reject")),
        (message.ProcessContext, "__aenter__", _process_enter),
        (message.ProcessContext, "__aexit__", _process_exit),
    ]


def instrument(handle: Handle) -> None:
    global _ins
    if _ins is not None:
        return
    _ins = _amqp.Instruments.of(handle, "aio_pika")
    for owner, name, wrapper in _patches():
        wrapt.wrap_function_wrapper(owner, name, wrapper)


def uninstrument() -> None:
    global _ins
    if _ins is None:
        return
    # A get() message still current here would stay attached forever.
    pending = _last_get.get()
    if pending is not None:
        _finish(pending)
        _last_get.set(None)
    for owner, name, _wrapper in _patches():
        unwrap(owner, name)
    _ins = None
    _active.clear()


# --- publish ----------------------------------------------------------------------------------

async def _publish(wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
    ins = _ins
    if ins is None:
        return await wrapped(*args, **kwargs)
    message = args[0] if args else kwargs.get("message")
    routing_key = args[1] if len(args) > 1 else kwargs.get("routing_key")
    span = token = None
    try:
        span, token, headers = _amqp.start_publish(
            ins, getattr(instance, "name", ""), routing_key, getattr(message, "headers", None),
            getattr(message, "message_id", None), getattr(message, "correlation_id", None),
            getattr(message, "body_size", None))
        if headers is not None and message is not None:
            # A copy: the caller's Message (maybe locked, maybe published again) stays as it was.
            outgoing = copy(message)
            outgoing.headers = headers
            if args:
                args = (outgoing, *args[1:])
            else:
                kwargs = {**kwargs, "message": outgoing}
    except Exception as exc:
        ins.report(exc)
    try:
        result = await wrapped(*args, **kwargs)
    except BaseException as exc:
        _amqp.end_publish(ins, span, token, exc)
        raise
    _amqp.end_publish(ins, span, token)
    return result


# --- deliveries -------------------------------------------------------------------------------

def _start(message: Any, queue: str, *, base: Context | None, attach: bool,
           kind: str) -> _amqp.Delivery | None:
    ins = _ins
    if ins is None:
        return None
    d = _amqp.start_delivery(
        ins, queue=queue, headers=getattr(message, "headers", None),
        exchange=getattr(message, "exchange", None),
        routing_key=getattr(message, "routing_key", None),
        message_id=getattr(message, "message_id", None),
        correlation_id=getattr(message, "correlation_id", None),
        body_size=getattr(message, "body_size", None),
        delivery_tag=getattr(message, "delivery_tag", None),
        redelivered=getattr(message, "redelivered", None),
        auto_ack=_is_auto_ack(message), base=base, attach=attach)
    if d is not None:
        d.extra["kind"] = kind
        if len(_active) >= _MAX_ACTIVE:  # deliveries nobody ended: end the oldest
            _, (_, oldest) = next(iter(_active.items()))
            _finish(oldest)
        _active[id(message)] = (message, d)
        d.extra["key"] = id(message)
    return d


def _is_auto_ack(message: Any) -> bool:
    return bool(getattr(message, "_IncomingMessage__no_ack", False))


def _delivery_of(message: Any) -> _amqp.Delivery | None:
    entry = _active.get(id(message))
    if entry is not None and entry[0] is message:
        return entry[1]
    return None


def _finish(d: _amqp.Delivery | None, error: BaseException | None = None) -> None:
    if d is None:
        return
    key = d.extra.get("key")
    if key is not None and _active.get(key, (None, None))[1] is d:
        del _active[key]
    _amqp.end_delivery(d, error)


async def _consume(wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
    try:
        from aio_pika.queue import QueueIterator

        callback = args[0] if args else kwargs.get("callback")
        owner = getattr(callback, "__self__", None)
        # An iterator's own on_message only queues the message: its loop body is traced by
        # _anext. Callbacks are wrapped once per consume() (RobustQueue re-consumes with the
        # original callback after a reconnect).
        if (_ins is not None and _amqp.enabled() and callback is not None
                and not isinstance(owner, QueueIterator)):
            no_ack = args[1] if len(args) > 1 else kwargs.get("no_ack", False)
            traced = _traced_callback(callback, str(getattr(instance, "name", "")), bool(no_ack))
            if args:
                args = (traced, *args[1:])
            else:
                kwargs = {**kwargs, "callback": traced}
    except Exception as exc:
        if _ins is not None:
            _ins.report(exc)
    return await wrapped(*args, **kwargs)


def _traced_callback(callback: Callable[[Any], Any], queue: str,
                     no_ack: bool) -> Callable[[Any], Awaitable[Any]]:
    async def on_message(message: Any) -> Any:
        # An empty base: the callback's task inherited whatever was current when the
        # connection was opened; the message's own context is what counts.
        d = _start(message, queue, base=Context(), attach=True, kind="callback")
        try:
            result = callback(message)
            if inspect.isawaitable(result):
                result = await result
        except BaseException as exc:
            _finish(d, exc)
            raise
        _finish(d)
        return result

    on_message.__wrapped__ = callback  # type: ignore[attr-defined]
    return on_message


async def _get(wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
    previous = _last_get.get()
    if previous is not None and not previous.ended:
        _finish(previous)
    message = await wrapped(*args, **kwargs)
    if message is not None and _ins is not None:
        d = _start(message, str(getattr(instance, "name", "")), base=None, attach=True,
                   kind="get")
        if d is not None:
            _last_get.set(d)
    return message


async def _anext(wrapped: Callable[..., Awaitable[Any]], instance: Any, args: tuple[Any, ...],
                 kwargs: dict[str, Any]) -> Any:
    if _in_anext.get():
        return await wrapped(*args, **kwargs)
    # The previous message's loop body is over: end its span and restore the loop's context
    # *before* waiting, so the wait itself is not attributed to the previous order.
    _finish(instance.__dict__.pop(_ITER_ATTR, None))
    token = _in_anext.set(True)
    try:
        message = await wrapped(*args, **kwargs)
    finally:
        _in_anext.reset(token)
    if _ins is not None:
        queue = getattr(getattr(instance, "_amqp_queue", None), "name", "")
        d = _start(message, str(queue), base=None, attach=True, kind="iterator")
        if d is not None:
            instance.__dict__[_ITER_ATTR] = d
    return message


async def _iter_aexit(wrapped: Callable[..., Awaitable[Any]], instance: Any,
                      args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    exc = args[1] if len(args) > 1 else kwargs.get("exc_val")
    _finish(instance.__dict__.pop(_ITER_ATTR, None),
            exc if isinstance(exc, BaseException) else None)
    return await wrapped(*args, **kwargs)


async def _iter_close(wrapped: Callable[..., Awaitable[Any]], instance: Any,
                      args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    _finish(instance.__dict__.pop(_ITER_ATTR, None))
    return await wrapped(*args, **kwargs)


def _settle(method: str) -> Callable[..., Awaitable[Any]]:
    async def wrapper(wrapped: Callable[..., Awaitable[Any]], instance: Any,
                      args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        result = await wrapped(*args, **kwargs)
        d = _delivery_of(instance)
        if d is not None:
            try:
                if method == "ack":
                    outcome = "ack"
                else:
                    default = method == "nack"  # nack requeues by default, reject does not
                    if method == "nack":
                        requeue = args[1] if len(args) > 1 else kwargs.get("requeue", default)
                    else:
                        requeue = args[0] if args else kwargs.get("requeue", default)
                    outcome = "requeue" if requeue else "reject"
                d.settle(outcome)
            except Exception as exc:
                d.ins.report(exc)
            if d.extra.get("kind") == "get":
                _finish(d)
        return result

    return wrapper


async def _process_enter(wrapped: Callable[..., Awaitable[Any]], instance: Any,
                         args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    message = getattr(instance, "message", None)
    if message is not None and _ins is not None and _delivery_of(message) is None:
        _start(message, str(getattr(message, "routing_key", "") or ""), base=None, attach=True,
               kind="process")
    return await wrapped(*args, **kwargs)


async def _process_exit(wrapped: Callable[..., Awaitable[Any]], instance: Any,
                        args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
    message = getattr(instance, "message", None)
    d = _delivery_of(message) if message is not None else None
    exc = args[1] if len(args) > 1 else kwargs.get("exc_val")
    if d is not None and isinstance(exc, BaseException):
        d.fail(exc)
    try:
        return await wrapped(*args, **kwargs)
    finally:
        if d is not None and d.extra.get("kind") in ("process", "get"):
            _finish(d)
