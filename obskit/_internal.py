"""Never crash the host: the one place internal errors are reported.

"Your code should still be running fine, just with less telemetry" (the logfire contract). Under
pytest with ``OBSKIT_RAISE_INTERNAL_ERRORS=1`` errors are re-raised so bugs surface in our tests.
"""

from __future__ import annotations

import logging
import os

_log = logging.getLogger("obskit")


def internal_error(component: str, exc: BaseException) -> None:
    if os.environ.get("OBSKIT_RAISE_INTERNAL_ERRORS") == "1":
        raise exc
    try:
        from obskit.metrics import catalogue

        catalogue().internal_errors.labels(component).inc()
        _log.warning("obskit internal error in %s: %s: %s", component, type(exc).__name__, exc,
                     exc_info=exc)
    except Exception:  # pragma: no cover - last line of defence
        pass
