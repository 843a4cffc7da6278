"""The sweeper: turns the journey store into the stuck and lost gauges.

Every process with a journey store runs one; a lease in Redis (``SET NX PX``, renewed each sweep)
makes exactly one of them active. The active one publishes ``obskit_orders_in_stage``,
``_stuck``, ``_lost`` and ``_oldest_age_seconds`` per (stage, channel), counts each newly lost
order once in ``obskit_orders_lost_total``, and forgets what is past the retention or the size cap.
The others publish zeros, so ``max by (stage, channel)`` over all processes is the truth; when the
active one dies its lease runs out after three intervals and another takes over.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from obskit._internal import internal_error
from obskit.journey._deadlines import Deadlines
from obskit.journey._store import JourneyStore, StoreUnavailable
from obskit.metrics import Catalogue

__all__ = ["Sweeper"]

_log = logging.getLogger("obskit.journey")


class Sweeper:
    def __init__(self, store: JourneyStore, cat: Catalogue, deadlines: Deadlines, *,
                 interval: float = 10.0, owner: str | None = None) -> None:
        self.store = store
        self.cat = cat
        self.deadlines = deadlines
        self.interval = interval
        self.owner = owner or f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self.active = False
        self.sweeps = 0
        self._published: set[tuple[str, str]] = set()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failing = False

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._run, name="obskit-journey-sweeper",
                                            daemon=True)
            self._thread.start()

    def stop(self, timeout: float = 3.0) -> None:
        self._stop.set()
        t = self._thread
        if t is not None and t.is_alive():
            t.join(timeout)
        if self.active:
            try:
                self.store.resign(self.owner)
            except StoreUnavailable:
                pass
            self._demote()

    def _run(self) -> None:
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        with suppress_instrumentation():
            while not self._stop.is_set():
                try:
                    self.run_once()
                except Exception as exc:  # a bug of ours: report, keep sweeping
                    internal_error("journey.sweep", exc)
                self._stop.wait(self.interval)

    def run_once(self, now: float | None = None) -> bool:
        """One round: take or keep the lease, and sweep if active. Returns whether it swept."""
        try:
            leading = self.store.lead(self.owner, 3 * self.interval)
            if not leading:
                if self.active:
                    _log.info("obskit: journey sweeper %s is standing by", self.owner)
                    self._demote()
                return False
            if not self.active:
                _log.info("obskit: journey sweeper %s is active", self.owner)
                self.active = True
                self.cat.journey_sweeper_leader.set(1)
            counts, forgotten = self.store.sweep(self.deadlines, now)
        except StoreUnavailable as exc:
            self.cat.journey_store_errors.labels("sweep").inc()
            if not self._failing:
                _log.warning("obskit: %s; stuck and lost orders are not counted meanwhile", exc)
            self._failing = True
            return False
        if self._failing:
            _log.info("obskit: journey store reachable again; sweeping")
            self._failing = False
        cat = self.cat
        seen = set()
        for c in counts:
            key = (c.stage, c.channel)
            seen.add(key)
            cat.orders_in_stage.labels(*key).set(c.in_stage)
            cat.orders_stuck.labels(*key).set(c.stuck)
            cat.orders_lost.labels(*key).set(c.lost)
            cat.orders_oldest_age.labels(*key).set(round(c.oldest_age, 3))
            cat.orders_lost_total.labels(*key).inc(c.newly_lost)
            if c.newly_lost:
                _log.error("obskit: %d order(s) lost in stage %s (%s): no progress for %ss; "
                           "list them with `obskit orders lost`", c.newly_lost, c.stage,
                           c.channel, int(self.deadlines.for_stage(c.stage, c.channel).lost))
        for key in self._published - seen:
            self._zero(key)
        self._published = seen
        if forgotten:
            cat.journey_forgotten.inc(forgotten)
        cat.journey_last_sweep.set(time.time())
        self.sweeps += 1
        return True

    def _zero(self, key: tuple[str, str]) -> None:
        cat = self.cat
        for g in (cat.orders_in_stage, cat.orders_stuck, cat.orders_lost, cat.orders_oldest_age):
            g.labels(*key).set(0)

    def _demote(self) -> None:
        self.active = False
        self.cat.journey_sweeper_leader.set(0)
        for key in self._published:
            self._zero(key)
        self._published = set()
