"""Exceptions of ``obskit.rabbitmq``.

The tree::

    RabbitMQError
    ├── TopologyError
    │   └── TopologyConflictError     an existing queue/exchange was declared with other arguments
    └── PublishError                  the message is NOT safely in a queue; the caller must act
        ├── UnroutableError           mandatory publish returned: no queue bound for the key
        ├── PublishNackedError        the broker nacked it (e.g. a queue at its length limit)
        └── PublishConnectionError    no confirm after bounded reconnects (the message MAY have
                                      arrived: publish again with the same message id)

    ProcessingError                   raised by *handlers* to steer the consumer
    ├── PermanentError                never retry: dead-letter at once (validation, bad data)
    │   └── MessageParseError         the body did not parse
    └── RetryableError                retry with backoff (the default for any other exception)
        └── DependencyUnavailable     a dependency is down: retry with backoff for as long as
                                      it lasts, without spending an attempt
"""

from __future__ import annotations

__all__ = [
    "MessageParseError",
    "PermanentError",
    "DependencyUnavailable",
    "ProcessingError",
    "PublishConnectionError",
    "PublishError",
    "PublishNackedError",
    "RabbitMQError",
    "RetryableError",
    "TopologyConflictError",
    "TopologyError",
    "UnroutableError",
]


class RabbitMQError(Exception):
    """Base of the errors obskit.rabbitmq raises to its caller."""


class TopologyError(RabbitMQError):
    """The topology could not be declared."""


class TopologyConflictError(TopologyError):
    """An existing queue or exchange differs from the declared one.

    RabbitMQ never changes an existing queue's arguments; it closes the channel with
    PRECONDITION_FAILED. ``argument`` names what differs (``x-queue-type``, ``durable``, ...).
    """

    def __init__(self, kind: str, name: str, vhost: str | None, argument: str | None,
                 declared: str | None, existing: str | None, detail: str) -> None:
        self.kind = kind
        self.name = name
        self.vhost = vhost
        self.argument = argument
        self.declared = declared
        self.existing = existing
        self.detail = detail
        where = f" in vhost {vhost!r}" if vhost else ""
        if argument:
            has = (f"without {argument}" if existing in (None, "none")
                   else f"with {argument}={existing!r}")
            msg = (f"{kind} {name!r}{where} already exists {has}; the "
                   f"declared topology wants {argument}={declared!r}. RabbitMQ cannot change it "
                   f"in place: drain and delete the {kind} (or move it with a policy/new name), "
                   f"then declare again.")
        else:
            msg = f"{kind} {name!r}{where} conflicts with the declared topology: {detail}"
        super().__init__(msg)


class PublishError(RabbitMQError):
    """A publish did not end with a broker confirm of a routed message."""

    def __init__(self, message: str, *, exchange: str, routing_key: str,
                 message_id: str | None) -> None:
        self.exchange = exchange
        self.routing_key = routing_key
        self.message_id = message_id
        super().__init__(message)


class UnroutableError(PublishError):
    """The broker returned a mandatory message: no queue is bound for this routing key."""


class PublishNackedError(PublishError):
    """The broker refused the message (basic.nack), e.g. ``overflow=reject-publish``."""


class PublishConnectionError(PublishError):
    """No confirm after the bounded reconnect attempts; delivery is unknown."""


class ProcessingError(Exception):
    """Raise a subclass from a handler to choose retry or dead-letter explicitly."""


class PermanentError(ProcessingError):
    """Retrying cannot help (a validation error, bad data): dead-letter at once."""


class MessageParseError(PermanentError):
    """The message body could not be parsed."""


class RetryableError(ProcessingError):
    """A transient failure: retry with backoff."""


class DependencyUnavailable(RetryableError):
    """A dependency (database, downstream service) is unreachable, not the message at fault.

    The message goes through the retry tiers like any retry, but the attempt is not counted:
    an outage longer than the retries sends nothing to the DLQ. Each consecutive unavailable
    retry waits the next tier's delay (``x-obskit-unavailable`` counts them), up to the longest.
    Raise it only for errors that say the dependency is down (connection refused, pool timeout),
    never for errors a retry cannot fix, or the message loops until someone notices.
    """
