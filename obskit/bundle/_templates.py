"""The Jinja2 templates of the bundle and what they see, shared by both targets.

The compose target (``_render``) renders every template; the Kubernetes target
(``_kubernetes``) renders a few with in-cluster addresses and turns them into chart values.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from obskit.bundle._params import Params, prom_seconds

__all__ = ["EMAIL_REGEX", "TEMPLATES", "environment", "hours", "render_template",
           "secret_key_regex", "template_context", "traces_to_logs", "traces_to_metrics"]

TEMPLATES = Path(__file__).parent / "templates"
# Good enough to mask addresses in free text; it is the second line, obskit scrubs first.
EMAIL_REGEX = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"


def secret_key_regex(p: Params) -> str:
    """An RE2 pattern matching a key that contains one of ``redact_keys`` as whole words
    (separated by ``.``, ``_``, ``-`` or the key's ends), case-insensitively."""
    words = sorted({k.lower().replace("-", "_") for k in p.redact_keys}, key=lambda k: (-len(k), k))
    alternatives = "|".join(re.escape(w).replace("_", "[._-]") for w in words)
    return rf"(?i)(^|[._-])({alternatives})([._-]|$)"


def traces_to_logs(p: Params) -> str:
    # LogQL run from a Tempo span: the logs of that trace, from the span's service.
    return ('{service_name="${__span.tags["service.name"]}"} | trace_id="${__trace.traceId}"')


def traces_to_metrics(p: Params) -> list[tuple[str, str]]:
    # From a span to its service's rate, errors and p95, from Tempo's span metrics: they exist
    # for every traced service (the MES serves no HTTP). ``$__tags`` becomes service="...".
    return [
        ("Request rate", "sum by (span_name) (rate(traces_spanmetrics_calls_total{$__tags}[5m]))"),
        ("Error rate", "sum by (span_name) (rate(traces_spanmetrics_calls_total"
                       '{$__tags, status_code="STATUS_CODE_ERROR"}[5m]))'),
        ("p95 latency", "histogram_quantile(0.95, sum by (le, span_name) "
                        "(rate(traces_spanmetrics_latency_bucket{$__tags}[5m])))"),
    ]


def environment() -> Any:
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ImportError("obskit bundle needs jinja2: pip install 'obskit[bundle]'") from exc
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,  # a misspelt parameter fails the render
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML
    )
    env.filters["gesc"] = lambda s: s.replace("$", "$$")  # Grafana provisioning's escape
    return env


def hours(duration: str) -> int:
    """A retention (`48h`, `15d`, `2w`) in hours: Tempo and Loki take hours."""
    m = re.fullmatch(r"(\d+)([dhw])", duration.strip())
    if not m:
        raise ValueError(f"retention={duration!r}: expected a number of hours, days or weeks "
                         "(e.g. 48h, 15d, 2w)")
    n, unit = int(m.group(1)), m.group(2)
    return n * {"h": 1, "d": 24, "w": 168}[unit]


def template_context(p: Params, **overrides: Any) -> dict[str, Any]:
    """What the templates see; ``overrides`` replace entries (the Kubernetes target renders the
    collector and datasources with in-cluster addresses)."""
    from obskit.bundle import alerts
    from obskit.bundle.alerts._common import Timing, duration

    timing = Timing(p)
    loki = p.loki_address
    context = {
        "p": p,
        "email_regex": EMAIL_REGEX,
        "secret_key_regex": secret_key_regex(p),
        "retention_hours": hours(p.retention),
        "tempo_otlp": p.tempo_address.rsplit(":", 1)[0] + ":4317",
        "loki_otlp": f"http://{loki}/otlp",
        "traces_to_logs": traces_to_logs(p),
        "traces_to_metrics": traces_to_metrics(p),
        # Alertmanager's waits scale with the rules' (tests); never zero, which it rejects.
        "am_wait": lambda nominal: duration(max(prom_seconds(nominal) * timing.scale, 0.1)),
        "broker_alerts": sorted({a.name for a in alerts.alerts(p) if a.needs_broker}),
    }
    context.update(overrides)
    return context


def render_template(rel: str, p: Params, **overrides: Any) -> str:
    """One template (``rel`` without ``.j2``) rendered for ``p``, without its header line."""
    return environment().get_template(f"{rel}.j2").render(
        header="", **template_context(p, **overrides))


