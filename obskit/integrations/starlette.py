"""Starlette: obskit's ASGI middleware on every ``Starlette`` app (see ``_asgi.py``).

``Starlette.build_middleware_stack`` is wrapped at class level, so every app gets the middleware
as its outermost layer when it builds its stack on the first request — whether it was created
before or after ``obskit.init()``. (FastAPI overrides that method; ``integrations.fastapi`` wraps
its own.) An app that already served requests before ``init()`` is not re-wrapped; call
``obskit.integrations.fastapi.instrument_app(app)`` for it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import wrapt
from opentelemetry.instrumentation.utils import unwrap

from obskit._internal import internal_error
from obskit.integrations import _http
from obskit.integrations._asgi import ObskitASGIMiddleware

if TYPE_CHECKING:
    from obskit._init import Handle

LIBRARIES = ("starlette",)

_patched = False


def wrap_build_middleware_stack(wrapped: Any, instance: Any, args: Any, kwargs: Any,
                                explicit: bool = False) -> Any:
    stack = wrapped(*args, **kwargs)
    try:
        if isinstance(stack, ObskitASGIMiddleware):
            stack.explicit = stack.explicit or explicit
        else:
            return ObskitASGIMiddleware(stack, instance, explicit)
    except Exception as exc:
        internal_error("starlette.build_middleware_stack", exc)
    return stack


def instrument(handle: Handle) -> None:
    global _patched
    _http.configure(handle, "starlette")
    if _patched:
        return
    from starlette.applications import Starlette

    wrapt.wrap_function_wrapper(Starlette, "build_middleware_stack", wrap_build_middleware_stack)
    _patched = True


def uninstrument() -> None:
    global _patched
    _http.release("starlette")
    if not _patched:
        return
    from starlette.applications import Starlette

    unwrap(Starlette, "build_middleware_stack")
    _patched = False

