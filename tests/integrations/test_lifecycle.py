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
    assert set(MINE) <= set(obs.handle.active_integrations())
    before = patch_points()
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
