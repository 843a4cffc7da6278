"""Header names obskit writes on messages. ``obskit dlq show`` and on-call runbooks read them."""

from __future__ import annotations

PREFIX = "x-obskit-"
#: Failed attempts so far (0 on a fresh message; reset to 0 by ``obskit dlq replay``).
ATTEMPT = "x-obskit-attempt"
#: Qualified exception class of the last failure, e.g. ``builtins.ValueError``.
ERROR_TYPE = "x-obskit-error-type"
ERROR_MESSAGE = "x-obskit-error-message"
#: Last lines of the traceback of the last failure.
ERROR_STACK = "x-obskit-error-stack"
#: ``permanent`` (dead-lettered at once) or ``exhausted`` (retries used up).
DEAD_LETTER_REASON = "x-obskit-dead-letter-reason"
FIRST_FAILURE = "x-obskit-first-failure"  # ISO 8601 UTC
LAST_FAILURE = "x-obskit-last-failure"
DEAD_LETTERED_AT = "x-obskit-dead-lettered-at"
#: Service (OTEL_SERVICE_NAME) that gave up on the message.
SERVICE = "x-obskit-service"
#: The queue the message failed in: where ``obskit dlq replay`` sends it back.
ORIGINAL_QUEUE = "x-obskit-original-queue"
ORIGINAL_EXCHANGE = "x-obskit-original-exchange"
ORIGINAL_ROUTING_KEY = "x-obskit-original-routing-key"
#: Consecutive retries because a dependency was down (``DependencyUnavailable``); not attempts.
UNAVAILABLE = "x-obskit-unavailable"
REPLAY_COUNT = "x-obskit-replay-count"
REPLAYED_AT = "x-obskit-replayed-at"

#: Set by the broker; stale on a message we publish again ourselves.
BROKER_OWNED = ("x-death", "x-first-death-exchange", "x-first-death-queue",
                "x-first-death-reason", "x-last-death-exchange", "x-last-death-queue",
                "x-last-death-reason", "x-delivery-count")
