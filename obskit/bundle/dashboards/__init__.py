"""The bundle's Grafana dashboards, generated from ``Params`` (one module per dashboard).

Each module's ``build(p)`` returns a ``Board``; its panels carry their own expectation (does the
panel show data on a healthy system?), which the live query test and the on-call engineer read.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from obskit.bundle._params import Params
from obskit.bundle._queries import Expect, Query, dashboard_queries

from . import api, cache, find_order, mes, order_flow, rabbitmq, telemetry
from ._common import Board

__all__ = ["DASHBOARDS", "EXPECTATIONS", "all_queries", "build_all", "build_all_json"]

#: File name -> builder, in the order the dashboards are listed.
DASHBOARDS: dict[str, Callable[[Params], Board]] = {
    f"{m.NAME}.json": m.build
    for m in (order_flow, mes, api, rabbitmq, cache, find_order, telemetry)
}


def build_all(p: Params) -> dict[str, dict[str, Any]]:
    """File name -> Grafana dashboard model (deterministic for the same ``p``)."""
    return {name: build(p).build() for name, build in DASHBOARDS.items()}


def build_all_json(p: Params) -> dict[str, str]:
    """File name -> the dashboard's JSON as the bundle ships it (compose files and Kubernetes
    ConfigMaps alike)."""
    return {name: json.dumps(model, indent=2, sort_keys=True) + "\n"
            for name, model in build_all(p).items()}


def _expectations() -> dict[str, dict[str, Expect]]:
    p = Params()  # titles and expectations do not depend on the parameters
    return {name: build(p).expected() for name, build in DASHBOARDS.items()}


#: File name -> {panel title: expectation} for the panels that are empty on a healthy system.
EXPECTATIONS: dict[str, dict[str, Expect]] = _expectations()


def all_queries(p: Params) -> list[Query]:
    """Every query of every dashboard (panels and query variables), with its expectation."""
    out: list[Query] = []
    for name, model in build_all(p).items():
        out.extend(dashboard_queries(name, model, EXPECTATIONS.get(name, {})))
    return out
