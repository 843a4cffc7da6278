"""The journey store in Redis: every hop of every order, and where each unfinished order is now.

Keys (``P`` is the prefix, default ``obskit``; the ``{journey}`` hash tag keeps them in one Redis
Cluster slot so the scripts may touch several)::

    P:{journey}:h:<order_id>          list   the hops, JSON, oldest first (at most max_hops)
    P:{journey}:o:<order_id>          hash   stage, channel, since, rank, kind, n:<stage> counts
    P:{journey}:s:<stage>|<channel>   zset   unfinished orders in that stage -> entered at
    P:{journey}:stages                set    the <stage>|<channel> pairs seen
    P:{journey}:active                zset   unfinished orders -> last hop at (size cap, retention)
    P:{journey}:lost                  zset   orders declared lost -> when (counted once each)
    P:{journey}:sweeper               string the active sweeper (a lease)
    P:{journey}:deadlines             string the deadline overrides the active sweeper uses

Where an order *is* does not depend on the order hops arrive in: hops are written in batches by
several processes, so the MES's ``received`` may land before the relay's ``published``. The
state moves forward by stage rank (accepted < stored < published < received < MES stages),
by time among MES stages, never out of ``done``/``failed``, and out of ``dead_lettered`` only by a
later hop (a replay).
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

import orjson

from obskit._config import safe_url
from obskit.journey._deadlines import Deadlines

__all__ = ["Hop", "JourneyStore", "OrderState", "StageCount", "StoreUnavailable", "Waiting"]

#: Rank of the hand-off stages; any other stage is an MES stage between received and the end.
_RANKS = {"accepted": 0, "stored": 1, "published": 2, "received": 3}
_MES_RANK = 4
_FINAL = frozenset({"done", "failed"})
_DEAD = "dead_lettered"
_SEP = "|"


class StoreUnavailable(RuntimeError):
    """The journey store cannot be reached (the message names the URL, password masked)."""


class Hop(NamedTuple):
    """One ``record_stage()`` call, as the journey keeps it (a tuple: made on the hot path)."""

    order_id: str
    stage: str
    channel: str
    at: float  # Unix time
    service: str
    instance: str
    trace_id: str | None = None
    detail: dict[str, str] | None = None

    def to_json(self) -> str:
        d: dict[str, Any] = {"stage": self.stage, "channel": self.channel, "at": self.at,
                             "service": self.service, "instance": self.instance}
        if self.trace_id:
            d["trace_id"] = self.trace_id
        if self.detail:
            d["detail"] = self.detail
        return orjson.dumps(d).decode()

    @classmethod
    def from_json(cls, order_id: str, text: str | bytes) -> Hop:
        d = json.loads(text)
        return cls(order_id, str(d.get("stage")), str(d.get("channel")), float(d.get("at", 0)),
                   str(d.get("service", "")), str(d.get("instance", "")), d.get("trace_id"),
                   d.get("detail"))


@dataclass(frozen=True, slots=True)
class OrderState:
    order_id: str
    stage: str
    channel: str
    since: float
    terminal: bool
    lost_at: float | None


@dataclass(frozen=True, slots=True)
class Waiting:
    """An unfinished order waiting in a stage (``obskit orders stuck/lost``)."""

    order_id: str
    stage: str
    channel: str
    since: float
    age: float
    lost: bool


@dataclass(frozen=True, slots=True)
class StageCount:
    """One sweep's figures for a (stage, channel)."""

    stage: str
    channel: str
    in_stage: int
    stuck: int
    lost: int
    oldest_age: float
    newly_lost: int


class WriteResult(NamedTuple):
    """What the store learnt from one hop: drives the per-stage duration and repeat metrics."""

    hop: Hop
    channel: str  # the order's channel (a hop recorded without one takes the order's)
    repeated: bool  # the order reached this stage before (not after a dead letter: a replay)
    left_stage: str | None  # the stage this hop moved the order out of
    left_after: float  # seconds spent in left_stage
    found: bool  # the order had been declared lost and moved again


