"""The journey writer: hops leave the caller's thread in a deque append; a daemon thread writes
them to the store in batches.

The caller never waits on Redis and never sees its errors. When the store is down, hops wait in
memory (at most ``max_buffer``) and are written when it is back, so a short outage leaves no gap;
beyond the bound the oldest are dropped and counted (``obskit_journey_hops_dropped_total``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from obskit._config import safe_url
from obskit._internal import internal_error
from obskit.journey._store import Hop, JourneyStore, StoreUnavailable, WriteResult
from obskit.metrics import Catalogue, observe_traced

__all__ = ["JourneyWriter"]

_log = logging.getLogger("obskit.journey")

BATCH = 500
#: How long a hop may wait in memory before it is written (seconds): the journey a terminal shows
#: lags by at most this much.
FLUSH_INTERVAL = 0.2
MAX_BACKOFF = 10.0
#: A failing store is reported at most this often in the log (it is counted every time).
LOG_EVERY = 30.0


class JourneyWriter:
    def __init__(self, store: JourneyStore, cat: Catalogue, *, max_buffer: int = 100_000) -> None:
        self.store = store
        self.cat = cat
        self.max_buffer = max_buffer
        self._buf: deque[Hop] = deque()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._idle.set()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._failing_since: float | None = None
        self._last_log = 0.0

    # --- caller side (any thread, hot path) ------------------------------------------------
    def submit(self, hop: Hop) -> None:
        if len(self._buf) >= self.max_buffer:
            self.cat.journey_dropped.labels("buffer_full").inc()
            return
        self._buf.append(hop)
        if self._thread is None:
            self._start()
        elif len(self._buf) >= BATCH:
            self._wake.set()

    def _start(self) -> None:
        with self._lock:
            if self._thread is not None or self._stop.is_set():
                return
            self._thread = threading.Thread(target=self._run, name="obskit-journey-writer",
                                            daemon=True)
            self._thread.start()

    # --- writer thread ---------------------------------------------------------------------
    def _run(self) -> None:
        from opentelemetry.instrumentation.utils import suppress_instrumentation

        # Our own Redis traffic is not the application's: no spans, no cache metrics.
        with suppress_instrumentation():
            self._loop()

    def _loop(self) -> None:
        backoff = 0.0
        while True:
            self._wake.wait(backoff or FLUSH_INTERVAL)
            self._wake.clear()
            if not self._buf:
                self._idle.set()
                if self._stop.is_set():
                    return
                continue
            self._idle.clear()
            ok = self._flush_some()
            backoff = 0.0 if ok else min(max(backoff * 2, 0.5), MAX_BACKOFF)
            if self._stop.is_set() and (not ok or not self._buf):
                self._idle.set()
                return
            if ok and self._buf:
                self._wake.set()  # more than a batch waiting: go on at once

    def _flush_some(self) -> bool:
        batch: list[Hop] = []
        buf = self._buf
        while buf and len(batch) < BATCH:
            batch.append(buf.popleft())
        try:
            results = self.store.write(batch)
        except StoreUnavailable as exc:
            self._failed(batch, exc)
            return False
        except Exception as exc:  # a bug of ours: report it, lose this batch, carry on
            self.cat.journey_dropped.labels("error").inc(len(batch))
            internal_error("journey.write", exc)
            return True
        self._written(results, len(batch))
        return True

    def _failed(self, batch: list[Hop], exc: Exception) -> None:
        self.cat.journey_store_errors.labels("write").inc()
        # Put the batch back in front, oldest first; past the bound the oldest go.
        room = self.max_buffer - len(self._buf)
        keep = batch[-room:] if room > 0 else []
        if len(keep) < len(batch):
            self.cat.journey_dropped.labels("buffer_full").inc(len(batch) - len(keep))
        self._buf.extendleft(reversed(keep))
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._last_log >= LOG_EVERY:
            self._last_log = now
            _log.warning("obskit: %s; %d order hops wait in memory (the service carries on)",
                         exc, len(self._buf))

    def _written(self, results: list[WriteResult], n: int) -> None:
        cat = self.cat
        cat.journey_written.inc(n)
        if self._failing_since is not None:
            _log.warning("obskit: journey store %s reachable again after %.0fs; hops written",
                         safe_url(self.store.url), time.monotonic() - self._failing_since)
            self._failing_since = None
        # A bucket that may take an exemplar now gets this hop's trace.
        for r in results:
            if r.left_stage is not None:
                observe_traced(cat.orders_stage_duration.labels(r.left_stage, r.channel),
                               r.left_after, r.hop.trace_id)
            if r.repeated:
                cat.orders_stage_repeated.labels(r.hop.stage, r.channel).inc()

    # --- lifecycle ---------------------------------------------------------------------------
    @property
    def pending(self) -> int:
        return len(self._buf)

    def flush(self, timeout: float = 5.0) -> bool:
        """Wait until every hop submitted so far is written (or ``timeout``). True if written."""
        if self._thread is None:
            return not self._buf
        deadline = time.monotonic() + timeout
        self._idle.clear()
        self._wake.set()
        while time.monotonic() < deadline:
            if self._idle.wait(0.05) and not self._buf:
                return True
            self._wake.set()
        return not self._buf

    def stop(self, timeout: float = 3.0) -> None:
        """Write what waits (bounded by ``timeout``) and stop the thread."""
        self._stop.set()
        self._wake.set()
        t = self._thread
        if t is not None and t.is_alive():
            t.join(timeout)
        if self._buf:
            self.cat.journey_dropped.labels("shutdown").inc(len(self._buf))
            _log.warning("obskit: %d order hops not written to the journey store at exit",
                         len(self._buf))
            self._buf.clear()
