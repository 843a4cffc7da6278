"""deploy/capacity.py and its figures: the KEDA targets in deploy/kubernetes/ are the model's,
its derived figures are what the code does, and the replays show what the design promises."""

from __future__ import annotations

import importlib.util
import inspect
import json
import math
import re
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
import yaml

from obskit.bundle import Params

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "deploy" / "capacity-figures.json"


@pytest.fixture(scope="module")
def capacity() -> ModuleType:
    spec = importlib.util.spec_from_file_location("capacity", ROOT / "deploy" / "capacity.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules["capacity"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def figures() -> dict[str, Any]:
    return dict(json.loads(FIGURES.read_text())["figures"])


def test_every_figure_names_its_source_and_kind(figures: dict[str, Any]) -> None:
    for name, f in figures.items():
        assert isinstance(f["value"], int | float), name
        assert f["kind"] in {"measured", "derived", "assumed"}, name
        assert len(f["source"]) > 20 and f["unit"], name


def test_derived_figures_are_what_the_code_does(figures: dict[str, Any]) -> None:
    from orderflow import mes
    from orderflow.config import Settings

    produce = inspect.getsource(mes.Worker._produce)
    # The statuses of an order that goes all the way (not "failed").
    published = re.findall(r'self\.emit\(order, "(\w+)"', produce)
    assert len([s for s in published if s != "failed"]) == \
        figures["status_events_per_order"]["value"]
    assert produce.count("await asyncio.sleep(delay)") == figures["mes_stages_waited"]["value"]
    assert Settings().mes_stage_delay == figures["mes_stage_seconds"]["value"]
    ingress = next(yaml.safe_load_all(
        (ROOT / "deploy/kubernetes/orderflow/ingress.yaml").read_text()))
    request = ingress["spec"]["template"]["spec"]["containers"][0]["resources"]["requests"]["cpu"]
    assert float(request.removesuffix("m")) / 1000 == figures["ingress_cpu_request_cores"]["value"]
    hpa = [d for d in yaml.safe_load_all(
        (ROOT / "deploy/kubernetes/orderflow/ingress.yaml").read_text())
        if d["kind"] == "HorizontalPodAutoscaler"][0]
    target = hpa["spec"]["metrics"][0]["resource"]["target"]["averageUtilization"]
    assert target / 100 == figures["ingress_hpa_cpu_target"]["value"]
    assert Params().keda_polling_interval == figures["hpa_sync_seconds"]["value"]


def test_keda_targets_are_the_models(capacity: ModuleType) -> None:
    p = Params()
    model = capacity.Model.load()
    assert model.keda_targets(p.mes_concurrency) == p.queue_targets(), \
        "deploy/capacity.py derives other KEDA targets: set mes_queue_targets to them"
    # At or below a pod's slots: a steady load keeps its pods (no sawtooth).
    assert all(t <= p.mes_concurrency for t in p.queue_targets().values())


def test_steady_load_waits_for_nothing(capacity: ModuleType) -> None:
    model, scaling = capacity.Model.load(), capacity.Scaling.from_bundle()
    base = model.f["today_orders_per_second"]
    rows = capacity.simulate(model, scaling, lambda t: {"orders.b2c": base * 0.8,
                                                        "orders.b2b": base * 0.2}, 600)
    assert all(math.isclose(r.latency[q], model.service_seconds)
               for r in rows[:-5] for q in capacity.CHANNELS)
    assert {r.pods for r in rows} == {scaling.min_pods}


def test_a_b2c_flood_does_not_delay_b2b(capacity: ModuleType) -> None:
    model, scaling = capacity.Model.load(), capacity.Scaling.from_bundle()
    load, seconds = capacity.b2c_flood(model.f["today_orders_per_second"], 10,
                                       model.f["b2c_share"])
    rows = capacity.simulate(model, scaling, load, seconds)
    out = capacity.summary(rows)
    # B2B has its own consumer (and slots) in every MES pod: a B2C backlog is not ahead of it.
    assert out["peak_latency_orders.b2b"] == pytest.approx(model.service_seconds)
    assert out["peak_depth_orders.b2c"] > 1000  # it was a flood
    assert out["peak_latency_orders.b2c"] < Params().accept_to_done_p95_seconds


def test_a_10x_ramp_stays_within_the_latency_threshold(capacity: ModuleType) -> None:
    model, scaling = capacity.Model.load(), capacity.Scaling.from_bundle()
    load, seconds = capacity.ramp(model.f["today_orders_per_second"], 10, model.f["b2c_share"])
    out = capacity.summary(capacity.simulate(model, scaling, load, seconds))
    assert out["peak_latency_orders.b2c"] < Params().accept_to_done_p95_seconds / 3
    assert out["peak_pods"] < scaling.max_pods
    assert out["peak_held_per_s"] == 0


def test_100x_is_capped_by_postgresql_first(capacity: ModuleType) -> None:
    model = capacity.Model.load()
    base = model.f["today_orders_per_second"]
    assert base * 10 < model.postgres_cap < model.rabbitmq_cap < base * 100


def test_the_script_prints_its_tables(capacity: ModuleType,
                                      capsys: pytest.CaptureFixture[str]) -> None:
    assert capacity.main(["--every", "300", "--sweep"]) == 0
    out = capsys.readouterr().out
    for heading in ("Per pod", "Caps of the pipeline", "Pods for a steady load",
                    "KEDA targets", "Target utilisation", "Replay: ramp"):
        assert heading in out


def test_the_capacity_page_shows_the_models_figures(capacity: ModuleType) -> None:
    # A figure updated in capacity-figures.json must reach the page that quotes it.
    page = (ROOT / "docs/explanation/capacity-model.md").read_text()
    model, scaling = capacity.Model.load(), capacity.Scaling.from_bundle()
    base = model.f["today_orders_per_second"]
    quoted = [f"| ingress | {model.ingress_pod_rate:,.0f} |",
              f"| MES, per queue | {model.mes_queue_rate(scaling.concurrency):.1f} |",
              f"| PostgreSQL primary | {model.postgres_cap:,.0f} | "
              f"{model.postgres_cap / base:.0f}× |",
              f"| RabbitMQ | {model.rabbitmq_cap:,.0f} | {model.rabbitmq_cap / base:.0f}× |"]
    for multiple in (10, 100):
        pods = model.pods_for(base * multiple, scaling.concurrency)
        quoted.append(f"| {multiple}× | {base * multiple:,.0f} | {pods['ingress']} | "
                      f"{pods['mes']} | {pods['crm-relay']} | {pods['crm-status']} |")
    for q, target in model.keda_targets(scaling.concurrency).items():
        quoted.append(f"floor({scaling.concurrency} × {model.utilization[q]:g}) = {target}")
    missing = [q for q in quoted if q not in page]
    assert not missing, f"docs/explanation/capacity-model.md is stale: {missing}; rerun " \
        "`python deploy/capacity.py --sweep` and update the page"