# One call per batch. KEYS[1] = key base. ARGV = ttl_active, ttl_finished, max_hops, and the
# batch as one JSON array of [id, stage, channel, at, rank, kind (mid|final|dead), hop json]
# (one argument and one reply string: redis-py's per-argument packing and reply parsing cost
# more than the script). Returns a JSON array with one entry per hop worth reporting:
# [index (0-based), repeated 0/1, stage left or "", seconds in it, found 0/1, channel].
_WRITE = """
local base = KEYS[1]
local ttl_active, ttl_done, max_hops = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local batch = cjson.decode(ARGV[4])
local out = {}
for i, h in ipairs(batch) do
  local id, stage, ch, at, rank, kind, hop = h[1], h[2], h[3], h[4], h[5], h[6], h[7]
  local okey, hkey = base .. 'o:' .. id, base .. 'h:' .. id
  local cur = redis.call('HMGET', okey, 'stage', 'channel', 'since', 'rank', 'kind')
  local cstage, cch, ckind = cur[1], cur[2], cur[5]
  local csince, crank = tonumber(cur[3]), tonumber(cur[4])
  if ch == 'unknown' and cch then ch = cch end
  local seen = redis.call('HINCRBY', okey, 'n:' .. stage, 1)
  local repeated = 0
  if seen > 1 and ckind ~= 'dead' then repeated = 1 end
  redis.call('RPUSH', hkey, hop)
  redis.call('LTRIM', hkey, -max_hops, -1)
  local move
  if not cstage then move = true
  elseif ckind == 'final' then move = false
  elseif ckind == 'dead' then move = at > csince
  elseif rank ~= crank then move = rank > crank
  else move = at >= csince end
  local left, dur, found = '', 0, 0
  if move then
    if cstage then
      redis.call('ZREM', base .. 's:' .. cstage .. '|' .. cch, id)
      if cstage ~= stage then left = cstage; dur = math.max(0, at - csince) end
    end
    redis.call('HSET', okey, 'stage', stage, 'channel', ch, 'since', string.format('%.6f', at),
               'rank', rank, 'kind', kind)
    if redis.call('ZREM', base .. 'lost', id) == 1 then found = 1 end
    if kind == 'mid' then
      redis.call('ZADD', base .. 's:' .. stage .. '|' .. ch, at, id)
      redis.call('SADD', base .. 'stages', stage .. '|' .. ch)
      redis.call('ZADD', base .. 'active', 'GT', at, id)
      redis.call('EXPIRE', okey, ttl_active)
      redis.call('EXPIRE', hkey, ttl_active)
    else
      redis.call('ZREM', base .. 'active', id)
      redis.call('EXPIRE', okey, ttl_done)
      redis.call('EXPIRE', hkey, ttl_done)
    end
  else
    if ckind == 'mid' then redis.call('ZADD', base .. 'active', 'GT', at, id) end
    if redis.call('TTL', hkey) < 0 then redis.call('EXPIRE', hkey, ttl_done) end
    if redis.call('TTL', okey) < 0 then redis.call('EXPIRE', okey, ttl_done) end
  end
  if repeated == 1 or left ~= '' or found == 1 then
    out[#out + 1] = {i - 1, repeated, left, dur, found, ch}
  end
end
if #out == 0 then return '[]' end
return cjson.encode(out)
"""

# KEYS[1] = key base. ARGV = now, limit, then 2 per member: member, lost cutoff. Declares the
# orders past their lost deadline lost (once each); returns how many were new, per member.
_MARK_LOST = """
local base, now, limit = KEYS[1], ARGV[1], tonumber(ARGV[2])
local out = {}
for i = 3, #ARGV, 2 do
  local ids = redis.call('ZRANGEBYSCORE', base .. 's:' .. ARGV[i], '-inf', ARGV[i+1],
                         'LIMIT', 0, limit)
  local new = 0
  for _, id in ipairs(ids) do new = new + redis.call('ZADD', base .. 'lost', 'NX', now, id) end
  out[#out + 1] = new
end
return out
"""

