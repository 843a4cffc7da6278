"""pika: PRODUCER spans + propagation on ``basic_publish``; every consume path runs in the
sender's context (trace and order baggage) under a CONSUMER span.

Written with wrapt rather than the contrib ``PikaInstrumentor`` because that one:
patches channels one by one (only channels opened after instrumenting), ends the span of a
message from ``channel.consume()`` before the loop body runs (the body has no context),
does not instrument ``basic_get`` at all, and records neither the order attributes nor metrics.

Where the sender's context is current, per consume path:

* ``basic_consume(queue, callback)`` (BlockingChannel and the async adapters' Channel): inside
  the callback;
* ``for method, props, body in channel.consume(queue)``: the loop body, until the generator is
  resumed (or closed: ``break`` closes it);
* ``basic_get(queue)``: from the call until the message is acked/nacked/rejected, or the next
  ``basic_get`` in the same thread.

The ``outcome`` label of ``messaging_process_duration_seconds`` is how the message was settled
inside that span: ``ack``, ``requeue``, ``reject``, else ``error`` (the handler raised),
``auto_ack``, ``unsettled``.
"""

from __future__ import annotations

import contextvars
from collections.abc import Callable, Generator, Iterator
from copy import copy
from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.context import Context
from opentelemetry.instrumentation.utils import unwrap

from obskit.integrations import _amqp

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("pika",)

_ins: _amqp.Instruments | None = None
# BlockingChannel.basic_publish calls Channel.basic_publish: one span per publish.
_in_publish: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "obskit_pika_in_publish", default=False)
_last_get: contextvars.ContextVar[_amqp.Delivery | None] = contextvars.ContextVar(
    "obskit_pika_last_get", default=None)
# On the (impl) pika.channel.Channel: delivery_tag -> Delivery, for basic_ack & co.
_REGISTRY = "_obskit_deliveries"

_PATCHES: tuple[tuple[str, str, str], ...] = (
    # (module, class, method)
    ("pika.adapters.blocking_connection", "BlockingChannel", "basic_publish"),
    ("pika.adapters.blocking_connection", "BlockingChannel", "basic_consume"),
    ("pika.adapters.blocking_connection", "BlockingChannel", "consume"),
    ("pika.adapters.blocking_connection", "BlockingChannel", "basic_get"),
    ("pika.channel", "Channel", "basic_publish"),
    ("pika.channel", "Channel", "basic_consume"),
    ("pika.channel", "Channel", "basic_ack"),
    ("pika.channel", "Channel", "basic_nack"),
    ("pika.channel", "Channel", "basic_reject"),
)


def instrument(handle: Handle) -> None:
    global _ins
    if _ins is not None:
        return
    _ins = _amqp.Instruments.of(handle, "pika")
    wrappers: dict[tuple[str, str], Callable[..., Any]] = {
        ("BlockingChannel", "basic_publish"): _publish,
        ("BlockingChannel", "basic_consume"): _basic_consume,
        ("BlockingChannel", "consume"): _consume_generator,
        ("BlockingChannel", "basic_get"): _basic_get,
        ("Channel", "basic_publish"): _publish,
        ("Channel", "basic_consume"): _basic_consume,
        ("Channel", "basic_ack"): _settle("ack"),
        ("Channel", "basic_nack"): _settle("nack"),
        ("Channel", "basic_reject"): _settle("reject"),
    }
    for module, cls, method in _PATCHES:
        wrapt.wrap_function_wrapper(module, f"{cls}.{method}", wrappers[(cls, method)])


def uninstrument() -> None:
    global _ins
    if _ins is None:
        return
    # A get() message still current here would stay attached forever.
    pending = _last_get.get()
    if pending is not None:
        _finish(pending)
        _last_get.set(None)
    import importlib

    for module, cls, method in _PATCHES:
        unwrap(getattr(importlib.import_module(module), cls), method)
    _ins = None


def _arg(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str,
         default: Any = None) -> Any:
    if len(args) > index:
        return args[index]
    return kwargs.get(name, default)


