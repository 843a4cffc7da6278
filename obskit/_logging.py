"""Log pipeline: structlog and stdlib ``logging`` through the same processors and renderer.

    structlog call ─┐
                    ├─ shared processors (level, logger, timestamp, service, trace ids, order,
    stdlib record ──┘   scrub, [OTLP export]) ─ renderer (JSON or console) ─ stdout

The OTLP export is a processor, not a ``logging.Handler``: every line is exported exactly once
whichever API produced it. Any OTel ``LoggingHandler`` that someone else attached to the root
logger (the contrib logging auto-instrumentation does) is removed so nothing is exported twice.
"""

from __future__ import annotations

import json
import logging
import marshal
import sys
import time
from collections.abc import Callable, Mapping
from typing import Any, TextIO

import structlog
from opentelemetry.trace import get_current_span as _get_current_span

from obskit import _deferred, processors
from obskit._config import Settings

_LEVELS = {"DEBUG": 10, "INFO": 20, "WARNING": 30, "ERROR": 40, "CRITICAL": 50}
_SEVERITY = {"debug": 5, "info": 9, "warning": 13, "error": 17, "critical": 21}

# Attributes set by stdlib on every LogRecord; everything else came from `extra=`.
_RECORD_ATTRS = frozenset(vars(logging.makeLogRecord({})).keys()) | {"message", "asctime"}


# structlog's ProcessorFormatter puts the stdlib record and a flag in a foreign line's dict:
# the pipeline's own bookkeeping, not the line's fields.
_META = ("_record", "_from_structlog")
_NOT_ATTRIBUTES = frozenset(("event", "level", "timestamp", "trace_id", "span_id", *_META))
_EXACT = frozenset((str, int, float, bool, type(None)))


def fields_snapshot(event_dict: Any) -> bytes:
    """A log line's fields as they are now (``marshal``): what ``record_fields`` reads later, in
    the export process. A value marshal refuses, or that is not a plain value, becomes what
    ``record_fields`` would make of it now (``str()``, or its base type)."""
    if "_record" in event_dict:
        event_dict = {k: v for k, v in event_dict.items() if k not in _META}
    try:
        return marshal.dumps(event_dict)
    except ValueError:
        return marshal.dumps({k: _plain_value(v) for k, v in event_dict.items()})


def _plain_value(value: Any) -> Any:
    if type(value) in _EXACT:
        return value
    for base in (bool, int, float, str):
        if isinstance(value, base):
            return base(value)
    return str(value)


def record_fields(event_dict: Mapping[str, Any]) -> tuple[str, int, str, dict[str, Any]]:
    """What a log line's OTel log record holds: (severity text, severity number, body,
    attributes). Values other than str, bool, int and float become their ``str()``."""
    level = str(event_dict.get("level", "info"))
    attributes = {k: (v if isinstance(v, (str, bool, int, float)) else str(v))
                  for k, v in event_dict.items() if k not in _NOT_ATTRIBUTES and v is not None}
    return (level.upper(), _SEVERITY.get(level, 9), str(event_dict.get("event", "")),
            attributes)


