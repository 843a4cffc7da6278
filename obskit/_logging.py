"""Log pipeline: structlog and stdlib ``logging`` through the same processors and renderer.

    structlog call ─┐
                    ├─ shared processors (level, logger, timestamp, service, trace ids, order,
    stdlib record ──┘   scrub, [OTLP export]) ─ renderer (JSON or console) ─ stdout

The OTLP export is a processor, not a ``logging.Handler``: every line is exported exactly once
whichever API produced it. Any OTel ``LoggingHandler`` that someone else attached to the root
logger (the contrib logging auto-instrumentation does) is removed so nothing is exported twice.
"""

from __future__ import annotations

import logging
import sys
import threading
from typing import Any, TextIO

import structlog
from obskit import processors
from obskit._config import Settings

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_SEVERITY = {"debug": 5, "info": 9, "warning": 13, "error": 17, "critical": 21}

# Attributes set by stdlib on every LogRecord; everything else came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


class _OtlpExport:
    """Processor that emits the event as an OTel log record (body = event, rest = attributes)."""

    def __init__(self, logger_provider: Any) -> None:
        self._logger = logger_provider.get_logger("obskit")

    def __call__(self, logger: Any, method_name: str, event_dict: Any) -> Any:
        try:
            from opentelemetry._logs import LogRecord, SeverityNumber

            level = str(event_dict.get("level", "info"))
            attributes = {
                k: (v if isinstance(v, str | bool | int | float) else str(v))
                for k, v in event_dict.items()
                if k not in ("event", "level", "timestamp", "trace_id", "span_id") and v is not None
            }
            if str(event_dict.get("logger", "")).startswith("opentelemetry"):
                return event_dict  # exporter trouble is not exported through the exporter
            self._logger.emit(
                LogRecord(
                    context=None,  # current context: carries the active span
                    severity_text=level.upper(),
                    severity_number=SeverityNumber(_SEVERITY.get(level, 9)),
                    body=str(event_dict.get("event", "")),
                    attributes=attributes,
                )
            )
        except Exception as exc:  # never lose the log line because export failed
            from obskit._internal import internal_error

            internal_error("logs.export", exc)
        return event_dict


def _add_stdlib_extras(logger: Any, method_name: str, event_dict: Any) -> Any:
    record = event_dict.get("_record")
    if record is not None:
        for k, v in record.__dict__.items():
            if k not in _RECORD_ATTRS and not k.startswith("_") and k not in event_dict:
                event_dict[k] = v
    return event_dict


def _drop_color_message(logger: Any, method_name: str, event_dict: Any) -> Any:
    # uvicorn adds a pre-coloured copy of the message.
    event_dict.pop("color_message", None)
    return event_dict


