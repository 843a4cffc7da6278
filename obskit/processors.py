"""structlog processors that make up obskit's log pipeline.

Each is a plain ``(logger, method_name, event_dict) -> event_dict`` function (or a small class
with ``__call__``), usable on its own in any structlog configuration.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, MutableMapping
from typing import Any

from opentelemetry import trace

from obskit._context import current_extra, current_order, current_request

__all__ = [
    "DEFAULT_SCRUB_KEYS",
    "REDACTED",
    "Scrubber",
    "add_order_context",
    "add_service",
    "add_trace_context",
    "rename_level",
]

EventDict = MutableMapping[str, Any]

REDACTED = "[REDACTED]"

#: Key fragments whose values are secret. Matched against key names split into words, so
#: ``api_key``, ``X-Api-Key``, ``db_password`` and ``accessToken`` are scrubbed while ``monkey``,
#: ``tokenizer_name``, ``token_count`` and ``passage`` are not.
DEFAULT_SCRUB_KEYS: tuple[str, ...] = (
    "password", "passwd", "pwd", "secret", "token", "authorization", "auth", "api_key", "apikey",
    "cookie", "set_cookie", "session", "credential", "credentials", "private_key", "access_key",
    "client_secret", "refresh_token", "access_token", "credit_card", "card_number", "cvv", "ssn",
)
# Words that end a match even though they follow a secret word: `token_count` is a number.
_HARMLESS_SUFFIXES = frozenset({"count", "type", "name", "length", "len", "id_type", "expires",
                                "expiry", "ttl", "url"})

# Set by obskit's own processors or by logging itself; never user-provided secrets.
_TRUSTED = frozenset({"level", "logger", "_record", "_from_structlog", "order_id", "channel",
                      "request_id"})

_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")


def _words(key: str) -> list[str]:
    return [w for w in re.split(r"[^a-z0-9]+", _CAMEL.sub("_", key).lower()) if w]


class Scrubber:
    """Replace values of secret-looking keys, recursively in dicts and lists.

    Also scrubs ``key=value`` / ``key: value`` fragments inside strings (``Authorization: Bearer
    ...`` in an exception message, a DSN password) for the same keys.
    """

    def __init__(self, extra_keys: Iterable[str] = ()) -> None:
        keys = {k.lower().replace("-", "_") for k in (*DEFAULT_SCRUB_KEYS, *extra_keys)}
        # Multi-word keys (api_key) are matched as word sequences.
        self._single = {k for k in keys if "_" not in k}
        self._multi = [tuple(k.split("_")) for k in keys if "_" in k]
        alternatives = "|".join(sorted((re.escape(k).replace("_", "[-_ ]?") for k in keys),
                                       key=len, reverse=True))
        self._inline = re.compile(
            rf"(?i)\b((?:{alternatives}))(\s*[=:]\s*)(?:bearer\s+|basic\s+)?([^\s,;&'\"]+)"
        )
        self._dsn = re.compile(r"(?i)\b([a-z][a-z0-9+.-]*://[^:/@\s]+:)([^@\s]+)(@)")
        self._cache: dict[str, bool] = {}

    def is_secret(self, key: str) -> bool:
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        words = _words(key)
        result = False
        for i, w in enumerate(words):
            if w in self._single and not (set(words[i + 1:]) & _HARMLESS_SUFFIXES):
                result = True
                break
        if not result:
            for seq in self._multi:
                n = len(seq)
                for i in range(len(words) - n + 1):
                    rest = set(words[i + n:])
                    if tuple(words[i:i + n]) == seq and not (rest & _HARMLESS_SUFFIXES):
                        result = True
                        break
                if result:
                    break
        if len(self._cache) < 10_000:
            self._cache[key] = result
        return result

    def scrub_text(self, text: str) -> str:
        if "=" not in text and ":" not in text:
            return text
        text = self._inline.sub(lambda m: f"{m.group(1)}{m.group(2)}{REDACTED}", text)
        return self._dsn.sub(lambda m: f"{m.group(1)}{REDACTED}{m.group(3)}", text)

    def scrub(self, value: Any, depth: int = 0) -> Any:
        if depth > 8:
            return value
        if isinstance(value, str):
            return self.scrub_text(value)
        if isinstance(value, dict):
            return {k: (REDACTED if isinstance(k, str) and self.is_secret(k) and v not in (None, "")
                        else self.scrub(v, depth + 1)) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(self.scrub(v, depth + 1) for v in value)
        return value

    def __call__(self, logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        for key, value in event_dict.items():
            if value is None or key in _TRUSTED:
                continue
            if self.is_secret(key):
                event_dict[key] = REDACTED
            elif isinstance(value, str):
                if "=" in value or ":" in value:
                    event_dict[key] = self.scrub_text(value)
            elif isinstance(value, dict | list | tuple):
                event_dict[key] = self.scrub(value)
        return event_dict


def add_service(service: str) -> Any:
    def processor(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        return event_dict

    return processor


def add_trace_context(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """``trace_id`` (32 hex) and ``span_id`` (16 hex) of the current span, when there is one."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


def add_order_context(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """``order_id`` and ``channel`` from the order context (baggage), plus its local extras."""
    order_id, channel = current_order()
    if order_id is not None:
        event_dict.setdefault("order_id", order_id)
    if channel is not None:
        event_dict.setdefault("channel", channel)
    extra = current_extra()
    if extra:
        for k, v in extra.items():
            event_dict.setdefault(k, v)
    req = current_request()
    if req is not None:
        rid = req.get("request_id")
        if rid is not None:
            event_dict.setdefault("request_id", rid)
    return event_dict


def rename_level(logger: Any, method_name: str, event_dict: EventDict) -> EventDict:
    """Normalise stdlib's ``warn``/``exception`` method names into level names."""
    level = event_dict.get("level")
    if level == "warn":
        event_dict["level"] = "warning"
    elif level == "exception":
        event_dict["level"] = "error"
    return event_dict
