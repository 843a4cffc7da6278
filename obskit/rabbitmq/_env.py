"""Where the RabbitMQ layer finds its broker: the only module here that reads the environment.

Precedence everywhere: explicit argument > environment variable > default.
"""

from __future__ import annotations

import os
from urllib.parse import quote, unquote, urlsplit, urlunsplit

__all__ = [
    "DEFAULT_MANAGEMENT_URL",
    "DEFAULT_URL",
    "ENV_MANAGEMENT_URL",
    "ENV_URL",
    "amqp_url",
    "management_url",
    "vhost_of",
]

#: AMQP URL of the broker (publisher, consumer, ``obskit dlq``).
ENV_URL = "OBSKIT_RABBITMQ_URL"
#: Management API base URL with credentials (``obskit dlq list``, ``obskit audit``, depth poller).
ENV_MANAGEMENT_URL = "OBSKIT_RABBITMQ_MANAGEMENT_URL"
DEFAULT_URL = "amqp://guest:guest@localhost:5672/"
DEFAULT_MANAGEMENT_URL = "http://guest:guest@localhost:15672"


def vhost_of(url: str) -> str:
    """The vhost an AMQP URL names (``/`` for an empty path, as RabbitMQ does)."""
    path = urlsplit(url).path
    return unquote(path[1:]) if len(path) > 1 else "/"


def amqp_url(url: str | None = None, vhost: str | None = None) -> str:
    """The AMQP URL to use, with ``vhost`` (if given) replacing the URL's own."""
    resolved = url or os.environ.get(ENV_URL) or DEFAULT_URL
    if vhost is None:
        return resolved
    parts = urlsplit(resolved)
    return urlunsplit(parts._replace(path="/" + quote(vhost, safe="")))


def management_url(url: str | None = None) -> str:
    return (url or os.environ.get(ENV_MANAGEMENT_URL) or DEFAULT_MANAGEMENT_URL).rstrip("/")