# KEYS[1] = key base. ARGV = oldest kept (Unix time), max orders. Forgets unfinished orders past
# the retention and the oldest beyond the size cap; returns how many were forgotten.
_PRUNE = """
local base, oldest, cap = KEYS[1], ARGV[1], tonumber(ARGV[2])
local gone = redis.call('ZRANGEBYSCORE', base .. 'active', '-inf', '(' .. oldest, 'LIMIT', 0, 10000)
local excess = redis.call('ZCARD', base .. 'active') - #gone - cap
if excess > 0 then
  local more = redis.call('ZRANGE', base .. 'active', #gone, #gone + math.min(excess, 10000) - 1)
  for _, id in ipairs(more) do gone[#gone + 1] = id end
end
for _, id in ipairs(gone) do
  local cur = redis.call('HMGET', base .. 'o:' .. id, 'stage', 'channel')
  if cur[1] then redis.call('ZREM', base .. 's:' .. cur[1] .. '|' .. cur[2], id) end
  redis.call('ZREM', base .. 'active', id)
  redis.call('ZREM', base .. 'lost', id)
  redis.call('DEL', base .. 'o:' .. id, base .. 'h:' .. id)
end
for _, m in ipairs(redis.call('SMEMBERS', base .. 'stages')) do
  redis.call('ZREMRANGEBYSCORE', base .. 's:' .. m, '-inf', '(' .. oldest)
end
redis.call('ZREMRANGEBYSCORE', base .. 'lost', '-inf', '(' .. oldest)
return #gone
"""

_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], ARGV[2]); return 1
end
return redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) and 1 or 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


def _rank(stage: str) -> int:
    return _RANKS.get(stage, 9 if stage in _FINAL else 8 if stage == _DEAD else _MES_RANK)


def _kind(stage: str) -> str:
    return "final" if stage in _FINAL else "dead" if stage == _DEAD else "mid"


def _clean(name: str) -> str:
    return name.replace(_SEP, "_") or "unknown"


