"""``obskit bundle push`` against a stand-in Grafana that speaks the documented HTTP API the
push uses (folders and dashboards by uid), with Grafana's bookkeeping: ids, versions, 401 on a
bad token. No Grafana binary can run on this machine."""

from __future__ import annotations

import copy
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi import Request  # at module level: the routes' annotations are resolved here

from obskit.bundle import Params, parse_overrides
from obskit.bundle._push import PushError, push
from obskit.testing import wait_for

TOKEN = "glsa_test_token"


@dataclass
class FakeGrafana:
    url: str = ""
    folders: dict[str, dict[str, Any]] = field(default_factory=dict)
    dashboards: dict[str, dict[str, Any]] = field(default_factory=dict)
    writes: list[str] = field(default_factory=list)


@pytest.fixture
def grafana() -> Iterator[FakeGrafana]:
    import uvicorn
    from fastapi import FastAPI
    from fastapi.responses import JSONResponse

    state = FakeGrafana()
    app = FastAPI()

    @app.middleware("http")
    async def auth(request: Request, call_next: Any) -> Any:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            return JSONResponse({"message": "Unauthorized"}, status_code=401)
        return await call_next(request)

    @app.get("/api/folders/{uid}")
    async def get_folder(uid: str) -> Any:
        if uid not in state.folders:
            return JSONResponse({"message": "folder not found"}, status_code=404)
        return state.folders[uid]

    @app.post("/api/folders")
    async def create_folder(request: Request) -> Any:
        body = await request.json()
        state.writes.append(f"create folder {body['uid']}")
        state.folders[body["uid"]] = {"uid": body["uid"], "title": body["title"], "version": 1}
        return state.folders[body["uid"]]

    @app.put("/api/folders/{uid}")
    async def update_folder(uid: str, request: Request) -> Any:
        body = await request.json()
        state.writes.append(f"update folder {uid}")
        state.folders[uid]["title"] = body["title"]
        return state.folders[uid]

    @app.get("/api/dashboards/uid/{uid}")
    async def get_dashboard(uid: str) -> Any:
        if uid not in state.dashboards:
            return JSONResponse({"message": "Dashboard not found"}, status_code=404)
        return copy.deepcopy(state.dashboards[uid])

    @app.post("/api/dashboards/db")
    async def save_dashboard(request: Request) -> Any:
        body = await request.json()
        dash = body["dashboard"]
        if body.get("folderUid") not in state.folders:
            return JSONResponse({"message": "folder not found"}, status_code=400)
        old = state.dashboards.get(dash["uid"])
        version = old["dashboard"]["version"] + 1 if old else 1
        state.writes.append(f"save dashboard {dash['uid']}")
        state.dashboards[dash["uid"]] = {
            "dashboard": {**dash, "id": 7, "version": version},
            "meta": {"folderUid": body["folderUid"]},
        }
        return {"status": "success", "uid": dash["uid"], "version": version}

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    wait_for(lambda: server.started, timeout=10, interval=0.01, what="uvicorn to start")
    state.url = f"http://127.0.0.1:{port}"
    yield state
    server.should_exit = True
    thread.join(5)


def _actions(changes: list[Any]) -> dict[str, str]:
    return {c.uid: c.action for c in changes}


def test_dry_run_reads_only_then_push_creates_then_nothing_changes(grafana: FakeGrafana) -> None:
    from obskit.bundle import dashboards

    uids = {m["uid"] for m in dashboards.build_all(Params()).values()}
    planned = push(grafana.url, dry_run=True, credential=TOKEN)
    assert _actions(planned) == {"obskit": "create", **{u: "create" for u in uids}}
    assert grafana.writes == [] and grafana.dashboards == {}

    push(grafana.url, credential=TOKEN)
    assert set(grafana.dashboards) == uids
    assert all(d["meta"]["folderUid"] == "obskit" for d in grafana.dashboards.values())
    writes = len(grafana.writes)

    again = push(grafana.url, credential=TOKEN)
    assert set(_actions(again).values()) == {"unchanged"}
    assert len(grafana.writes) == writes  # idempotent: no version moves
    assert {d["dashboard"]["version"] for d in grafana.dashboards.values()} == {1}


def test_a_changed_threshold_updates_only_the_dashboards_that_use_it(
        grafana: FakeGrafana) -> None:
    push(grafana.url, credential=TOKEN)
    params = parse_overrides(["queue_backlog_messages=50"])
    changes = push(grafana.url, params, dry_run=True, credential=TOKEN)
    updated = [c for c in changes if c.action == "update"]
    assert updated and len(updated) < len(changes) - 1
    assert all(c.details and c.details[0].startswith("~ panel") for c in updated)
    before = len(grafana.writes)
    push(grafana.url, params, credential=TOKEN)
    assert len(grafana.writes) - before == len(updated)


def test_bad_token_and_unreachable_grafana_are_clear_errors(grafana: FakeGrafana) -> None:
    with pytest.raises(PushError, match="GRAFANA_TOKEN"):
        push(grafana.url, credential="wrong")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"http://127.0.0.1:{s.getsockname()[1]}"
    with pytest.raises(PushError, match=f"cannot reach Grafana at {dead}"):
        push(dead, credential=TOKEN, timeout=2)


def test_cli_push_dry_run_prints_the_plan(grafana: FakeGrafana) -> None:
    env = {"GRAFANA_TOKEN": TOKEN, "PATH": "/usr/bin:/bin"}
    r = subprocess.run([sys.executable, "-m", "obskit", "bundle", "push", "--grafana-url",
                        grafana.url, "--dry-run"], capture_output=True, text=True, env=env,
                       timeout=60)
    assert r.returncode == 0, r.stderr
    assert "would create   folder" in r.stdout and "obskit-order-flow" in r.stdout
    assert "dry run: nothing written" in r.stderr and grafana.writes == []
    r = subprocess.run([sys.executable, "-m", "obskit", "bundle", "push", "--grafana-url",
                        grafana.url], capture_output=True, text=True,
                       env={**env, "GRAFANA_TOKEN": "nope"}, timeout=60)
    assert r.returncode == 1 and "refused" in r.stderr and "Traceback" not in r.stderr