class _OtlpExport:
    """Processor that emits the event as an OTel log record (body = event, rest = attributes).

    With the export process (``logger_provider`` has ``add_log``), the line's fields go there
    as they are at the call (``fields_snapshot``), with the ids and time the SDK's ``LogRecord``
    would read; the export process makes the record (``record_fields``, as here).
    """

    def __init__(self, logger_provider: Any) -> None:
        self._add = getattr(logger_provider, "add_log", None)
        self.takes_ids = self._add is not None
        self._logger = None if self._add is not None else logger_provider.get_logger("obskit")

    def __call__(self, logger: Any, method_name: str, event_dict: Any,
                 ids: tuple[int, int, int] | None = None) -> Any:
        """``ids``: the record's (trace id, span id, trace flags), when the caller has them
        (the access line, made after its request): used instead of the current span's by the
        export process's records; the SDK's need the context attached."""
        try:
            if str(event_dict.get("logger", "")).startswith("opentelemetry"):
                return event_dict  # exporter trouble is not exported through the exporter
            add = self._add
            if add is not None:
                # What the SDK's LogRecord reads: the current span's ids, observed now.
                if ids is None:
                    sc = _get_current_span().get_span_context()
                    ids = (sc.trace_id, sc.span_id, int(sc.trace_flags))
                add((time.time_ns(), *ids, fields_snapshot(event_dict)))
                return event_dict
            from opentelemetry._logs import LogRecord, SeverityNumber

            text, number, body, attributes = record_fields(event_dict)
            self._logger.emit(  # type: ignore[union-attr]
                LogRecord(
                    context=None,  # current context: carries the active span
                    severity_text=text,
                    severity_number=SeverityNumber(number),
                    body=body,
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


class _Writer:
    """The log output: a text stream (default: the current ``sys.stdout``), and the sink of
    ``obskit._deferred``.

    To a file or a pipe, lines wait in the deferred queue and reach the stream in batches, one
    joined ``write`` each, in order with the deferred work around them. A terminal, a stream that
    is not a file (``StringIO``, pytest's capture) or a closed writer gets every line at once.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        self._stream = stream
        self._checked: Any = None  # the stream the mode below was decided for
        self._immediate = True
        self._closed = False

    def _decide(self, stream: Any) -> bool:
        """Write each line at once (terminal, not a file) or in batches (file, pipe)."""
        self._checked = stream
        try:
            immediate = bool(stream.isatty())
            if not immediate:
                stream.fileno()
        except Exception:  # no file behind it: StringIO, a capture object
            immediate = True
        self._immediate = immediate
        return immediate

    def batched(self) -> bool:
        if self._closed:  # no batch may come after close()
            return False
        stream = self._stream or sys.stdout
        return not (self._immediate if stream is self._checked else self._decide(stream))

    def write(self, text: str) -> None:
        """Write ``text`` (whole lines) to the stream now."""
        stream = self._stream or sys.stdout
        stream.write(text)
        stream.flush()

    def line(self, line: str) -> None:
        if self.batched():
            _deferred.put(line)
        else:
            _deferred.write_now(self, line + "\n")

    # structlog calls these on the "logger" it got from the factory.
    def msg(self, message: str) -> None:
        self.line(message)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg

    def close(self) -> None:
        _deferred.flush()
        self._closed = True


class _WriterFactory:
    def __init__(self, writer: _Writer) -> None:
        self._writer = writer

    def __call__(self, *args: Any) -> _Writer:
        return self._writer


class _WriterHandler(logging.Handler):
    """stdlib handler that formats through obskit's pipeline and writes with the same writer."""

    def __init__(self, writer: _Writer) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.line(self.format(record))
        except Exception:
            self.handleError(record)


def _json_renderer() -> Callable[[Any, str, Any], str]:
    """orjson when available (~4x faster than json), with json as the fallback for odd values."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency; keep working without it
        orjson = None  # type: ignore[assignment]

    def render_json(logger: Any, method_name: str, event_dict: Any) -> str:
        if orjson is not None:
            try:
                return orjson.dumps(event_dict, default=str,
                                    option=orjson.OPT_NON_STR_KEYS).decode()
            except (TypeError, ValueError):  # e.g. an int beyond 64 bits
                pass
        return json.dumps(event_dict, default=str)

    return render_json


def _plain_json_renderer(fallback: Callable[[Any, str, Any], str]) -> Callable[[Any], str]:
    """orjson without ``default`` or options, for a line whose keys are str and values plain
    (str, int, float, bool, None): the same bytes as ``_json_renderer``'s for such a line, in
    ~35 % less time (options make orjson check every key and value). What it refuses (an int
    beyond 64 bits, a lone surrogate) goes through ``fallback``."""
    try:
        import orjson
    except ImportError:  # pragma: no cover - orjson is a dependency
        return lambda event_dict: fallback(None, "", event_dict)
    dumps = orjson.dumps

    def render_plain(event_dict: Any) -> str:
        try:
            return dumps(event_dict).decode()
        except (TypeError, ValueError):
            return fallback(None, "", event_dict)

    return render_plain


_ts_cache: tuple[int, str] = (0, "")


def timestamp(now: float | None = None) -> str:
    """``now`` (default: now), ISO 8601 UTC with microseconds; the seconds part is formatted
    once per second."""
    if now is None:
        now = time.time()
    sec = int(now)
    cached = _ts_cache
    prefix = cached[1] if cached[0] == sec else second_prefix(sec)
    # %-formatting: ~0.1 µs less than the f-string with int(); %d truncates as int() does.
    return "%s%06dZ" % (prefix, (now - sec) * 1_000_000)  # noqa: UP031


def second_prefix(sec: int) -> str:
    """``YYYY-MM-DDTHH:MM:SS.`` (UTC) of ``sec``, formatted once per second for every caller."""
    global _ts_cache
    cached = _ts_cache  # one read: another thread may replace it meanwhile
    if cached[0] != sec:
        cached = _ts_cache = (sec, time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(sec)))
    return cached[1]


def add_timestamp(logger: Any, method_name: str, event_dict: Any) -> Any:
    event_dict["timestamp"] = timestamp()
    return event_dict


# The fast path for lines obskit writes itself with known-safe fields (the access log): no
# structlog dispatch, no scrubbing of obskit's own values. Set by configure().
_fast_render: Callable[[str, str, dict[str, Any], float | None, tuple[int, int, int] | None,
                        bool], str | None] | None = None
_writer: _Writer | None = None
# Whether rendered lines are also exported as OTel log records: they read the current OTel
# context for their trace ids, so deferred work must attach the request's (read per record)...
exporting = False
# ...or, with the export process, hand them to ``render`` (``ids``).
export_takes_ids = False


def render(logger_name: str, level: str, line: dict[str, Any],
           at: float | None = None, ids: tuple[int, int, int] | None = None,
           plain: bool = False) -> str | None:
    """Render one line that obskit composed itself (the access log) through the pipeline's tail.

    ``line`` starts with its ``"event"`` key (the message) and must already hold the context the
    line needs (order, request id, ``trace_id``/``span_id``); level, logger, timestamp (``at``,
    a ``time.time()``, default now), service, OTLP export and the renderer are applied to it in
    place (the caller hands it over: one dict per line). No scrubbing: callers pass values obskit
    produced (never a query string or a header value other than the request id). None when the
    level is switched off or obskit's logging is not configured.

    ``ids``: the line's (trace id, span id, trace flags) for its OTLP record, when the export
    process takes them (``export_takes_ids``). ``plain``: every value of ``line`` is a str,
    int, float, bool or None (no handler's fields): the JSON is rendered by orjson's plain call,
    and the export process reads the record from the rendered JSON line itself.
    """
    fast = _fast_render
    return None if fast is None else fast(logger_name, level, line, at, ids, plain)


_stdlib_handler: logging.Handler | None = None


def configure(settings: Settings, logger_provider: Any | None,
              stream: TextIO | None = None) -> None:
    global _stdlib_handler

    fmt = settings.log_format
    if fmt == "auto":
        out = stream or sys.stdout
        fmt = "console" if getattr(out, "isatty", lambda: False)() else "json"
    renderer: Any
    if fmt == "console":
        renderer = structlog.dev.ConsoleRenderer(colors=True)
    else:
        renderer = _json_renderer()

    shared: list[Any] = [
        structlog.stdlib.add_log_level,
        processors.rename_level,
        _add_logger_name,
        structlog.processors.format_exc_info,
        processors.add_order_context,
        # Scrub what callers passed, before adding the fields obskit itself produces (timestamp,
        # ids): they cannot hold secrets and scrubbing them is a third of the cost of a line.
        processors.Scrubber(settings.scrub_keys),
        add_timestamp,
        processors.add_service(settings.service_name),
        processors.add_trace_context,
    ]
    export: Any = None
    if logger_provider is not None:
        export = _OtlpExport(logger_provider)
        shared.append(export)

    global _writer, _fast_render, exporting, export_takes_ids
    if _writer is not None:
        _writer.close()
    writer = _writer = _Writer(stream)
    _deferred.set_sink(writer)
    level = _LEVELS[settings.log_level]

    service = settings.service_name

    enabled = frozenset(name.lower() for name, no in _LEVELS.items() if no >= level)

    # With the export process, a plain line's JSON is its record's fields too: handed to it as
    # (observed ns, trace id, span id, trace flags, the JSON text) without a second
    # serialisation (``fields_snapshot``: ~1 µs per access line).
    add_rendered = export._add if export is not None and fmt == "json" else None
    render_plain = _plain_json_renderer(renderer) if fmt == "json" else None

    def fast_render(logger_name: str, method: str, event_dict: dict[str, Any],
                    at: float | None, ids: tuple[int, int, int] | None = None,
                    plain: bool = False) -> str | None:
        # The access line of every request: the caller's dict, no processor dispatch.
        if method not in enabled:
            return None
        event_dict["level"] = method
        event_dict["logger"] = logger_name
        event_dict["timestamp"] = timestamp(at)
        event_dict["service"] = service
        if plain and ids is not None and add_rendered is not None and render_plain is not None:
            text: str = render_plain(event_dict)
            try:
                add_rendered((time.time_ns(), *ids, text))
            except Exception as exc:  # never lose the log line because export failed
                from obskit._internal import internal_error

                internal_error("logs.export", exc)
            return text
        if export is not None:
            export(None, method, event_dict, ids)
        if plain and render_plain is not None:
            return render_plain(event_dict)
        return renderer(None, method, event_dict)  # type: ignore[no-any-return]

    _fast_render = fast_render
    exporting = export is not None
    export_takes_ids = export is not None and export.takes_ids
    structlog.configure(
        processors=[structlog.contextvars.merge_contextvars, *shared, renderer],
        wrapper_class=structlog.make_filtering_bound_logger(level),
        logger_factory=_WriterFactory(writer),
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
        handler = _WriterHandler(writer)
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
    global _stdlib_handler, _fast_render, _writer, exporting, export_takes_ids
    _fast_render = None
    exporting = export_takes_ids = False
    if _writer is not None:
        _writer.close()
        _writer = None
        _deferred.set_sink(None)
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


# structlog.get_logger() reserves the keyword `logger`, so the name is bound under this key
# (and reads naturally where obskit.init() never ran and structlog prints its defaults).
_NAME_KEY = "logger_name"


def _add_logger_name(logger: Any, method_name: str, event_dict: Any) -> Any:
    record = event_dict.get("_record")
    if record is not None:
        event_dict["logger"] = record.name
    else:
        name = event_dict.pop(_NAME_KEY, None)
        event_dict["logger"] = name or event_dict.get("logger") or "app"
    return event_dict
