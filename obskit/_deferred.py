"""Deferred work: what a hot path hands over, done a little later in batches, in order.

    server middleware ── defer(finished request) ─┐
    log pipeline ─────── put(rendered line) ──────┼─ queue ─ batch: run each item, apply the
                                                  │          increments they summed, then one
                                                  │          sink.write() of the lines
    a batch is taken by the flusher thread every FLUSH_INTERVAL, by the caller once MAX_PENDING
    items wait, by flush() (a metrics scrape, shutdown, exit) and before a fork.

A work item is an object with ``run(increments) -> str | None``: it does its bookkeeping (a
finished request's metrics) and returns a line for the sink or None. A plain ``str`` is a line
already. ``increments`` sums what the batch's items add to a metric child (a gauge's
``inc``/``dec``): one ``child.inc(total)`` per child after the items ran, where each would take
prometheus-client's lock and four calls (~0.4 µs); None when the item runs alone.
Lines and work share one queue, so a request's access line keeps its place among the lines
logged around it.

The *sink* is the process's log output (``obskit._logging`` sets it). Where it takes lines one at
a time (a terminal, a stream that is not a file, a closed writer) or where none is set (before
``init()``), work runs at once in the caller's thread, serialised with the batches.

Why batches: in a loaded server a ``write`` per line costs ~10 µs and a request's bookkeeping
~10 µs more when done inline than in a batch (it finds nothing in the CPU caches), where a deque
append costs next to nothing (docs/explanation/deferred-logging.md). A process killed with
SIGKILL can lose the last ``FLUSH_INTERVAL`` of output, as with any buffered stdout.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from typing import Any, Protocol

__all__ = [
    "FLUSH_INTERVAL", "MAX_PENDING", "Sink", "Work",
    "defer", "flush", "put", "run_now", "set_sink", "write_now",
]

FLUSH_INTERVAL = 0.1
MAX_PENDING = 256


class Work(Protocol):
    def run(self, increments: dict[Any, float] | None) -> str | None:
        """Do the deferred bookkeeping; the line to write, or None. Runs on whichever thread
        takes the batch: it must not rely on the caller's context (OTel context, contextvars).
        ``increments``: metric child -> amount, added with ``child.inc(amount)`` once the
        batch's items ran (``increments[child] = increments.get(child, 0) + amount``); None:
        the item runs alone, it applies its own."""


class Sink(Protocol):
    def batched(self) -> bool:
        """Whether lines may wait for a batch (a file, a pipe); False: each goes out at once."""

    def write(self, text: str) -> None:
        """Write ``text`` (lines, each ending in a newline) and flush it."""


_pending: deque[Any] = deque()  # lines (str) and work items
_lock = threading.RLock()  # one batch at a time; re-entrant: work may log (an internal error)
_sink: Sink | None = None
_paused = False  # tests: the flusher thread takes no batch (flush() still does)
#: This process's id, kept by the fork hook: ``os.getpid()`` is a system call (~0.2 µs), and every
#: queued item asks whether the flusher thread runs in this process.
_pid = os.getpid()
_flusher_pid = 0


def _run(work: Any, increments: dict[Any, float] | None = None) -> str | None:
    try:
        return work.run(increments)  # type: ignore[no-any-return]
    except Exception as exc:  # a bug in one item must not lose the other lines
        from obskit._internal import internal_error

        internal_error("deferred", exc)
        return None


def _apply(increments: dict[Any, float]) -> None:
    for child, amount in increments.items():
        if amount:
            try:
                child.inc(amount)
            except Exception as exc:  # pragma: no cover - a child that refuses: keep the rest
                from obskit._internal import internal_error

                internal_error("deferred.increments", exc)


def set_sink(sink: Sink | None) -> None:
    """Send lines to ``sink`` from now on; what waits is written to the previous one first."""
    global _sink
    with _lock:
        _write_pending(_sink)
        _sink = sink


def write_now(sink: Sink, text: str) -> None:
    """Write ``text`` to ``sink`` now, after what waits (a sink taking lines one at a time)."""
    with _lock:
        _write_pending(_sink)
        _write(sink, text)


def put(line: str) -> None:
    """Queue a rendered line for the next batch (the sink decided it may wait)."""
    _queue(line)


def defer(work: Work) -> None:
    """Run ``work.run()`` with the next batch, in order with what was queued before it; at once
    where the sink takes lines one at a time or there is no sink."""
    sink = _sink
    if sink is not None and sink.batched():
        _queue(work)
        return
    with _lock:
        _write_pending(sink)
        line = _run(work)
        if line is not None and sink is not None:
            _write(sink, line + "\n")


def run_now(work: Work) -> None:
    """Run ``work.run()`` in the caller's thread; its line goes out as any other log line."""
    line = _run(work)
    sink = _sink
    if line is not None and sink is not None:
        if sink.batched():
            _queue(line)
        else:
            write_now(sink, line + "\n")


def _queue(item: Any) -> None:
    pending = _pending
    pending.append(item)
    if _flusher_pid != _pid:  # first item, or first item after a fork
        _start_flusher()
    if len(pending) >= MAX_PENDING:  # the flusher is starved: take the batch here
        flush()


def flush() -> None:
    """Run and write everything queued now (a scrape reads the metrics it leaves)."""
    if not _pending:
        return
    with _lock:
        _write_pending(_sink)


def _write_pending(sink: Sink | None) -> None:
    """Run and write what is queued as one batch (caller holds the lock)."""
    pending = _pending
    if not pending:
        return
    popleft = pending.popleft
    lines = []
    increments: dict[Any, float] = {}
    for _ in range(len(pending)):  # others may append meanwhile: they wait for the next batch
        item = popleft()
        if item.__class__ is not str:
            item = _run(item, increments)
            if item is None:
                continue
        lines.append(item)
    if increments:  # before the lines: a scrape that took this batch reads them
        _apply(increments)
    if lines and sink is not None:
        _write(sink, "\n".join(lines) + "\n")


def _write(sink: Sink, text: str) -> None:
    try:
        sink.write(text)
    except (ValueError, OSError):  # a closed stream: drop the lines, keep the host running
        pass


def _start_flusher() -> None:
    global _flusher_pid
    with _lock:
        if _flusher_pid == _pid:
            return
        _flusher_pid = _pid
    threading.Thread(target=_flush_loop, name="obskit-deferred", daemon=True).start()


def _flush_loop() -> None:
    while True:
        time.sleep(FLUSH_INTERVAL)
        if not _paused:
            flush()


def _after_fork_in_child() -> None:
    """What was queued in the parent is the parent's; the lock may have been held."""
    global _pid, _lock
    _pid = os.getpid()
    _pending.clear()
    _lock = threading.RLock()


if hasattr(os, "register_at_fork"):  # a forked child must not repeat the parent's queued work
    os.register_at_fork(before=flush, after_in_child=_after_fork_in_child)
