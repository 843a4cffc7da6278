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
#: Statuses nothing changes once stored. ``dead_lettered`` is terminal for the pipeline but not
#: final: ``obskit dlq replay`` may still bring the order to ``done`` or ``failed``.
FINAL: frozenset[str] = frozenset({"done", "failed"})
RANK: dict[str, int] = {s: i for i, s in enumerate(STATUSES)}
# Terminal statuses rank above every stage, so no late stage event overwrites one. Between
# them: done > failed > dead_lettered. A final status is kept whatever ranks above it arrive
# later (crm.record_statuses); the ranks decide only between events stored in the same batch.
RANK.update({"dead_lettered": 100, "failed": 101, "done": 102})
