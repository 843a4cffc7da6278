"""A small async client for the RabbitMQ management HTTP API (queue depth, audit, admin).

httpx is imported when a client is made, so that ``obskit.rabbitmq`` (publishing, consuming)
imports without it.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote, urlsplit, urlunsplit

from ._env import management_url

__all__ = ["ManagementClient"]

QUEUE_COLUMNS = ",".join((
    "name", "vhost", "type", "durable", "auto_delete", "arguments", "policy",
    "effective_policy_definition", "consumers", "messages", "messages_ready",
    "messages_unacknowledged", "messages_details", "state",
))


def _q(name: str) -> str:
    return quote(name, safe="")


class ManagementClient:
    """``url`` carries the credentials (``http://user:pass@host:15672``).

    Default: ``OBSKIT_RABBITMQ_MANAGEMENT_URL``, else ``http://guest:guest@localhost:15672``.
    """

    def __init__(self, url: str | None = None, *, timeout: float = 10.0) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise ImportError("obskit.rabbitmq.ManagementClient needs httpx: "
                              "pip install 'obskit[rabbitmq]'", name=exc.name) from exc
        parts = urlsplit(management_url(url))
        auth = (parts.username or "guest", parts.password or "guest")
        netloc = parts.hostname or "localhost"
        if parts.port:
            netloc += f":{parts.port}"
        base = urlunsplit((parts.scheme or "http", netloc, parts.path.rstrip("/"), "", ""))
        self._http = httpx.AsyncClient(base_url=base + "/api", auth=auth, timeout=timeout)
        self.username = auth[0]

    async def __aenter__(self) -> ManagementClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    async def _get(self, path: str, **params: Any) -> Any:
        r = await self._http.get(path, params=params or None)
        r.raise_for_status()
        return r.json()

    # --- reads -------------------------------------------------------------------------------
    async def queues(self, vhost: str | None = None) -> list[dict[str, Any]]:
        path = "/queues" if vhost is None else f"/queues/{_q(vhost)}"
        return list(await self._get(path, columns=QUEUE_COLUMNS))

    async def queue(self, vhost: str, name: str) -> dict[str, Any] | None:
        r = await self._http.get(f"/queues/{_q(vhost)}/{_q(name)}")
        if r.status_code == 404:
            return None
        r.raise_for_status()
        return dict(r.json())

    async def exchanges(self, vhost: str) -> list[dict[str, Any]]:
        return list(await self._get(f"/exchanges/{_q(vhost)}"))

    async def bindings(self, vhost: str) -> list[dict[str, Any]]:
        return list(await self._get(f"/bindings/{_q(vhost)}"))

    async def policies(self, vhost: str) -> list[dict[str, Any]]:
        return list(await self._get(f"/policies/{_q(vhost)}"))

    async def connections(self, vhost: str | None = None) -> list[dict[str, Any]]:
        path = "/connections" if vhost is None else f"/vhosts/{_q(vhost)}/connections"
        return list(await self._get(path))

    # --- admin (tests, fault injection) ------------------------------------------------------
    async def create_vhost(self, vhost: str, user: str | None = None) -> None:
        r = await self._http.put(f"/vhosts/{_q(vhost)}", json={})
        r.raise_for_status()
        r = await self._http.put(f"/permissions/{_q(vhost)}/{_q(user or self.username)}",
                                 json={"configure": ".*", "write": ".*", "read": ".*"})
        r.raise_for_status()

    async def delete_vhost(self, vhost: str) -> None:
        r = await self._http.delete(f"/vhosts/{_q(vhost)}")
        if r.status_code != 404:
            r.raise_for_status()

    async def close_connection(self, name: str, reason: str = "closed by obskit") -> None:
        r = await self._http.delete(f"/connections/{_q(name)}",
                                    headers={"X-Reason": reason})
        if r.status_code != 404:
            r.raise_for_status()
