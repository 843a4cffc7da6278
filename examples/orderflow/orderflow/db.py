"""Connection pools. Writes go to the primary; status reads may go to a read replica."""

from __future__ import annotations

import psycopg
from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool, PoolTimeout

from orderflow.config import Settings


async def open_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                    name: str = "orderflow", timeout: float = 10.0,
                    autocommit: bool = False) -> AsyncConnectionPool:
    """``timeout``: seconds ``pool.connection()`` waits before ``PoolTimeout``.

    ``autocommit``: a lone statement is its own transaction, one round trip instead of three
    (``BEGIN``, the statement, ``COMMIT``); several statements that must commit together then
    need ``conn.transaction()``, which still opens a real one."""
    pool = AsyncConnectionPool(dsn, min_size=min_size, max_size=max_size, open=False,
                               kwargs={"row_factory": dict_row, "autocommit": autocommit},
                               name=name, timeout=timeout)
    await pool.open(wait=True, timeout=10.0)
    return pool


async def open_pools(settings: Settings, *, max_size: int = 10
                     ) -> tuple[AsyncConnectionPool, AsyncConnectionPool]:
    """``(primary, read)``; the same pool twice when no replica is configured. Requests wait
    at most ``ORDERFLOW_DB_TIMEOUT`` for a connection."""
    primary = await open_pool(settings.database_url, max_size=max_size, name="primary",
                              timeout=settings.db_timeout)
    if settings.read_database_url == settings.database_url:
        return primary, primary
    read = await open_pool(settings.read_database_url, max_size=max_size, name="read",
                           timeout=settings.db_timeout)
    return primary, read


async def close_pools(*pools: AsyncConnectionPool) -> None:
    seen: set[int] = set()
    for p in pools:
        if id(p) not in seen:
            seen.add(id(p))
            await p.close()


def unavailable(exc: BaseException) -> bool:
    """True if ``exc`` says PostgreSQL is unreachable or restarting (a retry later succeeds):
    no connection from the pool in time, a lost connection (SQLSTATE class 08, or none: libpq
    saw the socket close), or the server shutting down or refusing connections (57P0x, e.g.
    ``pg_terminate_backend`` or a restart). Not query errors (serialization, lock timeouts)."""
    if isinstance(exc, PoolTimeout):
        return True
    if isinstance(exc, psycopg.OperationalError):
        state = exc.sqlstate
        return state is None or state.startswith(("08", "57P"))
    return isinstance(exc, psycopg.InterfaceError)  # the connection is already closed
