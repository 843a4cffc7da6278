"""Every HTTP/DB/cache integration: idempotent instrument(), real uninstrument(), never raises."""

from __future__ import annotations

import importlib
from typing import Any

import pytest

import obskit
from obskit.testing import Captured

MINE = ("fastapi", "starlette", "flask", "requests", "httpx", "psycopg", "psycopg2", "asyncpg",
        "sqlalchemy", "redis")


def patch_points() -> dict[str, Any]:
    """The class attributes our integrations (and the contrib instrumentors under them) patch."""
    import asyncpg.connection
    import fastapi
    import flask
    import httpx
    import psycopg
    import psycopg2
    import redis
    import requests
    import starlette.applications
    from sqlalchemy import event
    from sqlalchemy.engine import Engine

    from obskit.integrations import sqlalchemy as sa_integration

    return {
        "fastapi": fastapi.FastAPI.__dict__["build_middleware_stack"],
        "starlette": starlette.applications.Starlette.__dict__["build_middleware_stack"],
        "flask": flask.Flask.__dict__["__call__"],
        "requests": requests.Session.__dict__["send"],
        "httpx": httpx.HTTPTransport.__dict__["handle_request"],
        "psycopg": psycopg.Connection.__dict__["connect"],
        "psycopg2": psycopg2.connect,
        "asyncpg": asyncpg.connection.Connection.__dict__["fetch"],
        "sqlalchemy": event.contains(Engine, "before_cursor_execute", sa_integration._before),
        "redis": redis.Redis.__dict__["execute_command"],
    }


def test_instrument_twice_changes_nothing(obs: Captured) -> None:
    handle = obskit.get_handle()
    before = patch_points()  # imports the libraries: each is instrumented on its import
    assert set(MINE) <= set(obs.handle.active_integrations())
    for name in MINE:
        importlib.import_module(f"obskit.integrations.{name}").instrument(handle)
    assert all(v is before[k] for k, v in patch_points().items())


def test_uninstrument_restores_everything() -> None:
    pristine = patch_points()
    from obskit.testing import init_for_tests

    with init_for_tests("svc", disabled_instrumentations="pika,aio_pika"):
        patched = patch_points()
        assert [n for n in MINE if patched[n] is pristine[n]] == []
    assert all(v is pristine[k] for k, v in patch_points().items())
    for name in MINE:  # a second uninstrument is harmless
        importlib.import_module(f"obskit.integrations.{name}").uninstrument()
    assert all(v is pristine[k] for k, v in patch_points().items())


def test_a_failing_integration_is_reported_not_raised(monkeypatch: pytest.MonkeyPatch) -> None:
    from obskit.integrations import redis as redis_integration
    from obskit.testing import init_for_tests

    def broken(handle: Any) -> None:
        raise RuntimeError("instrumentor exploded")

    monkeypatch.setenv("OBSKIT_RAISE_INTERNAL_ERRORS", "0")
    monkeypatch.setattr(redis_integration, "instrument", broken)
    with init_for_tests("svc", disabled_instrumentations="pika,aio_pika") as obs:
        status = {s.name: s for s in obs.handle.integrations}
        assert status["redis"].state == "failed" and "exploded" in status["redis"].detail
        assert status["psycopg"].state == "active"


_LAZY = """
import os, sys
import obskit

h = obskit.init("svc", log_stream=open(os.devnull, "w"), spans_file="off")
status = {s.name: s for s in h.integrations}
unused = [lib for lib in ("sqlalchemy", "redis", "flask", "pika", "aio_pika") if lib in sys.modules]
print("imported by init:", unused)
print("before:", status["redis"].state, status["sqlalchemy"].state)

import redis
from sqlalchemy import create_engine, event, text
from sqlalchemy.engine import Engine
from obskit.integrations import sqlalchemy as sa

print("after:", status["redis"].state, status["sqlalchemy"].state,
      hasattr(redis.Redis.__dict__["execute_command"], "__wrapped__"),
      event.contains(Engine, "before_cursor_execute", sa._before))
obskit.shutdown()
print("shutdown:", event.contains(Engine, "before_cursor_execute", sa._before))

# A hook left from an init that was shut down does nothing.
h = obskit.init("svc", log_stream=open(os.devnull, "w"), spans_file="off")
obskit.shutdown()
import psycopg2
print("stale hook:", hasattr(psycopg2.connect, "__wrapped__"))
"""


def test_init_imports_no_library_and_instruments_each_on_first_import() -> None:
    """A library the service never imports is never imported by obskit (start-up, memory)."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-c", _LAZY], capture_output=True, text=True,
                         timeout=120, env={**__import__("os").environ,
                                           "OTEL_EXPORTER_OTLP_ENDPOINT": ""})
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines == ["imported by init: []", "before: pending pending",
                     "after: active active True True", "shutdown: False",
                     "stale hook: False"], out.stdout + out.stderr
