"""Never crash the host: the one place internal errors are reported.

"Your code should still be running fine, just with less telemetry" (the logfire contract). Under
pytest with ``OBSKIT_RAISE_INTERNAL_ERRORS=1`` errors are re-raised so bugs surface in our tests.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable

_log = logging.getLogger("obskit")
#: Counts an error by component (``obskit_internal_errors_total``); set by ``obskit.metrics``,
#: which imports this module (so this one imports nothing of obskit's).
_count: Callable[[str], None] | None = None


def count_errors_with(count: Callable[[str], None]) -> None:
    global _count
    _count = count


def internal_error(component: str, exc: BaseException) -> None:
    if os.environ.get("OBSKIT_RAISE_INTERNAL_ERRORS") == "1":
        raise exc
    try:
        if _count is not None:
            _count(component)
        _log.warning("obskit internal error in %s: %s: %s", component, type(exc).__name__, exc,
                     exc_info=exc)
    except Exception:  # pragma: no cover - last line of defence
        pass
