"""Poll queue and DLQ depth from the management API into the catalogue's gauges."""

from __future__ import annotations

import asyncio
import fnmatch
from collections.abc import Sequence

from prometheus_client import CollectorRegistry

from ._management import ManagementClient
from ._telemetry import Telemetry, guarded

__all__ = ["QueueDepthPoller"]


class QueueDepthPoller:
    """Every ``interval`` seconds set ``messaging_queue_messages`` / ``_consumers`` per queue.

    ``patterns`` (fnmatch, default ``("orders.*",)``) bound the label values: only queues
    you name become series. A failed poll is logged and counted, never raised.
    """

    def __init__(self, management: ManagementClient | None = None, *, vhost: str = "/",
                 patterns: Sequence[str] = ("orders.*",), interval: float = 15.0,
                 registry: CollectorRegistry | None = None) -> None:
        self.management = management or ManagementClient()
        self.vhost = vhost
        self.patterns = tuple(patterns)
        self.interval = interval
        self._tm = Telemetry(None, registry)
        self._task: asyncio.Task[None] | None = None

    async def poll_once(self) -> dict[str, int]:
        """One poll; returns ``{queue: messages_ready}`` for the matching queues."""
        depths: dict[str, int] = {}
        m = self._tm.metrics
        for q in await self.management.queues(self.vhost):
            name = q["name"]
            if not any(fnmatch.fnmatchcase(name, p) for p in self.patterns):
                continue
            depths[name] = int(q.get("messages_ready") or 0)
            m.queue_messages.labels(name).set(depths[name])
            m.queue_consumers.labels(name).set(int(q.get("consumers") or 0))
        return depths

    def start(self) -> asyncio.Task[None]:
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._loop(), name="obskit-queue-depth-poller")
        return self._task

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    async def _loop(self) -> None:
        while True:
            try:
                await self.poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                with guarded():
                    self._tm.log.warning("queue depth poll failed", error=repr(exc))
            await asyncio.sleep(self.interval)
