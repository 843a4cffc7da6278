"""The one configuration table.

Every option has one name (the ``init()`` keyword), one environment variable, one default and one
docstring. Precedence: keyword argument > environment variable > default. This is the only module
that reads the environment for configuration; docs/configuration.md is generated from ``OPTIONS``
(``python -m obskit._config``) so code and docs cannot drift.
"""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

__all__ = ["OPTIONS", "Option", "Settings", "resolve"]


def _bool(value: str | bool) -> bool:
    if isinstance(value, bool):
        return value
    v = value.strip().lower()
    if v in ("1", "true", "yes", "on"):
        return True
    if v in ("0", "false", "no", "off", ""):
        return False
    raise ValueError(f"expected true/false, got {value!r}")


def _opt_int(value: str | int | None) -> int | None:
    if value is None or value == "":
        return None
    port = int(value)
    if not 0 <= port <= 65535:
        raise ValueError(f"expected a port 0..65535, got {value!r}")
    return port


def _csv(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if value is None:
        return ()
    if isinstance(value, str):
        items = value.split(",")
    else:
        items = list(value)
    return tuple(i.strip().lower().replace("-", "_") for i in items if i and i.strip())


def _kv(value: str | Mapping[str, str] | None) -> dict[str, str]:
    """``k1=v1,k2=v2`` (W3C baggage-like, as OTEL_RESOURCE_ATTRIBUTES and _HEADERS use)."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {str(k): str(v) for k, v in value.items()}
    from urllib.parse import unquote

    out: dict[str, str] = {}
    for part in value.split(","):
        if not part.strip():
            continue
        if "=" not in part:
            raise ValueError(f"expected key=value pairs separated by commas, got {part!r}")
        k, v = part.split("=", 1)
        out[unquote(k.strip())] = unquote(v.strip())
    return out


def _choice(*choices: str) -> Callable[[str], str]:
    def parse(value: str) -> str:
        v = str(value).strip().lower()
        if v not in choices:
            raise ValueError(f"expected one of {', '.join(choices)}; got {value!r}")
        return v

    return parse


def _str(value: Any) -> str:
    return str(value)


def _opt_str(value: Any) -> str | None:
    return None if value in (None, "") else str(value)


def _opt_float(value: Any) -> float | None:
    if value in (None, ""):
        return None
    return float(value)


def _megabytes(value: Any) -> float:
    size = float(value)
    if size < 0:
        raise ValueError(f"expected megabytes >= 0 (0 = no limit), got {value!r}")
    return size


def safe_url(url: str) -> str:
    """``url`` with its password masked, for messages and logs."""
    try:
        parts = urlsplit(url)
        if parts.password:
            host = parts.hostname or ""
            if parts.port:
                host += f":{parts.port}"
            user = parts.username or ""
            return urlunsplit(parts._replace(netloc=f"{user}:****@{host}"))
    except ValueError:
        return "<unparseable url>"
    return url


def _redis_url(value: Any) -> str | None:
    if value in (None, "") or str(value).strip().lower() == "off":
        return None
    v = str(value).strip()
    if not v.startswith(("redis://", "rediss://", "unix://")):
        raise ValueError("expected a Redis URL such as redis://127.0.0.1:6379/0 (or rediss://, "
                         f"unix://), or off; got {v!r}")
    return v


def _duration(value: Any) -> float:
    from obskit.journey._deadlines import parse_duration

    return parse_duration(value)


def _positive_int(value: Any) -> int:
    n = int(value)
    if n <= 0:
        raise ValueError(f"expected a positive integer, got {value!r}")
    return n


def _deadlines(value: Any) -> Any:
    from obskit.journey._deadlines import Deadlines

    return Deadlines.parse(value or None)


def _level(value: Any) -> str:
    v = str(value).strip().upper()
    if v not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise ValueError(f"expected DEBUG, INFO, WARNING, ERROR or CRITICAL; got {value!r}")
    return v


_SAMPLERS = (
    "always_on",
    "always_off",
    "traceidratio",
    "parentbased_always_on",
    "parentbased_always_off",
    "parentbased_traceidratio",
)


def _fast_paths(value: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    from obskit._fastpaths import FAST_PATHS

    names = _csv(value)
    known = {p.name for p in FAST_PATHS}
    unknown = [n for n in names if n != "all" and n not in known]
    if unknown:
        raise ValueError(f"unknown fast path {unknown[0]!r}; known: all, {', '.join(known)}")
    return names


def _default_service_name() -> str:
    name = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else ""
    return name.removesuffix(".py") or "unknown_service"


@dataclass(frozen=True)
class Option:
    name: str
    env: str
    default: Any
    parse: Callable[[Any], Any]
    doc: str
    secret: bool = False
    # How `obskit doctor` shows a set value (a URL without its password); default: as it is.
    show: Callable[[Any], Any] | None = None
    # Extra env vars read when ``env`` is unset (e.g. the OTel spelling of an obskit option).
    env_aliases: tuple[str, ...] = ()


OPTIONS: tuple[Option, ...] = (
    Option("service_name", "OTEL_SERVICE_NAME", None, _opt_str,
           "`service.name` on every span, log line and metric target. Default: the program name."),
    Option("service_version", "OBSKIT_SERVICE_VERSION", "0.0.0", _str,
           "`service.version` resource attribute."),
    Option("environment", "OBSKIT_ENVIRONMENT", "development", _str,
           "`deployment.environment` resource attribute (`production`, `staging`, ...)."),
    Option("resource_attributes", "OTEL_RESOURCE_ATTRIBUTES", None, _kv,
           "Extra resource attributes, `k1=v1,k2=v2`. Explicit options win over these."),
    Option("otlp_endpoint", "OTEL_EXPORTER_OTLP_ENDPOINT", None, _opt_str,
           "OTLP collector, e.g. `http://localhost:4317` (grpc) or `http://localhost:4318` "
           "(http/protobuf). Unset: spans go to `spans_file` and logs only to stdout."),
    Option("otlp_protocol", "OTEL_EXPORTER_OTLP_PROTOCOL", "grpc",
           _choice("grpc", "http/protobuf"), "`grpc` or `http/protobuf`."),
    Option("otlp_headers", "OTEL_EXPORTER_OTLP_HEADERS", None, _kv,
           "Headers sent with every export, `k1=v1,k2=v2` (e.g. an auth token). Masked in "
           "`obskit doctor`.", secret=True),
    Option("otlp_timeout", "OTEL_EXPORTER_OTLP_TIMEOUT", 10.0, lambda v: float(v) / 1000
           if isinstance(v, str) else float(v),
           "Export timeout. The env var is in milliseconds (OTel spec), the keyword in seconds."),
    Option("traces_sampler", "OTEL_TRACES_SAMPLER", "parentbased_always_on", _choice(*_SAMPLERS),
           "Head sampler. `parentbased_*` follow the caller's decision so a trace is never cut "
           "in half across services."),
    Option("traces_sampler_arg", "OTEL_TRACES_SAMPLER_ARG", None, _opt_float,
           "Ratio for the `*traceidratio` samplers, 0.0..1.0 (default 1.0)."),
    Option("sdk_disabled", "OTEL_SDK_DISABLED", False, _bool,
           "`true`: no spans and no OTLP export; logs and metrics keep working."),
    Option("spans_file", "OBSKIT_SPANS_FILE", None, _opt_str,
           "Where spans go when no OTLP endpoint is set: a JSON-lines file, one span per line. "
           "`-` means stderr, `off` disables it. "
           "Default: `<tmpdir>/obskit/<service>.spans.jsonl`."),
    Option("spans_file_max_mb", "OBSKIT_SPANS_FILE_MAX_MB", 100.0, _megabytes,
           "Size in MB at which `spans_file` is rotated to `<file>.1` (replacing the previous "
           "`.1`), so it takes at most twice this on disk. `0`: never rotated."),
    Option("metrics_port", "OBSKIT_METRICS_PORT", None, _opt_int,
           "Serve Prometheus `/metrics` on this port (in a daemon thread). Unset: no server; "
           "mount `obskit.metrics_asgi_app()` / `metrics_wsgi_app()` instead."),
    Option("metrics_addr", "OBSKIT_METRICS_ADDR", "0.0.0.0", _str,
           "Bind address of the metrics server."),
    Option("disabled_instrumentations", "OBSKIT_DISABLED_INSTRUMENTATIONS", (), _csv,
           "Comma-separated integrations to skip, e.g. `redis,pika` (names as in "
           "`obskit doctor`). `OTEL_PYTHON_DISABLED_INSTRUMENTATIONS` is honoured too.",
           env_aliases=("OTEL_PYTHON_DISABLED_INSTRUMENTATIONS",)),
    Option("disable_fast_paths", "OBSKIT_DISABLE_FAST_PATHS", (), _fast_paths,
           "Comma-separated fast paths to switch off, or `all` (names as in `obskit doctor`): "
           "obskit then uses the libraries' public, slower API, e.g. to rule obskit out while "
           "chasing a bug. Environment only, process-wide: some fast paths decide when their "
           "module is imported, before `init()` runs (docs/explanation/fast-paths.md)."),
    Option("log_level", "OBSKIT_LOG_LEVEL", "INFO", _level, "Minimum level of emitted logs."),
    Option("log_format", "OBSKIT_LOG_FORMAT", "auto", _choice("auto", "json", "console"),
           "`json` lines, readable `console`, or `auto` (console on a TTY, JSON otherwise)."),
    Option("export_logs", "OBSKIT_EXPORT_LOGS", True, _bool,
           "Also export log records over OTLP when an endpoint is set (exactly once)."),
    Option("export_process", "OBSKIT_EXPORT_PROCESS", True, _bool,
           "With an OTLP endpoint, encode and send spans and log records in a helper process "
           "(`python -m obskit._export_process`, started by `init()`, ending with the "
           "service) instead of the service's own threads: the SDK's encoding is pure Python "
           "and would share the GIL with your requests "
           "(docs/explanation/export-process.md). `false`: the SDK's exporters in-process."),
    Option("scrub_keys", "OBSKIT_SCRUB_KEYS", (), _csv,
           "Extra key names whose values are replaced by `[REDACTED]` in logs and span "
           "attributes, in addition to the built-in list (password, secret, token, ...)."),
    Option("request_id", "OBSKIT_REQUEST_ID", True, _bool,
           "Per HTTP request, take `X-Request-ID` (or generate one), return it in the response "
           "and put it on the span, the access-log line and every log line of the request."),
    Option("server_timing", "OBSKIT_SERVER_TIMING", False, _bool,
           "Add `Server-Timing: app;dur=<ms>` to every HTTP response: the server's time until "
           "the response started, shown by browser devtools and readable by clients and load "
           "tests. Off by default: a header per response costs a little."),
    Option("instrument_logging", "OBSKIT_INSTRUMENT_LOGGING", True, _bool,
           "Route standard-library `logging` records through obskit's pipeline."),
    Option("journey_url", "OBSKIT_JOURNEY_URL", None, _redis_url,
           "Redis URL of the order journey store, e.g. `redis://127.0.0.1:6379/0`: every "
           "`record_stage()` hop is kept there, so `obskit orders show ID` tells where an "
           "order is and the sweeper counts stuck and lost orders. Unset or `off`: no journeys.",
           show=safe_url),
    Option("journey_prefix", "OBSKIT_JOURNEY_PREFIX", "obskit", _str,
           "Prefix of the journey store's Redis keys (`<prefix>:{journey}:...`). Services that "
           "share a pipeline share a prefix."),
    Option("journey_sweep", "OBSKIT_JOURNEY_SWEEP", True, _bool,
           "Run a sweeper in this process (one of all processes is active at a time) that "
           "publishes the `obskit_orders_in_stage/_stuck/_lost` gauges."),
    Option("journey_sweep_interval", "OBSKIT_JOURNEY_SWEEP_INTERVAL", 10.0, _duration,
           "Seconds between sweeps (`10s`, `1m`); a dead sweeper is replaced after three."),
    Option("stage_deadlines", "OBSKIT_STAGE_DEADLINES", None, _deadlines,
           "Overrides of the stage deadline table, `STAGE[@CHANNEL]=STUCK[/LOST],...`, e.g. "
           "`published=1m/10m,printing@b2b=2h/6h,*=30s/5m` (docs/journeys.md).",
           show=str),
    Option("journey_retention", "OBSKIT_JOURNEY_RETENTION", 7 * 86400.0, _duration,
           "How long an unfinished order's journey is kept (`7d`); past it the order is "
           "forgotten and counted in `obskit_journey_orders_forgotten_total`."),
    Option("journey_finished_ttl", "OBSKIT_JOURNEY_FINISHED_TTL", 86400.0, _duration,
           "How long a finished (done, failed, dead-lettered) order's journey is kept (`24h`)."),
    Option("journey_max_orders", "OBSKIT_JOURNEY_MAX_ORDERS", 1_000_000, _positive_int,
           "At most this many unfinished orders are tracked; the oldest go first."),
    Option("grafana_url", "OBSKIT_GRAFANA_URL", None, _opt_str,
           "Grafana's address, e.g. `http://127.0.0.1:3000`: `obskit orders show` prints a "
           "Grafana Explore link for each trace of the order.",
           show=safe_url),
    Option("grafana_tempo_uid", "OBSKIT_GRAFANA_TEMPO_UID", "obskit-tempo", _str,
           "The Tempo datasource uid in that Grafana (the bundle's is `obskit-tempo`)."),
)

_BY_NAME = {o.name: o for o in OPTIONS}


@dataclass(frozen=True)
class Settings:
    """Effective configuration after precedence; ``sources`` says where each value came from."""

    values: dict[str, Any]
    sources: dict[str, str] = field(default_factory=dict)

    def __getattr__(self, name: str) -> Any:
        try:
            return self.values[name]
        except KeyError:
            raise AttributeError(name) from None

    @property
    def resolved_spans_file(self) -> str | None:
        spans_file = self.values["spans_file"]
        if spans_file == "off" or self.values["otlp_endpoint"]:
            return None
        if spans_file:
            return str(spans_file)
        return os.path.join(tempfile.gettempdir(), "obskit", f"{self.service_name}.spans.jsonl")

    def masked(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for name, value in self.values.items():
            if _BY_NAME[name].secret and value:
                out[name] = {k: "****" for k in value} if isinstance(value, dict) else "****"
            elif (show := _BY_NAME[name].show) is not None and value is not None:
                out[name] = show(value)
            else:
                out[name] = list(value) if isinstance(value, tuple) else value
        return out


def resolve(overrides: Mapping[str, Any], environ: Mapping[str, str] | None = None) -> Settings:
    """Apply keyword > env var > default. Bad values raise ``ValueError`` naming option and fix."""
    env = os.environ if environ is None else environ
    unknown = set(overrides) - set(_BY_NAME)
    if unknown:
        raise TypeError(
            f"obskit.init() got unknown option(s) {', '.join(sorted(unknown))}; "
            f"valid options: {', '.join(_BY_NAME)}"
        )
    if overrides.get("disable_fast_paths") is not None:
        raise ValueError("obskit: disable_fast_paths is read from the environment only: set "
                         "OBSKIT_DISABLE_FAST_PATHS before the process starts (some fast paths "
                         "decide when their module is imported, before init())")
    values: dict[str, Any] = {}
    sources: dict[str, str] = {}
    for opt in OPTIONS:
        raw: Any
        if opt.name in overrides and overrides[opt.name] is not None:
            raw, source, where = overrides[opt.name], "argument", f"init({opt.name}=...)"
        else:
            env_name = next((n for n in (opt.env, *opt.env_aliases) if env.get(n)), None)
            if env_name is not None:
                raw, source, where = env[env_name], f"env {env_name}", env_name
            else:
                values[opt.name], sources[opt.name] = opt.parse(opt.default), "default"
                continue
        try:
            values[opt.name] = opt.parse(raw)
        except (ValueError, TypeError) as exc:
            raise ValueError(
                f"obskit: invalid value for {opt.name} (from {where}): {exc}") from None
        sources[opt.name] = source
    if not values["service_name"]:
        rattr = values["resource_attributes"].get("service.name")
        values["service_name"] = rattr or _default_service_name()
    if ("service.version" in values["resource_attributes"]
            and sources["service_version"] == "default"):
        values["service_version"] = values["resource_attributes"]["service.version"]
    arg = values["traces_sampler_arg"]
    if arg is not None and not 0.0 <= arg <= 1.0:
        raise ValueError(f"obskit: traces_sampler_arg must be within 0.0..1.0, got {arg}")
    if values["otlp_endpoint"] and "://" not in values["otlp_endpoint"]:
        raise ValueError(
            "obskit: otlp_endpoint must be a URL such as http://localhost:4317, "
            f"got {values['otlp_endpoint']!r}"
        )
    return Settings(values, sources)


def markdown_table() -> str:
    lines = ["| option (`init()` keyword) | env var | default | meaning |", "|---|---|---|---|"]
    for o in OPTIONS:
        env = f"`{o.env}`" + "".join(f", `{a}`" for a in o.env_aliases)
        default = "—" if o.default in (None, ()) else f"`{o.default}`"
        lines.append(f"| `{o.name}` | {env} | {default} | {o.doc} |")
    return "\n".join(lines)


if __name__ == "__main__":
    print(markdown_table())
