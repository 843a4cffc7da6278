"""What every rule file shares: the rule records, the time scaling, label templating, the YAML.

Rules are Python values rather than Jinja text for the same reason the dashboards are: a window
goes through ``Timing`` (so ``alert_time_scale`` reaches every one), an annotation through the
same helpers (so every alert has a summary, a description and a runbook), and the tests, the
runbook index and the query checks read the same objects the YAML is written from.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from typing import Literal

from obskit.bundle._params import Params, prom_seconds

Severity = Literal["critical", "warning"]

#: A window is never shorter than this many scrape intervals: ``rate()`` needs two samples and
#: a missed scrape must not empty it.
MIN_SCRAPES_PER_WINDOW = 4


def label(name: str) -> str:
    """``{{ $labels.name }}``: a label of the alert, in an annotation."""
    return f"{{{{ $labels.{name} }}}}"


VALUE = "{{ $value }}"
COUNT = '{{ $value | printf "%.0f" }}'  # an increase() is extrapolated: 1.07 reads as 1
RATE = '{{ $value | printf "%.3g" }}'  # per second: 0.5, 12.3
PERCENT = "{{ $value | humanizePercentage }}"
SECONDS = "{{ $value | humanizeDuration }}"


def grew(series: str, by: str, window: str) -> str:
    """``sum by (by)`` of how much the counter ``series`` grew over ``window``.

    A counter whose labels are first known at its first increment (an order's stage, an error
    reason) is born with its value already above 0: ``increase()`` has no earlier sample and
    never sees that first burst. So a series that did not exist ``window`` ago counts with its
    whole value. (Right after Prometheus starts, every counter looks new for one window.)"""
    return (f"sum by ({by}) ((increase({series}[{window}]) > 0) "
            f"or ({series} unless {series} offset {window}))")


def duration(seconds: float) -> str:
    """Seconds as a Prometheus duration: ``3600`` -> ``1h``, ``90`` -> ``1m30s``, ``0.5`` ->
    ``500ms`` (whole milliseconds, rounded up so a clamped window stays above its floor)."""
    ms = math.ceil(round(seconds * 1000, 6))
    if ms <= 0:
        return "0s"
    out = ""
    for unit, size in (("d", 86_400_000), ("h", 3_600_000), ("m", 60_000), ("s", 1000),
                       ("ms", 1)):
        n, ms = divmod(ms, size)
        if n:
            out += f"{n}{unit}"
    return out


class Timing:
    """``alert_time_scale`` applied: every window and ``for:`` of the rules goes through here."""

    def __init__(self, p: Params) -> None:
        self.scale = p.alert_time_scale
        self.floor = MIN_SCRAPES_PER_WINDOW * prom_seconds(p.scrape_interval)

    def window(self, nominal: str) -> str:
        """A range window: scaled, never below ``MIN_SCRAPES_PER_WINDOW`` scrapes."""
        return duration(max(prom_seconds(nominal) * self.scale, self.floor))

    def for_(self, nominal: str) -> str:
        """A ``for:`` (or an Alertmanager wait): scaled; ``""`` when it scales to nothing."""
        seconds = prom_seconds(nominal) * self.scale
        return duration(seconds) if seconds >= 0.001 else ""


@dataclass(frozen=True)
class Alert:
    """One alerting rule. ``summary`` names what is affected; ``description`` says what it means
    and the first thing to do; the runbook (docs/runbooks/<name>.md) says the rest."""

    name: str
    severity: Severity
    expr: str
    summary: str
    description: str
    for_: str = ""  # already scaled (Timing.for_)
    #: Muted while RabbitMQ is down (Alertmanager inhibition): it says nothing new then.
    needs_broker: bool = False
    #: A one-line meaning for the runbook index (docs/runbooks/README.md).
    meaning: str = ""


@dataclass(frozen=True)
class Record:
    """One recording rule."""

    name: str
    expr: str


@dataclass(frozen=True)
class Group:
    name: str
    rules: list[Alert | Record] = field(default_factory=list)


def runbook_url(p: Params, alert: str) -> str:
    return f"{p.runbook_base_url.rstrip('/')}/{alert}.md"


def _q(text: str) -> str:
    # A JSON string is a YAML double-quoted scalar: every character survives as written.
    return json.dumps(text, ensure_ascii=False)


def _block(expr: str, indent: str) -> str:
    lines = [line.rstrip() for line in expr.strip().splitlines()]
    return "|-\n" + "\n".join(f"{indent}{line}" if line else "" for line in lines)


def to_yaml(p: Params, groups: list[Group], header: str) -> str:
    """A Prometheus rule file (valid for Prometheus 2.42 and 3.x)."""
    out = [header, "", "groups:"]
    for g in groups:
        out += [f"  - name: {g.name}", "    rules:"]
        for r in g.rules:
            if isinstance(r, Record):
                out += [f"      - record: {r.name}", f"        expr: {_block(r.expr, ' ' * 10)}"]
                continue
            out += [f"      - alert: {r.name}", f"        expr: {_block(r.expr, ' ' * 10)}"]
            if r.for_:
                out.append(f"        for: {r.for_}")
            out += ["        labels:", f"          severity: {r.severity}",
                    "        annotations:",
                    f"          summary: {_q(r.summary)}",
                    f"          description: {_q(r.description)}",
                    f"          runbook_url: {_q(runbook_url(p, r.name))}"]
        out.append("")
    return "\n".join(out).rstrip("\n") + "\n"
