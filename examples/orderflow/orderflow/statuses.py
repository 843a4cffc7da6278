"""Order statuses, in the order an order moves through them.

They are the obskit hand-off stages (MISSION.md) as customers see them. ``orders.status`` never
moves backwards: events can arrive out of order (the MES may report ``received`` before the relay
has recorded ``published``), so the stored status is the highest-ranked one seen.
"""

from __future__ import annotations

STATUSES: tuple[str, ...] = (
    "accepted", "published", "received", "priced", "scheduled", "printing",
    "done", "failed", "dead_lettered",
)
TERMINAL: frozenset[str] = frozenset({"done", "failed", "dead_lettered"})
RANK: dict[str, int] = {s: i for i, s in enumerate(STATUSES)}
# Terminal statuses share the top rank so nothing overwrites one; ``done`` vs ``failed`` is
# decided by which arrives (the MES sends exactly one).
for _t in TERMINAL:
    RANK[_t] = 100