def _replace(args: tuple[Any, ...], kwargs: dict[str, Any], index: int, name: str,
             value: Any) -> tuple[tuple[Any, ...], dict[str, Any]]:
    if len(args) > index:
        return (*args[:index], value, *args[index + 1:]), kwargs
    return args, {**kwargs, name: value}


# --- publish ----------------------------------------------------------------------------------

def _publish(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
             kwargs: dict[str, Any]) -> Any:
    ins = _ins
    if ins is None or _in_publish.get():
        return wrapped(*args, **kwargs)
    span = token = None
    try:
        exchange = _arg(args, kwargs, 0, "exchange", "")
        routing_key = _arg(args, kwargs, 1, "routing_key", "")
        body = _arg(args, kwargs, 2, "body", b"")
        properties = _arg(args, kwargs, 3, "properties")
        span, token, headers = _amqp.start_publish(
            ins, exchange, routing_key, getattr(properties, "headers", None),
            getattr(properties, "message_id", None), getattr(properties, "correlation_id", None),
            len(body) if isinstance(body, bytes | bytearray | str) else None)
        if headers is not None:
            import pika

            # A copy: the caller's BasicProperties may be reused for other messages.
            outgoing = copy(properties) if properties is not None else pika.BasicProperties()
            outgoing.headers = headers
            args, kwargs = _replace(args, kwargs, 3, "properties", outgoing)
    except Exception as exc:
        ins.report(exc)
    guard = _in_publish.set(True)
    try:
        result = wrapped(*args, **kwargs)
    except BaseException as exc:
        _amqp.end_publish(ins, span, token, exc)
        raise
    finally:
        _in_publish.reset(guard)
    _amqp.end_publish(ins, span, token)
    return result


# --- deliveries -------------------------------------------------------------------------------

def _impl_channel(channel: Any) -> Any:
    """Where acks go: the pika.channel.Channel behind a BlockingChannel, or the channel itself."""
    return getattr(channel, "_impl", channel)


def _start(channel: Any, queue: str, method: Any, properties: Any, body: Any, *,
           auto_ack: bool, base: Context | None, kind: str) -> _amqp.Delivery | None:
    ins = _ins
    if ins is None or method is None:
        return None
    d = _amqp.start_delivery(
        ins, queue=queue, headers=getattr(properties, "headers", None),
        exchange=getattr(method, "exchange", None),
        routing_key=getattr(method, "routing_key", None),
        message_id=getattr(properties, "message_id", None),
        correlation_id=getattr(properties, "correlation_id", None),
        body_size=len(body) if isinstance(body, bytes | bytearray) else None,
        delivery_tag=getattr(method, "delivery_tag", None),
        redelivered=getattr(method, "redelivered", None), auto_ack=auto_ack, base=base,
        attach=True)
    if d is None:
        return None
    d.extra["kind"] = kind
    try:
        tag = getattr(method, "delivery_tag", None)
        if tag is not None and not auto_ack:
            registry = _impl_channel(channel).__dict__.setdefault(_REGISTRY, {})
            registry[tag] = d
            d.extra["registry"] = (registry, tag)
    except Exception as exc:
        ins.report(exc)
    return d


def _finish(d: _amqp.Delivery | None, error: BaseException | None = None) -> None:
    if d is None:
        return
    entry = d.extra.pop("registry", None)
    if entry is not None:
        registry, tag = entry
        if registry.get(tag) is d:
            del registry[tag]
    _amqp.end_delivery(d, error)


def _basic_consume(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                   kwargs: dict[str, Any]) -> Any:
    try:
        from pika.adapters.blocking_connection import BlockingChannel

        callback = _arg(args, kwargs, 1, "on_message_callback")
        # BlockingChannel registers its own dispatcher on the impl Channel: its users'
        # callbacks are wrapped at the BlockingChannel level, once.
        if (_ins is not None and _amqp.enabled() and callable(callback)
                and not isinstance(getattr(callback, "__self__", None), BlockingChannel)):
            queue = str(_arg(args, kwargs, 0, "queue", ""))
            auto_ack = bool(_arg(args, kwargs, 2, "auto_ack", False))
            args, kwargs = _replace(args, kwargs, 1, "on_message_callback",
                                    _traced_callback(callback, queue, auto_ack))
    except Exception as exc:
        if _ins is not None:
            _ins.report(exc)
    return wrapped(*args, **kwargs)


