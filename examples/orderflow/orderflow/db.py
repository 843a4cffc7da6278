"""Connection pools. Writes go to the primary; status reads may go to a read replica."""

from __future__ import annotations

from psycopg.rows import dict_row
from psycopg_pool import AsyncConnectionPool

from orderflow.config import Settings


async def open_pool(dsn: str, *, min_size: int = 1, max_size: int = 10,
                    name: str = "orderflow") -> AsyncConnectionPool:
    pool = AsyncConnectionPool(dsn, min_size=min_size, max_size=max_size, open=False,
                               kwargs={"row_factory": dict_row}, name=name, timeout=10.0)
    await pool.open(wait=True, timeout=10.0)
    return pool


async def open_pools(settings: Settings, *, max_size: int = 10
                     ) -> tuple[AsyncConnectionPool, AsyncConnectionPool]:
    """``(primary, read)``; the same pool twice when no replica is configured."""
    primary = await open_pool(settings.database_url, max_size=max_size, name="primary")
    if settings.read_database_url == settings.database_url:
        return primary, primary
    read = await open_pool(settings.read_database_url, max_size=max_size, name="read")
    return primary, read


async def close_pools(*pools: AsyncConnectionPool) -> None:
    seen: set[int] = set()
    for p in pools:
        if id(p) not in seen:
            seen.add(id(p))
            await p.close()
