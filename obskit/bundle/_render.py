"""Render the bundle: YAML through the Jinja2 templates, dashboards from Python.

``render_files(params)`` is the whole bundle as ``{relative path: text}``; ``render(out)``
writes it. The files checked in at the repository root are ``render(".")`` of the defaults, and
``tests/bundle/test_render.py`` fails when they drift.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from obskit.bundle._params import Params, prom_seconds

__all__ = ["datasource_queries", "render", "render_files"]

_TEMPLATES = Path(__file__).parent / "templates"
# Good enough to mask addresses in free text; it is the second line, obskit scrubs first.
EMAIL_REGEX = r"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}"


def secret_key_regex(p: Params) -> str:
    """An RE2 pattern matching a key that contains one of ``redact_keys`` as whole words
    (separated by ``.``, ``_``, ``-`` or the key's ends), case-insensitively."""
    words = sorted({k.lower().replace("-", "_") for k in p.redact_keys}, key=lambda k: (-len(k), k))
    alternatives = "|".join(re.escape(w).replace("_", "[._-]") for w in words)
    return rf"(?i)(^|[._-])({alternatives})([._-]|$)"


def _traces_to_logs(p: Params) -> str:
    # LogQL run from a Tempo span: the logs of that trace, from the span's service.
    return ('{service_name="${__span.tags["service.name"]}"} | trace_id="${__trace.traceId}"')


def _traces_to_metrics(p: Params) -> list[tuple[str, str]]:
    # From a span to its service's rate, errors and p95, from Tempo's span metrics: they exist
    # for every traced service (the MES serves no HTTP). ``$__tags`` becomes service="...".
    return [
        ("Request rate", "sum by (span_name) (rate(traces_spanmetrics_calls_total{$__tags}[5m]))"),
        ("Error rate", "sum by (span_name) (rate(traces_spanmetrics_calls_total"
                       '{$__tags, status_code="STATUS_CODE_ERROR"}[5m]))'),
        ("p95 latency", "histogram_quantile(0.95, sum by (le, span_name) "
                        "(rate(traces_spanmetrics_latency_bucket{$__tags}[5m])))"),
    ]


def datasource_queries(p: Params) -> list[tuple[str, str, str, str]]:
    """(lang, expr, source, expect) of the queries inside the datasource links, unescaped."""
    out = [("logql", _traces_to_logs(p), "datasources: Tempo → Loki", "needs:loki")]
    out += [("promql", q, f"datasources: Tempo → Prometheus ({n})", "needs:tempo")
            for n, q in _traces_to_metrics(p)]
    return out


def _environment() -> Any:
    try:
        import jinja2
    except ImportError as exc:  # pragma: no cover - the extra is missing
        raise ImportError("obskit bundle needs jinja2: pip install 'obskit[bundle]'") from exc
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(_TEMPLATES)),
        undefined=jinja2.StrictUndefined,  # a misspelt parameter fails the render
        keep_trailing_newline=True,
        autoescape=False,  # YAML, not HTML
    )
    env.filters["gesc"] = lambda s: s.replace("$", "$$")  # Grafana provisioning's escape
    return env


def _hours(duration: str) -> int:
    m = re.fullmatch(r"(\d+)([dhw])", duration.strip())
    if not m:
        raise ValueError(f"retention={duration!r}: expected a number of hours, days or weeks "
                         "(e.g. 48h, 15d, 2w)")
    n, unit = int(m.group(1)), m.group(2)
    return n * {"h": 1, "d": 24, "w": 168}[unit]


def _targets_json(p: Params) -> str:
    groups = [{"targets": [t.address], "labels": {p.service_label: t.service,
                                                 p.instance_label: t.instance}}
              for t in p.target_list()]
    return json.dumps(groups, indent=2) + "\n"


def render_files(params: Params | None = None) -> dict[str, str]:
    """The whole bundle for ``params`` (default: ``Params()``), relative path -> content."""
    from obskit.bundle import alerts, dashboards
    from obskit.bundle.alerts._common import Timing, duration

    p = params or Params()
    env = _environment()
    timing = Timing(p)
    loki = p.loki_address
    context = {
        "p": p,
        "email_regex": EMAIL_REGEX,
        "secret_key_regex": secret_key_regex(p),
        "retention_hours": _hours(p.retention),
        "tempo_otlp": p.tempo_address.rsplit(":", 1)[0] + ":4317",
        "loki_otlp": f"http://{loki}/otlp",
        "traces_to_logs": _traces_to_logs(p),
        "traces_to_metrics": _traces_to_metrics(p),
        # Alertmanager's waits scale with the rules' (tests); never zero, which it rejects.
        "am_wait": lambda nominal: duration(max(prom_seconds(nominal) * timing.scale, 0.1)),
        "broker_alerts": sorted({a.name for a in alerts.alerts(p) if a.needs_broker}),
    }
    files: dict[str, str] = {}
    for template in sorted(_TEMPLATES.rglob("*.j2")):
        rel = template.relative_to(_TEMPLATES).as_posix()[: -len(".j2")]
        header = (f"# Rendered by `obskit bundle render` from obskit/bundle/templates/{rel}.j2.\n"
                  "# Change a parameter (`obskit bundle params`), not this file.")
        files[rel] = env.get_template(f"{rel}.j2").render(header=header, **context)
    files["platform/prometheus/targets/obskit.json"] = _targets_json(p)
    rule_header = ("# Rendered by `obskit bundle render` from {}.\n"
                   "# Change a parameter (`obskit bundle params`), not this file. Its tests: "
                   "alerts/tests/.").format
    for name, text in alerts.build_all(p, rule_header).items():
        files[f"alerts/{name}"] = text
    for name, model in dashboards.build_all(p).items():
        files[f"dashboards/{name}"] = json.dumps(model, indent=2, sort_keys=True) + "\n"
    return files


def render(out: str | Path, params: Params | None = None) -> list[Path]:
    """Write the bundle under ``out``; returns the files whose content changed."""
    root = Path(out)
    changed: list[Path] = []
    for rel, text in render_files(params).items():
        path = root / rel
        if path.exists() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        changed.append(path)
    return changed
