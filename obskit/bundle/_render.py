"""Render the bundle: YAML through the Jinja2 templates, dashboards from Python.

``render_files(params)`` is the whole bundle as ``{relative path: text}``; ``render(out)``
writes it. The files checked in at the repository root are ``render(".")`` of the defaults, and
``tests/bundle/test_render.py`` fails when they drift.
"""

from __future__ import annotations

import json
from pathlib import Path

from obskit.bundle._params import Params
from obskit.bundle._templates import (
    TEMPLATES,
    environment,
    template_context,
    traces_to_logs,
    traces_to_metrics,
)

__all__ = ["TARGETS", "datasource_queries", "render", "render_files"]


def datasource_queries(p: Params) -> list[tuple[str, str, str, str]]:
    """(lang, expr, source, expect) of the queries inside the datasource links, unescaped."""
    out = [("logql", traces_to_logs(p), "datasources: Tempo → Loki", "needs:loki")]
    out += [("promql", q, f"datasources: Tempo → Prometheus ({n})", "needs:tempo")
            for n, q in traces_to_metrics(p)]
    return out


def _targets_json(p: Params) -> str:
    groups = [{"targets": [t.address], "labels": {p.service_label: t.service,
                                                 p.instance_label: t.instance}}
              for t in p.target_list()]
    return json.dumps(groups, indent=2) + "\n"


#: What ``render_files`` can render: the compose bundle (files at the repository root) or the
#: Kubernetes manifests and chart values (deploy/kubernetes/).
TARGETS = ("compose", "kubernetes")


def render_files(params: Params | None = None, target: str = "compose") -> dict[str, str]:
    """The whole bundle for ``params`` (default: ``Params()``), relative path -> content.

    ``target="kubernetes"``: the files of deploy/kubernetes/, relative to it."""
    from obskit.bundle import alerts, dashboards

    p = params or Params()
    if target == "kubernetes":
        from obskit.bundle._kubernetes import render_kubernetes

        return render_kubernetes(p)
    if target != "compose":
        raise ValueError(f"target={target!r}: expected one of {', '.join(TARGETS)}")
    env = environment()
    context = template_context(p)
    files: dict[str, str] = {}
    for template in sorted(TEMPLATES.rglob("*.j2")):
        rel = template.relative_to(TEMPLATES).as_posix()[: -len(".j2")]
        header = (f"# Rendered by `obskit bundle render` from obskit/bundle/templates/{rel}.j2.\n"
                  "# Change a parameter (`obskit bundle params`), not this file.")
        files[rel] = env.get_template(f"{rel}.j2").render(header=header, **context)
    files["platform/prometheus/targets/obskit.json"] = _targets_json(p)
    rule_header = ("# Rendered by `obskit bundle render` from {}.\n"
                   "# Change a parameter (`obskit bundle params`), not this file. Its tests: "
                   "alerts/tests/.").format
    for name, text in alerts.build_all(p, rule_header).items():
        files[f"alerts/{name}"] = text
    for name, text in dashboards.build_all_json(p).items():
        files[f"dashboards/{name}"] = text
    return files


def render(out: str | Path, params: Params | None = None, target: str = "compose") -> list[Path]:
    """Write the bundle under ``out``; returns the files whose content changed."""
    root = Path(out)
    changed: list[Path] = []
    for rel, text in render_files(params, target).items():
        path = root / rel
        if path.exists() and path.read_text() == text:
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
        changed.append(path)
    return changed