class JourneyStore:
    """Reads and writes journeys in Redis. Blocking (redis-py); the writer and sweeper call it
    from their own threads, the CLI directly. Every Redis failure is ``StoreUnavailable``."""

    def __init__(self, url: str, prefix: str = "obskit", *, retention: float = 7 * 86400,
                 finished_ttl: float = 86400, max_hops: int = 200,
                 max_orders: int = 1_000_000, timeout: float = 2.0) -> None:
        import redis

        self.url = url
        self.prefix = prefix
        self.base = f"{prefix}:{{journey}}:"
        self.retention = retention
        self.finished_ttl = finished_ttl
        self.max_hops = max_hops
        self.max_orders = max_orders
        self._errors: tuple[type[BaseException], ...] = (redis.RedisError, OSError)
        self._r = redis.Redis.from_url(url, socket_timeout=timeout,
                                       socket_connect_timeout=min(timeout, 1.0))
        self._write = self._r.register_script(_WRITE)
        self._mark_lost = self._r.register_script(_MARK_LOST)
        self._prune = self._r.register_script(_PRUNE)
        self._renew = self._r.register_script(_RENEW)
        self._release = self._r.register_script(_RELEASE)

    def close(self) -> None:
        try:
            self._r.close()
        except Exception:  # noqa: S110 - closing a dead connection is not news
            pass

    def _call(self, fn: Any, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except self._errors as exc:
            raise StoreUnavailable(
                f"journey store {safe_url(self.url)} unavailable: {type(exc).__name__}: {exc}"
            ) from exc

    def ping(self) -> None:
        self._call(self._r.ping)

    # --- writing -----------------------------------------------------------------------------
    def write(self, hops: Sequence[Hop]) -> list[WriteResult]:
        """Store ``hops``; returns what they taught (stages left, repeats, lost orders found)
        for the hops that taught something."""
        batch = [(h.order_id, _clean(h.stage), _clean(h.channel), h.at, _rank(h.stage),
                  _kind(h.stage), h.to_json()) for h in hops]
        raw = self._call(self._write, keys=[self.base],
                         args=[int(self.retention), int(self.finished_ttl), self.max_hops,
                               orjson.dumps(batch)])
        out = []
        for i, rep, left, dur, found, ch in orjson.loads(raw):
            out.append(WriteResult(hops[i], ch, bool(rep), left or None, float(dur),
                                   bool(found)))
        return out

    # --- reading -----------------------------------------------------------------------------
    def journey(self, order_id: str) -> tuple[OrderState | None, list[Hop]]:
        with self._r.pipeline(transaction=False) as pipe:
            pipe.hmget(self.base + "o:" + order_id, "stage", "channel", "since", "kind")
            pipe.lrange(self.base + "h:" + order_id, 0, -1)
            pipe.zscore(self.base + "lost", order_id)
            (stage, channel, since, kind), raw_hops, lost_at = self._call(pipe.execute)
        hops = sorted((Hop.from_json(order_id, h) for h in raw_hops), key=lambda h: h.at)
        if stage is None:
            return None, hops
        state = OrderState(order_id, stage.decode(), channel.decode(), float(since),
                           kind != b"mid", lost_at)
        return state, hops

    def members(self) -> list[tuple[str, str]]:
        raw = self._call(self._r.smembers, self.base + "stages")
        pairs = (m.decode().split(_SEP, 1) for m in raw)
        return sorted((p[0], p[1]) for p in pairs if len(p) == 2)

    def waiting(self, deadlines: Deadlines, *, now: float | None = None, stage: str | None = None,
                older_than: float | None = None, lost_only: bool = False,
                limit: int = 1000) -> list[Waiting]:
        """Unfinished orders past their stuck deadline (or ``older_than``; or, with
        ``lost_only``, past their lost deadline), oldest first."""
        now = time.time() if now is None else now
        pairs = [(s, c) for s, c in self.members() if stage is None or s == stage]
        with self._r.pipeline(transaction=False) as pipe:
            for s, c in pairs:
                d = deadlines.for_stage(s, c)
                wait = d.lost if lost_only else d.stuck if older_than is None else older_than
                pipe.zrangebyscore(f"{self.base}s:{s}{_SEP}{c}", "-inf", now - wait,
                                   start=0, num=limit, withscores=True)
            results = self._call(pipe.execute)
        out = []
        for (s, c), rows in zip(pairs, results, strict=True):
            lost_cut = now - deadlines.for_stage(s, c).lost
            for oid, since in rows:
                out.append(Waiting(oid.decode(), s, c, since, now - since, since <= lost_cut))
        out.sort(key=lambda w: w.since)
        return out[:limit]

    def published_deadlines(self) -> Deadlines | None:
        raw = self._call(self._r.get, self.base + "deadlines")
        if raw is None:
            return None
        return Deadlines.parse(json.loads(raw))

    # --- sweeping (the active sweeper only) ---------------------------------------------------
    def sweep(self, deadlines: Deadlines, now: float | None = None,
              limit: int = 10000) -> tuple[list[StageCount], int]:
        """Count every (stage, channel), declare newly lost orders, forget what is past the
        retention or the size cap. Returns the counts and how many orders were forgotten."""
        now = time.time() if now is None else now
        pairs = self.members()
        cuts = [(deadlines.for_stage(s, c), f"{self.base}s:{s}{_SEP}{c}") for s, c in pairs]
        args: list[Any] = [repr(now), limit]
        for (s, c), (d, _) in zip(pairs, cuts, strict=True):
            args += [f"{s}{_SEP}{c}", repr(now - d.lost)]
        newly = self._call(self._mark_lost, keys=[self.base], args=args) if pairs else []
        forgotten = int(self._call(self._prune, keys=[self.base],
                                   args=[repr(now - self.retention), self.max_orders]))
        with self._r.pipeline(transaction=False) as pipe:
            for d, key in cuts:
                pipe.zcard(key)
                pipe.zrange(key, 0, 0, withscores=True)
                pipe.zcount(key, "-inf", now - d.stuck)
                pipe.zcount(key, "-inf", now - d.lost)
            pipe.set(self.base + "deadlines", json.dumps(deadlines.as_dict()),
                     ex=int(self.retention))
            res = self._call(pipe.execute)
        counts = []
        for i, (s, c) in enumerate(pairs):
            n, oldest, stuck, lost = res[4 * i:4 * i + 4]
            age = now - oldest[0][1] if oldest else 0.0
            counts.append(StageCount(s, c, int(n), int(stuck), int(lost), max(0.0, age),
                                     int(newly[i])))
        return counts, forgotten

    def lead(self, owner: str, ttl_seconds: float) -> bool:
        """Take or keep the sweeper lease; True while ``owner`` holds it."""
        return bool(self._call(self._renew, keys=[self.base + "sweeper"],
                               args=[owner, int(ttl_seconds * 1000)]))

    def leader(self) -> str | None:
        raw = self._call(self._r.get, self.base + "sweeper")
        return None if raw is None else raw.decode()

    def resign(self, owner: str) -> None:
        self._call(self._release, keys=[self.base + "sweeper"], args=[owner])

    def delete_all(self) -> int:
        """Drop every key of this prefix (tests and benchmarks clean up with it)."""
        keys = self._call(lambda: list(self._r.scan_iter(self.base + "*", count=1000)))
        if keys:
            self._call(self._r.delete, *keys)
        return len(keys)
