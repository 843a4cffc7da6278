"""Cache-aside for the MES dashboard: an in-process tier in front of Redis (through cashews).

The cached value is the serialized response body, so a hit is returned as it is: no decoding and
re-encoding per request. Two kinds of entries, as the company's plan asks:

* **per-status lists** live ``list_ttl`` seconds (60) from the moment they were read from the
  database, wherever they are held, and are never invalidated: managers accept a list that is up
  to a minute old, and the DB is spared the reads.
* **hot views** — the counts (summary) and the newest orders — are dropped on the two triggers, a
  new order and a status change. They are keyed under a *generation* number kept in Redis
  (``{prefix}:dash:gen``): invalidation is one ``INCR`` that every process sees, with no key scan,
  and a reader that loaded under an old generation stores its (maybe stale) result under a key
  nobody reads any more. Old generations expire by ``hot_ttl``.

Tiers: a lookup first tries this process's copy (a dict: no I/O, no await), then Redis (shared by
every ingress), then the database. For hot views the process trusts its copy of the generation for
``generation_poll`` seconds (0.1) before asking Redis again (the poller asks for all readers while
it runs) — another process's invalidation shows here within that plus one reload; an
invalidation made by this process shows at once.

Refresh-ahead: after a change the hot views read lately are reloaded at once, in the background,
instead of by their next reader (see ``_reloads``). For a change made in this process the first
reader of a view waits for its reload (read-your-writes) and the others get the previous copy
(``X-Cache: stale``) if it was loaded at most ``max_stale`` seconds ago; a change made elsewhere is
seen by a poller, reloaded under the new generation and switched in with it, so no reader waits.

A hit on this process's copy needs nothing asynchronous, so ``peek()`` answers it without an
``await``: the dashboard routes serve such hits before FastAPI's endpoint handling (its query
validation, Request and Response objects cost more than the rest of a hit). Each entry carries
its ``etag``, computed once when the body was loaded, not per request.

Redis down means slower, not broken: a hot-view lookup that cannot reach Redis loads from the DB
and is counted as ``cache_requests_total{result="error"}``. After a failure Redis is skipped for
``retry_after`` seconds (no timeout per request while it is down), and the first successful call
after an outage bumps the generation, because invalidations sent meanwhile were lost.
"""

from __future__ import annotations

import asyncio
import time
import zlib
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from cashews import Cache

import obskit
from obskit.metrics import catalogue, observe

if TYPE_CHECKING:
    from orderflow.config import Settings

T = TypeVar("T")
Result = Literal["hit", "stale", "miss", "error", "bypass"]
Loader = Callable[[], Awaitable[bytes]]

_log = obskit.get_logger("orderflow.cache")
_SYSTEM = "redis"
# Keys under v2 hold "<loaded_at> <body>" bytes; v1 held cashews-JSON dicts. A new namespace lets
# old and new ingress processes share one Redis during a rolling upgrade.
_VERSION = "v2"
# Bounds this process's copies: the views are few (summary, newest, 10 lists) but limit/offset
# come from the query string.
LOCAL_ENTRIES = 256


def etag_of(body: bytes) -> str:
    """The weak HTTP validator of a stored body: it changes with every load, because each body
    carries the time it was generated."""
    return f'W/"{zlib.crc32(body):08x}{len(body):x}"'


@dataclass(slots=True)
class Entry:
    """A stored response body and what comes with it."""

    body: bytes
    loaded_at: float  # time.time() when the database was read; travels with the body in Redis
    gen: int  # the generation it was loaded under (hot views), -1 for lists
    # Hot views only: what reloading it ahead of its readers needs (see _reloads), and when it
    # was last read (views nobody reads are not refreshed).
    name: str = ""
    key: str = ""
    loader: Loader | None = None
    read_at: float = 0.0
    # Once per load, not per request: a hit sends it as it is (see ``peek``).
    etag: str = field(init=False)

    def __post_init__(self) -> None:
        self.etag = etag_of(self.body)