class _LockedStdout:
    """stdout writer that never interleaves lines from threads and survives a closed stream."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._lock = threading.Lock()

    def msg(self, message: str) -> None:
        stream = self._stream or sys.stdout
        try:
            with self._lock:
                stream.write(message + "\n")
                stream.flush()
        except (ValueError, OSError):
            pass

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


class _StdoutLoggerFactory:
    def __init__(self, stream: TextIO | None = None) -> None:
        self._logger = _LockedStdout(stream)

    def __call__(self, *args: Any) -> _LockedStdout:
        return self._logger


_stdlib_handler: logging.Handler | None = None


def configure(settings: Settings, logger_provider: Any | None, stream: TextIO | None = None) -> None:
    global _stdlib_handler

    fmt = settings.log_format
    if fmt == "auto":
        out = stream or sys.stdout
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    else:
        renderer = structlog.processors.JSONRenderer(default=str)

    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        processors.rename_level,
        _add_logger_name,
        structlog.processors.format_exc_info,
        processors.add_order_context,
        # Scrub what callers passed, before adding the fields obskit itself produces (timestamp,
        # ids): they cannot hold secrets and scrubbing them is a third of the cost of a line.
        processors.Scrubber(settings.scrub_keys),
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        processors.add_service(settings.service_name),
        processors.add_trace_context,
    ]
    if logger_provider is not None:
        shared.append(_OtlpExport(logger_provider))

    level = _LEVELS[settings.log_level]
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_StdoutLoggerFactory(stream),
        context_class=dict,
        # Not cached: a logger first used before init() (or before a re-init in tests) must
        # not stay pinned to the old pipeline. Costs one bind per call (~2 µs).
        cache_logger_on_first_use=False,
    )

    root = logging.getLogger()
    _remove_otel_handlers(root)
    if settings.instrument_logging:
        formatter = structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[_add_stdlib_extras, _drop_color_message, *shared],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
        handler = logging.StreamHandler(stream or sys.stdout)
        handler.setFormatter(formatter)
        handler.set_name("obskit")
        if _stdlib_handler is not None:
            root.removeHandler(_stdlib_handler)
        _adopt_uvicorn_loggers()
        _hook_uvicorn_logging_config()
        for h in list(root.handlers):
            if isinstance(h, logging.StreamHandler) and getattr(h, "stream", None) in (
                sys.stdout, sys.stderr
            ):
                root.removeHandler(h)
        root.addHandler(handler)
        root.setLevel(level)
        _stdlib_handler = handler
    # A dead collector makes the exporters log on every retry; one line per message kind per
    # minute says what is wrong without flooding the service's own logs.
    otel_logger = logging.getLogger("opentelemetry")
    otel_logger.setLevel(max(level, logging.WARNING))
    if not any(isinstance(f, _RateLimit) for f in otel_logger.filters):
        otel_logger.addFilter(_RateLimit(60.0))


class _RateLimit(logging.Filter):
    """Let each (logger, message template) through at most once per ``interval`` seconds."""

    def __init__(self, interval: float) -> None:
        super().__init__()
        self._interval = interval
        self._last: dict[tuple[str, str], float] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        import time

        key = (record.name, str(record.msg)[:40])
        now = time.monotonic()
        last = self._last.get(key)
        if last is not None and now - last < self._interval:
            return False
        if len(self._last) > 1000:
            self._last.clear()
        self._last[key] = now
        return True


# When obskit's ASGI middleware writes the access log (one `obskit.access` line per request),
# uvicorn's own access line is switched off rather than printed twice.
_quiet_uvicorn_access = False


def quiet_uvicorn_access(quiet: bool = True) -> None:
    global _quiet_uvicorn_access
    _quiet_uvicorn_access = quiet
    _adopt_uvicorn_loggers()


def _adopt_uvicorn_loggers() -> None:
    """Route uvicorn's loggers through our pipeline instead of its own handlers.

    uvicorn checks ``access_logger.hasHandlers()`` before formatting an access line, so a
    handler-less, non-propagating ``uvicorn.access`` also saves that work.
    """
    if _stdlib_handler is None:
        return
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        lib = logging.getLogger(name)
        lib.handlers.clear()
        lib.propagate = not (name == "uvicorn.access" and _quiet_uvicorn_access)


_uvicorn_hooked = False


def _hook_uvicorn_logging_config() -> None:
    """``uvicorn.run(app)`` after ``init()`` re-applies uvicorn's dictConfig: adopt again after."""
    global _uvicorn_hooked
    if _uvicorn_hooked:
        return
    _uvicorn_hooked = True
    import wrapt

    def after(wrapped: Any, instance: Any, args: Any, kwargs: Any) -> Any:
        result = wrapped(*args, **kwargs)
        try:
            _adopt_uvicorn_loggers()
        except Exception:  # noqa: S110 - never break server start-up over logging
            pass
        return result

    def hook(module: Any) -> None:
        wrapt.wrap_function_wrapper(module, "Config.configure_logging", after)

    wrapt.register_post_import_hook(hook, "uvicorn.config")


def _remove_otel_handlers(root: logging.Logger) -> None:
    try:
        from opentelemetry.sdk._logs import LoggingHandler
    except ImportError:  # pragma: no cover
        return
    for h in list(root.handlers):
        if isinstance(h, LoggingHandler):
            root.removeHandler(h)


def reset() -> None:
    global _stdlib_handler
    if _stdlib_handler is not None:
        logging.getLogger().removeHandler(_stdlib_handler)
        _stdlib_handler = None
    structlog.reset_defaults()


def get_logger(name: str | None = None, **initial_values: Any) -> Any:
    """A structlog logger; ``name`` (default: the caller's module) is ``logger`` on every line."""
    if name is None:
        name = sys._getframe(1).f_globals.get("__name__", "app")
    # A lazy proxy: a logger created at import time, before init(), still uses the pipeline
    # that init() configures later.
    return structlog.get_logger(**{_NAME_KEY: name}, **initial_values)


# structlog.get_logger() reserves the keyword `logger`, so the name is bound under this key.
_NAME_KEY = "_obskit_logger"


def _add_logger_name(logger: Any, method_name: str, event_dict: Any) -> Any:
    record = event_dict.get("_record")
    if record is not None:
        event_dict["logger"] = record.name
    else:
        event_dict["logger"] = event_dict.pop(_NAME_KEY, None) or "app"
    return event_dict