def _traced_callback(callback: Callable[..., Any], queue: str,
                     auto_ack: bool) -> Callable[..., Any]:
    def on_message(channel: Any, method: Any, properties: Any, body: Any) -> Any:
        # An empty base: whatever was current when start_consuming() was called is not the
        # message's context.
        d = _start(channel, queue, method, properties, body, auto_ack=auto_ack, base=Context(),
                   kind="callback")
        try:
            result = callback(channel, method, properties, body)
        except BaseException as exc:
            _finish(d, exc)
            raise
        _finish(d)
        return result

    on_message.__wrapped__ = callback  # type: ignore[attr-defined]
    return on_message


def _consume_generator(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                       kwargs: dict[str, Any]) -> Any:
    inner = wrapped(*args, **kwargs)
    if _ins is None:
        return inner
    queue = str(_arg(args, kwargs, 0, "queue", ""))
    auto_ack = bool(_arg(args, kwargs, 1, "auto_ack", False))
    return _traced_generator(inner, instance, queue, auto_ack)


def _traced_generator(inner: Iterator[Any], channel: Any, queue: str,
                      auto_ack: bool) -> Generator[Any, None, None]:
    # A generator runs in its caller's context: what it attaches before ``yield`` is current in
    # the caller's loop body, and it is undone when the loop asks for the next message.
    d: _amqp.Delivery | None = None
    try:
        for item in inner:
            _finish(d)
            d = None
            method, properties, body = item
            if method is not None:  # (None, None, None) is an inactivity timeout
                d = _start(channel, queue, method, properties, body, auto_ack=auto_ack,
                           base=None, kind="generator")
            yield item
    except GeneratorExit:
        raise
    except BaseException as exc:
        _finish(d, exc)
        d = None
        raise
    finally:
        _finish(d)
        close = getattr(inner, "close", None)
        if close is not None:
            close()


def _basic_get(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
               kwargs: dict[str, Any]) -> Any:
    previous = _last_get.get()
    if previous is not None and not previous.ended:
        _finish(previous)
    result = wrapped(*args, **kwargs)
    if _ins is None:
        return result
    try:
        method, properties, body = result
        if method is not None:
            d = _start(instance, str(_arg(args, kwargs, 0, "queue", "")), method, properties,
                       body, auto_ack=bool(_arg(args, kwargs, 1, "auto_ack", False)), base=None,
                       kind="get")
            if d is not None:
                _last_get.set(d)
    except Exception as exc:
        _ins.report(exc)
    return result


def _settle(method: str) -> Callable[..., Any]:
    # pika defaults: basic_nack and basic_reject both requeue.
    def wrapper(wrapped: Callable[..., Any], instance: Any, args: tuple[Any, ...],
                kwargs: dict[str, Any]) -> Any:
        result = wrapped(*args, **kwargs)
        registry = instance.__dict__.get(_REGISTRY) if _ins is not None else None
        if not registry:
            return result
        try:
            tag = _arg(args, kwargs, 0, "delivery_tag", 0)
            multiple = bool(_arg(args, kwargs, 1, "multiple", False)) if method != "reject" \
                else False
            if method == "ack":
                outcome = "ack"
            else:
                index = 2 if method == "nack" else 1
                outcome = "requeue" if _arg(args, kwargs, index, "requeue", True) else "reject"
            if multiple:
                settled = [d for t, d in list(registry.items()) if tag == 0 or t <= tag]
            else:
                settled = [registry[tag]] if tag in registry else []
            for d in settled:
                d.settle(outcome)
                if d.extra.get("kind") == "get":
                    _finish(d)
        except Exception as exc:
            _ins.report(exc)  # type: ignore[union-attr]
        return result

    return wrapper
