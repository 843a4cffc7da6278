"""Order journeys: where every order has been, where it is now, and which ones are stuck or lost.

``obskit.record_stage()`` hands each hop to this package when ``journey_url`` is set
(``OBSKIT_JOURNEY_URL``). Three parts, one job each:

* ``_store``: the Redis layout and its scripts (write hops, read a journey, sweep);
* ``_writer``: takes hops off the caller's thread and writes them in batches;
* ``_sweeper``: one active per pipeline, turns the store into the stuck/lost gauges;
* ``_deadlines``: the stage deadline table.

``obskit orders show/stuck/lost`` (obskit.cli.orders) reads the same store.
"""

from __future__ import annotations

import logging
import os
import socket
from typing import TYPE_CHECKING, Any

from obskit.journey._deadlines import DEFAULT_DEADLINES, Deadline, Deadlines, parse_duration
from obskit.journey._store import (
    Hop,
    JourneyStore,
    OrderState,
    StageCount,
    StoreUnavailable,
    Waiting,
)

if TYPE_CHECKING:
    from obskit._config import Settings
    from obskit.journey._sweeper import Sweeper
    from obskit.journey._writer import JourneyWriter
    from obskit.metrics import Catalogue

__all__ = [
    "DEFAULT_DEADLINES",
    "Deadline",
    "Deadlines",
    "Hop",
    "JourneyStore",
    "OrderState",
    "StageCount",
    "StoreUnavailable",
    "Waiting",
    "open_store",
    "parse_duration",
    "status",
]

_log = logging.getLogger("obskit.journey")

# Global state department: the running writer and sweeper of this process (one per init()).
_running_writer: JourneyWriter | None = None
_running_sweeper: Sweeper | None = None
_service = "unknown_service"
_instance = ""
_status = "off: journey_url (OBSKIT_JOURNEY_URL) is not set"


def open_store(settings: Settings) -> JourneyStore:
    """The store ``settings`` point at (``journey_url`` must be set)."""
    return JourneyStore(settings.journey_url, settings.journey_prefix,
                        retention=settings.journey_retention,
                        finished_ttl=settings.journey_finished_ttl,
                        max_orders=settings.journey_max_orders)


def start(settings: Settings, cat: Catalogue) -> None:
    """Called by ``obskit.init()``: start the writer (lazily, on the first hop) and the sweeper.

    Nothing here touches the network: a store that is down shows up as counted write errors."""
    global _running_writer, _running_sweeper, _service, _instance, _status
    if not settings.journey_url:
        _status = "off: journey_url (OBSKIT_JOURNEY_URL) is not set"
        return
    try:
        import redis  # noqa: F401
    except ImportError:
        _status = "off: the redis package is missing; pip install 'obskit[journey]'"
        _log.warning("obskit: journey_url is set but %s", _status[5:])
        return
    from obskit.journey._sweeper import Sweeper
    from obskit.journey._writer import JourneyWriter

    store = open_store(settings)
    _service = str(settings.service_name)
    _instance = f"{socket.gethostname()}:{os.getpid()}"
    _running_writer = JourneyWriter(store, cat)
    if settings.journey_sweep:
        sweeper_store = open_store(settings)  # its own connection: a slow sweep delays no write
        _running_sweeper = Sweeper(sweeper_store, cat, settings.stage_deadlines,
                           interval=settings.journey_sweep_interval)
        _running_sweeper.start()
    from obskit._config import safe_url

    _status = (f"on: {safe_url(store.url)} prefix {store.prefix!r}, sweeper "
               f"{'on' if _running_sweeper else 'off'}")


def stop(timeout: float = 3.0) -> None:
    global _running_writer, _running_sweeper, _status
    writer, sweeper = _running_writer, _running_sweeper
    _running_writer = _running_sweeper = None
    if sweeper is not None:
        sweeper.stop(timeout)
        sweeper.store.close()
    if writer is not None:
        writer.stop(timeout)
        writer.store.close()
    _status = "off: obskit.shutdown() was called"


def restart_after_fork(settings: Settings, cat: Catalogue) -> None:
    """A forked child has no writer or sweeper thread: give it its own."""
    global _running_writer, _running_sweeper
    _running_writer = _running_sweeper = None
    start(settings, cat)


def record(order_id: str, stage: str, channel: str, at: float, trace_id: str | None,
           detail: dict[str, Any] | None) -> None:
    """The hot path (``record_stage``): one object and a deque append."""
    writer = _running_writer
    if writer is None:
        return
    if detail:
        detail = {str(k): str(v)[:200] for k, v in list(detail.items())[:10]}
    writer.submit(Hop(order_id, stage, channel, at, _service, _instance, trace_id,
                      detail or None))


def flush(timeout: float = 5.0) -> bool:
    """Wait until the hops recorded so far are in the store (tests, and before a CLI exits)."""
    writer = _running_writer
    return True if writer is None else writer.flush(timeout)


def status() -> dict[str, Any]:
    """What ``obskit doctor`` shows: on or off and why, and the sweeper's role."""
    out: dict[str, Any] = {"state": _status}
    if _running_writer is not None:
        out["pending_hops"] = _running_writer.pending
    if _running_sweeper is not None:
        out["sweeper"] = "active" if _running_sweeper.active else "standby"
    return out
