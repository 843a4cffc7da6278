"""Stage deadlines: how long an order may wait in a stage before it is *stuck*, then *lost*.

An order is **stuck** when it has been in a non-terminal stage longer than the stage's stuck
deadline (warning: somebody should look), and **lost** when it has been there longer than the lost
deadline (critical: it will not move by itself). The defaults below fit the company's pipeline; a
service overrides any row with ``OBSKIT_STAGE_DEADLINES``::

    OBSKIT_STAGE_DEADLINES="published=1m/10m,printing@b2b=2h/6h,*=30s/5m"

Each entry is ``STAGE[@CHANNEL]=STUCK[/LOST]``; ``*`` is any stage. A value you give beats every
default; among yours and among the defaults the most specific wins (stage@channel, stage,
``*@channel``, ``*``). A missing LOST is ten times STUCK.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

__all__ = ["DEFAULT_DEADLINES", "Deadline", "Deadlines", "format_duration", "parse_duration"]

_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0}
_PART = r"(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?"


def parse_duration(text: str | float | int) -> float:
    """``"90s"``, ``"5m"``, ``"1h30m"``, ``"2d"`` or a plain number of seconds -> seconds."""
    if isinstance(text, (int, float)):
        value = float(text)
    else:
        t = text.strip()
        if not re.fullmatch(f"(?:{_PART}\\s*)+", t):
            raise ValueError(f"expected a duration such as 30s, 5m, 2h or 1h30m; got {text!r}")
        value = sum(float(n) * _UNITS[u or "s"] for n, u in re.findall(_PART, t))
    if value < 0:
        raise ValueError(f"a duration cannot be negative: {text!r}")
    return value


def format_duration(seconds: float) -> str:
    """``93.0`` -> ``"1m33s"``; short and exact enough for a terminal."""
    if seconds < 1:
        return f"{seconds * 1000:.0f}ms"
    if seconds < 60:
        return f"{seconds:.1f}s" if seconds < 10 else f"{seconds:.0f}s"
    s = int(round(seconds))
    d, s = divmod(s, 86400)
    h, s = divmod(s, 3600)
    m, s = divmod(s, 60)
    out = "".join(f"{v}{u}" for v, u in ((d, "d"), (h, "h"), (m, "m"), (s, "s")) if v)
    return out or "0s"


@dataclass(frozen=True)
class Deadline:
    stuck: float
    lost: float


#: stage -> (what the next hop is, stuck after, lost after). Orders move in seconds on a healthy
#: pipeline; printing is the one stage that legitimately takes hours.
DEFAULT_DEADLINES: Mapping[str, tuple[str, Deadline]] = {
    "accepted": ("stored: the CRM commits in the same request", Deadline(30, 300)),
    "stored": ("published: the outbox relay publishes within a second", Deadline(60, 600)),
    "published": ("received: an MES worker takes it from the queue", Deadline(120, 900)),
    "received": ("priced: the MES prices the 3D model", Deadline(120, 900)),
    "priced": ("scheduled: a printer slot is booked", Deadline(600, 3600)),
    "scheduled": ("printing: the print starts", Deadline(3600, 6 * 3600)),
    "printing": ("done: the print finishes", Deadline(4 * 3600, 12 * 3600)),
    "*": ("any other MES stage", Deadline(600, 3600)),
}


@dataclass(frozen=True)
class Deadlines:
    """The effective table: defaults plus ``OBSKIT_STAGE_DEADLINES`` overrides."""

    overrides: Mapping[tuple[str, str], Deadline] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str | Mapping[str, str] | None) -> Deadlines:
        if text is None or isinstance(text, Deadlines):
            return text or cls()
        items: Iterable[tuple[str, str]]
        if isinstance(text, Mapping):
            items = text.items()
        else:
            items = []
            for part in text.split(","):
                if not part.strip():
                    continue
                if "=" not in part:
                    raise ValueError(f"expected STAGE[@CHANNEL]=STUCK[/LOST], got {part.strip()!r}")
                k, v = part.split("=", 1)
                items.append((k, v))
        out: dict[tuple[str, str], Deadline] = {}
        for key, value in items:
            stage, _, channel = key.strip().partition("@")
            if not stage:
                raise ValueError(f"no stage in {key!r}")
            stuck_s, _, lost_s = str(value).partition("/")
            stuck = parse_duration(stuck_s)
            lost = parse_duration(lost_s) if lost_s.strip() else stuck * 10
            if lost < stuck:
                raise ValueError(f"{key}: the lost deadline ({lost_s}) is shorter than the stuck "
                                 f"deadline ({stuck_s})")
            out[(stage, channel.strip() or "*")] = Deadline(stuck, lost)
        return cls(out)

    def for_stage(self, stage: str, channel: str) -> Deadline:
        for key in ((stage, channel), (stage, "*"), ("*", channel), ("*", "*")):
            hit = self.overrides.get(key)
            if hit is not None:
                return hit
        return DEFAULT_DEADLINES.get(stage, DEFAULT_DEADLINES["*"])[1]

    def as_dict(self) -> dict[str, str]:
        """The overrides in their env-var spelling (what the sweeper publishes for the CLI)."""
        return {(s if c == "*" else f"{s}@{c}"): f"{d.stuck:g}/{d.lost:g}"
                for (s, c), d in self.overrides.items()}

    def __str__(self) -> str:
        return ",".join(f"{k}={v}" for k, v in self.as_dict().items())


def markdown_table() -> str:
    """The default table as in docs (``python -m obskit.journey._deadlines``)."""
    rows = ["| stage | the next hop | stuck after | lost after |", "|---|---|---|---|"]
    for stage, (nxt, d) in DEFAULT_DEADLINES.items():
        name = "any other stage (`*`)" if stage == "*" else f"`{stage}`"
        rows.append(f"| {name} | {nxt} | {format_duration(d.stuck)} | "
                    f"{format_duration(d.lost)} |")
    return "\n".join(rows)


if __name__ == "__main__":
    print(markdown_table())
