"""Faults on purpose: the ways orders get lost, reproduced on demand to practise the hunt.

In the spirit of the OpenTelemetry demo's feature flags: each fault is off unless named, either
with ``orderflow demo --fault NAME[=RATE]`` or ``ORDERFLOW_FAULTS="NAME[=RATE],..."`` for the
long-running commands (``orderflow all`` hands the variable to its children). ``RATE`` is the
share of orders affected, 0..1; without it the fault's default applies.

An order is picked by a hash of the fault's name and the order id, not by chance: the same order
is hit in every process and on every redelivery (a stalled order stalls again on the worker that
takes it over), different faults pick different orders, and a test can tell in advance which
orders a rate hits (``picks``).

Each process that applies a fault says so at start (``announce``): a WARNING line
``fault injection ON`` and the gauge ``orderflow_fault_active{fault}`` = rate. With no fault set,
``hit`` is one dictionary lookup.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from orderflow.config import ENV_FAULTS, Settings


@dataclass(frozen=True, slots=True)
class Fault:
    name: str
    process: str  # the process that applies it: "relay" or "mes"
    default_rate: float
    stops_at: str  # the last stage an affected order reaches (obskit journey stage)
    alert: str  # the alert meant to catch it (docs/runbooks), or why none fires
    doc: str


FAULTS: Mapping[str, Fault] = MappingProxyType({f.name: f for f in (
    Fault("relay-drop", "relay", 0.05, "stored", "OrdersLost",
          "the relay deletes the outbox row as if the broker had confirmed it, without "
          "publishing: the order never reaches the broker"),
    Fault("mes-ack-drop", "mes", 0.05, "received", "OrdersLost",
          "an MES worker records `received`, then acknowledges the message without working"),
    Fault("mes-stall", "mes", 0.02, "priced", "OrdersStuck",
          "an MES worker hangs after `priced` for ORDERFLOW_FAULT_STALL_SECONDS, holding the "
          "message and one of its --concurrency slots"),
    Fault("poison", "relay", 0.02, "published", "DeadLetterQueueNotEmpty",
          "the relay publishes the order as truncated JSON: the MES cannot parse it and the "
          "message goes to orders.<channel>.dlq"),
    Fault("duplicate", "relay", 0.05, "done", "none: absorbed (OrdersProcessedTwice stays silent)",
          "the relay publishes the order twice with the same message id: two deliveries race; "
          "the MES claim (mes_claims) lets one worker produce the order, the twin is skipped"),
    Fault("slow-mes", "mes", 0.1, "done", "OrderStageSlow",
          "each MES stage of the order takes ORDERFLOW_FAULT_SLOW_SECONDS longer"),
)})

GAUGE_NAME = "orderflow_fault_active"
_active: dict[str, float] | None = None
_gauge: Any = None


class FaultSpecError(ValueError):
    """A fault list that cannot be read; the message names the culprit and the valid names."""


def parse(text: str) -> dict[str, float]:
    """``"relay-drop=0.1,poison"`` → ``{"relay-drop": 0.1, "poison": 0.02}`` (a name given twice:
    the last wins). Raises ``FaultSpecError`` for an unknown name or a rate outside 0..1."""
    out: dict[str, float] = {}
    for item in text.split(","):
        if item.strip():
            name, rate = parse_one(item)
            out[name] = rate
    return out


def parse_one(item: str) -> tuple[str, float]:
    """``"NAME"`` or ``"NAME=RATE"``; also the ``type=`` of ``orderflow demo --fault``."""
    name, sep, rate_text = (s.strip() for s in item.partition("="))
    fault = FAULTS.get(name)
    if fault is None:
        raise FaultSpecError(f"unknown fault {name!r}; valid: {', '.join(FAULTS)}")
    if not sep:
        return name, fault.default_rate
    try:
        rate = float(rate_text)
    except ValueError:
        rate = math.nan
    if not 0.0 <= rate <= 1.0:  # NaN fails too
        raise FaultSpecError(f"rate of fault {name!r} must be a number from 0 to 1 (the share "
                             f"of orders affected), got {rate_text!r}")
    return name, rate


def format_spec(faults: Mapping[str, float]) -> str:
    """The inverse of ``parse``: what ``ORDERFLOW_FAULTS`` holds."""
    return ",".join(f"{name}={rate:g}" for name, rate in faults.items())


def load(spec: str | None = None) -> Mapping[str, float]:
    """(Re)read the active faults: ``spec``, else ``ORDERFLOW_FAULTS`` through ``Settings``."""
    global _active
    try:
        _active = parse(Settings().faults if spec is None else spec)
    except FaultSpecError as exc:
        raise FaultSpecError(f"{ENV_FAULTS}: {exc}" if spec is None else str(exc)) from None
    return MappingProxyType(_active)


def active() -> Mapping[str, float]:
    """The faults of this process, read from the environment once."""
    return MappingProxyType(_active) if _active is not None else load()


def picks(name: str, key: str, rate: float) -> bool:
    """Whether a fault at ``rate`` picks the order ``key`` (deterministic, see the module doc)."""
    if rate >= 1.0:
        return True
    digest = hashlib.blake2b(f"{name}:{key}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") < rate * 2**64


def hit(name: str, key: str) -> bool:
    """Whether fault ``name`` strikes the order ``key`` here. Off: one lookup, False."""
    rate = (_active if _active is not None else active()).get(name)
    if not rate or not picks(name, key, rate):
        return False
    # The answer key for whoever hunts the loss: only with OBSKIT_LOG_LEVEL=DEBUG.
    _logger().debug("fault injected", fault=name)
    return True


def announce(process: str, *, metric: bool = True) -> dict[str, float]:
    """Log ``fault injection ON`` (WARNING) and set the gauge (unless ``metric=False``) for each
    active fault that ``process`` (``"relay"``, ``"mes"``, or ``"*"`` for all) applies; return
    them."""
    on = {n: r for n, r in active().items() if process in ("*", FAULTS[n].process)}
    for name, rate in on.items():
        fault = FAULTS[name]
        if metric:
            _fault_gauge().labels(name).set(rate)
        _logger().warning("fault injection ON", fault=name, rate=rate, stops_at=fault.stops_at,
                          effect=fault.doc)
    return on


def poisoned(payload: Any) -> bytes:
    """An order message cut in half, as a crashed writer would leave it: not JSON."""
    text = json.dumps(payload, default=str).encode()
    return text[: max(1, len(text) // 2)]


# obskit and prometheus-client only once a fault is on: every `orderflow` command imports this
# module (the --fault help), most never inject anything.
def _logger() -> Any:
    import obskit

    return obskit.get_logger("orderflow.faults")


def _fault_gauge() -> Any:
    global _gauge
    if _gauge is None:
        from prometheus_client import Gauge

        _gauge = Gauge(GAUGE_NAME, "Share of orders a fault injected on purpose affects "
                       "(ORDERFLOW_FAULTS), set by each process that applies it; absent = off.",
                       ["fault"], multiprocess_mode="livemax")
    return _gauge