class DashboardCache:
    """Cache-aside with hit/stale/miss/error/latency/invalidation metrics (obskit catalogue).

    ``enabled=False`` always loads from the DB (``result`` ``"bypass"``, not counted): the
    benchmark's uncached baseline.
    """

    def __init__(self, redis_url: str, *, prefix: str = "orderflow", list_ttl: float = 60.0,
                 hot_ttl: float = 60.0, enabled: bool = True, timeout: float = 0.5,
                 retry_after: float = 2.0, min_interval: float = 1.0,
                 generation_poll: float = 0.1, max_stale: float = 5.0) -> None:
        self.prefix = f"{prefix}:dash"
        self.list_ttl = list_ttl
        self.hot_ttl = hot_ttl
        self.enabled = enabled
        self.retry_after = retry_after
        self.min_interval = min_interval
        self.generation_poll = generation_poll
        self.max_stale = max_stale
        self._last_invalidation = -1e9
        self._trailing: asyncio.Task[None] | None = None
        self._cache = Cache(name=f"orderflow-dashboard-{id(self)}")
        # Only raw bytes we produced go through Redis (get_raw/set_raw): nothing read from it is
        # ever unpickled or evaluated.
        self._cache.setup(redis_url, suppress=False, socket_connect_timeout=timeout,
                          socket_timeout=timeout, client_name="orderflow-dashboard")
        self._down_until = 0.0
        self._was_down = False
        self._last_warning = 0.0
        self._local: dict[str, Entry] = {}
        self._inflight: dict[str, asyncio.Future[tuple[bytes, Result]]] = {}
        self._gen = 0
        self._gen_at = -1e9  # monotonic start of the lookup that gave ``_gen``
        self._gen_task: asyncio.Future[int] | None = None
        self._incrs = 0  # our own INCRs, so a slower lookup cannot roll ``_gen`` back
        # Refresh-ahead (see _reloads): the poller that watches the generation, the reloads our
        # own invalidations started, and the keys whose first reader waits for theirs.
        self._poller: asyncio.Task[None] | None = None
        self._last_hot_read = -1e9
        self._refreshes: set[asyncio.Future[Any]] = set()
        self._must_wait: set[str] = set()

    # --- public -----------------------------------------------------------------------------
    async def get_or_load(self, name: str, key: str, loader: Loader, *,
                          hot: bool) -> tuple[bytes, Result]:
        """The cached body of ``key``, else ``loader()`` stored for next time.

        ``name`` is the ``cache`` label (bounded: one per view). Returns the body and how it was
        served, for the ``X-Cache`` header.
        """
        if not self.enabled:
            return await loader(), "bypass"
        hit = self.peek(name, key, hot=hot)
        if hit is not None:
            return hit.body, "hit"
        # Not a hit on this process's copy: the generation may be due from Redis, a copy may be
        # reloading, Redis or the database may be read.
        requests = catalogue().cache_requests
        local_key = f"{'hot' if hot else 'list'}:{key}"
        entry = self._local.get(local_key)
        now = time.time()
        if not hot:
            return await self._fill(name, f"{self.prefix}:{_VERSION}:list:{key}", local_key,
                                    -1, loader, self.list_ttl)
        self._last_hot_read = mono = time.monotonic()
        self._ensure_poller()
        try:
            gen = await self._generation()
        except Exception as exc:
            self._failed("lookup", exc)
            requests.labels(name, "error").inc()
            return await loader(), "error"
        if entry is not None and entry.gen == gen and now < entry.loaded_at + self.hot_ttl:
            entry.read_at = mono  # the generation was due and had not moved
            requests.labels(name, "hit").inc()
            return entry.body, "hit"
        full_key = self._hot_key(gen, key)
        if full_key in self._inflight:
            if full_key in self._must_wait:
                # The first reader after this process's own change waits for the reload (it may
                # be the one who made the change); the ones after it get the previous copy.
                self._must_wait.discard(full_key)
            elif entry is not None and now - entry.loaded_at <= self.max_stale:
                entry.read_at = mono
                requests.labels(name, "stale").inc()
                return entry.body, "stale"
        return await self._fill(name, full_key, local_key, gen, loader, self.hot_ttl, key)

    def peek(self, name: str, key: str, *, hot: bool) -> Entry | None:
        """The entry ``get_or_load`` would answer as a ``"hit"`` from this process's copy right
        now, counted as one, else None (and nothing counted: ask ``get_or_load``).

        Synchronous: no I/O, no await. A hot view is a hit only while the generation is known
        without asking Redis (``generation_poll``, or the poller running).
        """
        if not self.enabled:
            return None
        entry = self._local.get(f"{'hot' if hot else 'list'}:{key}")
        if entry is None:
            return None
        now = time.time()
        if not hot:
            if now >= entry.loaded_at + self.list_ttl:
                return None
        else:
            mono = time.monotonic()
            if (entry.gen != self._known_generation(mono)
                    or now >= entry.loaded_at + self.hot_ttl):
                return None
            self._last_hot_read = entry.read_at = mono
            self._ensure_poller()
        catalogue().cache_requests.labels(name, "hit").inc()
        return entry

    async def invalidate(self, trigger: str) -> None:
        """Drop every hot view (counts, newest orders) in all processes. Never raises.

        At most one invalidation per ``min_interval`` seconds: the first trigger after a quiet
        spell acts at once, the ones that follow within the interval are folded into one more
        at its end. Under load (hundreds of status changes a second) that keeps the hot views
        cached between invalidations instead of missing on every read.
        """
        if not self.enabled:
            return
        wait = self._last_invalidation + self.min_interval - time.monotonic()
        if wait <= 0:
            self._last_invalidation = time.monotonic()
            await self._incr_generation(trigger)
        elif self._trailing is None:
            self._trailing = asyncio.get_running_loop().create_task(self._later(wait, trigger))

    async def close(self) -> None:
        for task in (self._trailing, self._poller, *self._refreshes):
            if task is not None:
                task.cancel()
        try:
            await self._cache.close()
        except Exception:  # closing a client whose server is gone
            pass

    # --- machinery --------------------------------------------------------------------------
    @property
    def _gen_key(self) -> str:
        return f"{self.prefix}:gen"

    async def _later(self, wait: float, trigger: str) -> None:
        try:
            await asyncio.sleep(wait)
            self._last_invalidation = time.monotonic()
        finally:
            self._trailing = None
        await self._incr_generation(trigger)

    async def _incr_generation(self, trigger: str) -> None:
        started = time.perf_counter()
        try:
            self._set_gen(await self._call(self._cache.incr(self._gen_key, expire=None)))
            catalogue().cache_invalidations.labels("dashboard", trigger).inc()
            self._refresh_own(self._gen)
        except Exception as exc:
            self._failed("invalidate", exc)
        finally:
            observe(catalogue().cache_duration.labels(_SYSTEM, "invalidate"),
                    time.perf_counter() - started)

    def _set_gen(self, gen: int) -> None:
        self._incrs += 1
        self._gen, self._gen_at = int(gen), time.monotonic()

    def _hot_key(self, gen: int, key: str) -> str:
        return f"{self.prefix}:{_VERSION}:hot:{gen}:{key}"

    async def _generation(self) -> int:
        """The current generation; asks Redis at most once per ``generation_poll`` seconds.

        While the poller runs readers never ask: it keeps ``_gen_at`` fresh (a grace of a few
        poll intervals covers its round trips).
        """
        gen = self._known_generation(time.monotonic())
        if gen is not None:
            return gen
        if self._gen_task is None:  # one lookup for all the readers that arrive meanwhile
            self._gen_task = asyncio.ensure_future(self._fetch_generation())
            self._gen_task.add_done_callback(lambda t: t.cancelled() or t.exception())
        return await asyncio.shield(self._gen_task)

    def _known_generation(self, now: float) -> int | None:
        """The generation if it needs no lookup now (``now``: monotonic), else None."""
        age = now - self._gen_at
        if age < self.generation_poll or (
                age < 3 * self.generation_poll + 0.25
                and self._poller is not None and not self._poller.done()):
            return self._gen
        return None

    async def _fetch_generation(self) -> int:
        incrs, asked_at, started = self._incrs, time.monotonic(), time.perf_counter()
        try:
            raw = await self._call(self._cache.get_raw(self._gen_key))
        finally:
            self._gen_task = None
            observe(catalogue().cache_duration.labels(_SYSTEM, "lookup"),
                    time.perf_counter() - started)
        if incrs != self._incrs:  # we INCRed meanwhile: ours is newer than what we read
            return self._gen
        self._gen, self._gen_at = int(raw or 0), asked_at
        return self._gen

    async def _fill(self, name: str, full_key: str, local_key: str, gen: int, loader: Loader,
                    ttl: float, key: str = "") -> tuple[bytes, Result]:
        # Single flight per process: N readers missing the same key make one Redis lookup and
        # at most one query, and are counted as whatever that one got.
        requests = catalogue().cache_requests
        pending = self._inflight.get(full_key)
        if pending is not None:
            body, result = await asyncio.shield(pending)
            requests.labels(name, result).inc()
            return body, result
        entry, result = await self._load(name, full_key, gen, loader, ttl, key)
        self._store(local_key, entry)
        requests.labels(name, result).inc()
        return entry.body, result

    async def _load(self, name: str, full_key: str, gen: int, loader: Loader, ttl: float,
                    key: str, fut: asyncio.Future[tuple[bytes, Result]] | None = None
                    ) -> tuple[Entry, Result]:
        """Redis, else the database, as the one in-flight load of ``full_key``.

        ``fut``: the future already registered for ``full_key`` (a reload started ahead);
        otherwise one is registered before the first await.
        """
        if fut is None:
            fut = asyncio.get_running_loop().create_future()
            self._inflight[full_key] = fut
        try:
            entry, result = await self._redis_or_load(full_key, gen, loader, ttl)
        except BaseException as exc:
            fut.set_exception(exc)
            fut.exception()  # mark retrieved: waiters may be none
            raise
        else:
            fut.set_result((entry.body, result))
        finally:
            self._inflight.pop(full_key, None)
            self._must_wait.discard(full_key)
        if gen >= 0:  # a hot view: remember how to refresh it ahead of its readers
            entry.name, entry.key, entry.loader = name, key, loader
            entry.read_at = time.monotonic()
        return entry, result

    def _store(self, local_key: str, entry: Entry) -> None:
        self._local.pop(local_key, None)
        if len(self._local) >= LOCAL_ENTRIES:
            del self._local[next(iter(self._local))]  # the oldest
        self._local[local_key] = entry

    # --- refresh-ahead ----------------------------------------------------------------------
    def _reloads(self, gen: int, must_wait: bool) -> list[tuple[str, asyncio.Task[Any]]]:
        """Start reloading, under ``gen``, the hot views read in the last ``hot_ttl`` seconds.

        After a change the views are reloaded at once, in the background, rather than by their
        next reader:

        * a change made in this process (``_refresh_own``): the generation moves at once; the
          first reader of a view waits for its reload (read-your-writes), the ones after it get
          the previous copy until it is done (stale-while-revalidate);
        * a change made elsewhere, seen by the poller (``_poll_once``): the views are reloaded
          under the new generation first and switched in together with it, so readers keep
          getting the previous copy as a hit and never wait. Such a change shows here within
          ``generation_poll`` plus one reload.
        """
        mono = time.monotonic()
        loop = asyncio.get_running_loop()
        starts = []
        for local_key, e in list(self._local.items()):
            if e.loader is None or e.gen == gen or mono - e.read_at > self.hot_ttl:
                continue
            full_key = self._hot_key(gen, e.key)
            if full_key in self._inflight:
                continue
            # Registered now, not when the task first runs: a reader arriving in between must
            # find the reload in flight (and wait for the same future).
            fut: asyncio.Future[tuple[bytes, Result]] = loop.create_future()
            self._inflight[full_key] = fut
            task = loop.create_task(self._reload(local_key, e, full_key, gen, fut, must_wait))
            if must_wait:
                self._must_wait.add(full_key)
            self._refreshes.add(task)
            task.add_done_callback(self._refreshes.discard)
            starts.append((local_key, task))
        return starts

    async def _reload(self, local_key: str, old: Entry, full_key: str, gen: int,
                      fut: asyncio.Future[tuple[bytes, Result]], store: bool
                      ) -> tuple[Entry, Result]:
        assert old.loader is not None
        entry, result = await self._load(old.name, full_key, gen, old.loader, self.hot_ttl,
                                         old.key, fut)
        entry.read_at = old.read_at
        if store and entry.gen == self._gen:  # not overtaken by a newer change meanwhile
            # Stored before the readers waiting on ``fut`` resume (they run after this step).
            self._store(local_key, entry)
        return entry, result

    def _refresh_own(self, gen: int) -> None:
        for _, task in self._reloads(gen, must_wait=True):
            # A failed reload: the next reader loads the view itself (and sees the error).
            task.add_done_callback(lambda t: t.cancelled() or t.exception())

    def _ensure_poller(self) -> None:
        if self.generation_poll > 0 and (self._poller is None or self._poller.done()):
            self._poller = asyncio.get_running_loop().create_task(self._poll())

    async def _poll(self) -> None:
        """Watch the generation while hot views are read; reload them ahead of a change."""
        while time.monotonic() - self._last_hot_read < self.hot_ttl:
            await asyncio.sleep(self.generation_poll)
            if time.monotonic() < self._down_until:
                continue  # readers load from the database meanwhile
            try:
                await self._poll_once()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self._failed("lookup", exc)

    async def _poll_once(self) -> None:
        incrs, asked_at, started = self._incrs, time.monotonic(), time.perf_counter()
        try:
            gen = int(await self._call(self._cache.get_raw(self._gen_key)) or 0)
        finally:
            observe(catalogue().cache_duration.labels(_SYSTEM, "lookup"),
                    time.perf_counter() - started)
        if incrs != self._incrs:  # we INCRed meanwhile: ours is newer than what we read
            return
        if gen != self._gen:
            starts = self._reloads(gen, must_wait=False)
            if starts:
                await asyncio.gather(*(t for _, t in starts), return_exceptions=True)
            if incrs != self._incrs:
                return  # an own change overtook this one: its reloads are the newer ones
            for local_key, task in starts:
                if not task.cancelled() and task.exception() is None:
                    self._store(local_key, task.result()[0])
            self._gen = gen  # switched together with the reloaded views: no reader waits
        self._gen_at = asked_at

    async def _redis_or_load(self, full_key: str, gen: int, loader: Loader,
                             ttl: float) -> tuple[Entry, Result]:
        started = time.perf_counter()
        raw: bytes | None = None
        reachable = True
        try:
            raw = await self._call(self._cache.get_raw(full_key))
        except Exception as exc:
            self._failed("lookup", exc)
            reachable = False
        finally:
            observe(catalogue().cache_duration.labels(_SYSTEM, "lookup"),
                    time.perf_counter() - started)
        if raw:
            head, _, body = raw.partition(b" ")
            try:
                loaded_at = float(head)
            except ValueError:  # not ours: reload and overwrite
                loaded_at = 0.0
            if time.time() < loaded_at + ttl:
                return Entry(body, loaded_at, gen), "hit"
        loaded_at = time.time()  # before the query: the TTL never outlives the data's age
        entry = Entry(await loader(), loaded_at, gen)
        if not reachable:
            return entry, "error"
        started = time.perf_counter()
        try:
            await self._call(self._cache.set_raw(
                full_key, b"%.3f %b" % (loaded_at, entry.body), px=max(1, int(ttl * 1000))))
        except Exception as exc:
            self._failed("store", exc)
        finally:
            observe(catalogue().cache_duration.labels(_SYSTEM, "store"),
                    time.perf_counter() - started)
        return entry, "miss"

    async def _call(self, awaitable: Awaitable[T]) -> T:
        if time.monotonic() < self._down_until:
            if asyncio.iscoroutine(awaitable):
                awaitable.close()  # never awaited: no "coroutine was never awaited" warning
            raise ConnectionError("redis marked down; retrying later")
        result = await awaitable
        if self._was_down:
            # Invalidations sent while Redis was unreachable are lost: drop all hot views now.
            self._was_down = False
            self._set_gen(await self._cache.incr(self._gen_key, expire=None))
            catalogue().cache_invalidations.labels("dashboard", "redis_recovered").inc()
        return result

    def _failed(self, operation: str, exc: Exception) -> None:
        now = time.monotonic()
        if now >= self._down_until:  # a real failure, not the short-circuit
            self._down_until = now + self.retry_after
            self._was_down = True
        if now - self._last_warning > 30:  # one line per outage, not one per request
            self._last_warning = now
            _log.warning("dashboard cache unavailable, reading from the database",
                         operation=operation, error=repr(exc))


def from_settings(settings: Settings) -> DashboardCache:
    """A cache configured from ``Settings`` (the ``ORDERFLOW_DASHBOARD_*`` variables)."""
    return DashboardCache(settings.redis_url, prefix=settings.redis_prefix,
                          list_ttl=settings.dashboard_list_ttl,
                          hot_ttl=settings.dashboard_hot_ttl, enabled=settings.dashboard_cache,
                          min_interval=settings.dashboard_invalidate_interval,
                          generation_poll=settings.dashboard_generation_poll,
                          max_stale=settings.dashboard_max_stale)


# --- the process-wide cache the event hooks invalidate ---------------------------------------
_default: DashboardCache | None = None


def default_cache() -> DashboardCache:
    """The cache shared by the dashboard routes and the event hooks of this process."""
    global _default
    if _default is None:
        from orderflow import config

        _default = from_settings(config.load())
    return _default


def set_default(cache: DashboardCache | None) -> None:
    """Replace the process-wide cache (tests, benchmarks)."""
    global _default
    _default = cache


async def on_order_created(event: dict[str, Any]) -> None:
    await default_cache().invalidate("order_created")


async def on_status_changed(event: dict[str, Any]) -> None:
    await default_cache().invalidate("status_changed")
