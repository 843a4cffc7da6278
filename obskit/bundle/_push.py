"""``obskit bundle push``: create or update the folder and dashboards on an existing Grafana.

By uid, so it is idempotent: a dashboard whose content is already there is left alone (its
version does not move), one that differs is overwritten, a missing one is created. Nothing is
deleted. ``dry_run`` reads only.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from obskit.bundle._params import Params

__all__ = ["Change", "PushError", "TOKEN_ENV", "push"]

#: A service-account token (Grafana → Administration → Service accounts), Editor role or more.
TOKEN_ENV = "GRAFANA_TOKEN"
#: Or basic auth, e.g. the compose bundle's admin and its GRAFANA_ADMIN_PASSWORD.
USER_ENV, PASSWORD_ENV = "GRAFANA_USER", "GRAFANA_PASSWORD"
_VOLATILE = ("id", "version", "iteration")  # Grafana's bookkeeping, not content


class PushError(RuntimeError):
    """Grafana was unreachable or refused a request; the message says which and why."""


@dataclass
class Change:
    action: str  # create, update, unchanged
    kind: str  # folder, dashboard
    uid: str
    title: str
    details: list[str] = field(default_factory=list)  # e.g. the panels that differ


def credential_from_env(env: dict[str, str] | None = None) -> str | tuple[str, str] | None:
    env = dict(os.environ) if env is None else env
    if env.get(TOKEN_ENV):
        return env[TOKEN_ENV]
    if env.get(USER_ENV) and env.get(PASSWORD_ENV):
        return env[USER_ENV], env[PASSWORD_ENV]
    return None


def _content(dashboard: dict[str, Any]) -> str:
    return json.dumps({k: v for k, v in dashboard.items() if k not in _VOLATILE}, sort_keys=True)


def _panel_diff(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    def by_title(d: dict[str, Any]) -> dict[str, str]:
        return {p.get("title", "?"): json.dumps(p, sort_keys=True) for p in d.get("panels", [])}

    before, after = by_title(old), by_title(new)
    out = [f"+ panel {t!r}" for t in after if t not in before]
    out += [f"- panel {t!r}" for t in before if t not in after]
    out += [f"~ panel {t!r}" for t in after if t in before and before[t] != after[t]]
    if not out:
        out = ["~ dashboard settings (variables, links, time)"]
    return out


def push(grafana_url: str, params: Params | None = None, *, dry_run: bool = False,
         credential: str | tuple[str, str] | None = None, timeout: float = 10.0,
         on_change: Callable[[Change], None] | None = None) -> list[Change]:
    """Push the folder and dashboards rendered from ``params``; returns what (would have)
    changed, in order. Raises ``PushError`` with a message fit for the terminal."""
    try:
        from grafana_client import GrafanaApi
        from grafana_client.client import GrafanaClientError, GrafanaException
    except ImportError as exc:
        raise PushError("obskit bundle push needs grafana-client: "
                        "pip install 'obskit[bundle]'") from exc
    try:
        from obskit.bundle import dashboards
    except ImportError as exc:
        raise PushError(f"{exc}: pip install 'obskit[bundle]'") from exc

    p = params or Params()
    api = GrafanaApi.from_url(grafana_url, credential=credential, timeout=timeout)
    changes: list[Change] = []

    def note(change: Change) -> None:
        changes.append(change)
        if on_change is not None:
            on_change(change)

    def call(what: str, fn: Callable[..., Any], *args: Any) -> Any:
        try:
            return fn(*args)
        except GrafanaClientError as exc:
            if exc.status_code == 404:
                return None
            if exc.status_code in (401, 403):
                raise PushError(f"{grafana_url} refused {what} ({exc.status_code}): set "
                                f"{TOKEN_ENV} to a service-account token with the Editor role "
                                f"(or {USER_ENV} and {PASSWORD_ENV})") from None
            raise PushError(f"{grafana_url}: {what} failed ({exc.status_code}): "
                            f"{exc.message}") from None
        except GrafanaException as exc:
            raise PushError(f"{grafana_url}: {what} failed: {exc}") from None
        except Exception as exc:  # connection refused, DNS, TLS, timeout
            raise PushError(f"cannot reach Grafana at {grafana_url}: {exc}") from None

    folder = call(f"reading folder {p.grafana_folder_uid}", api.folder.get_folder,
                  p.grafana_folder_uid)
    if folder is None:
        note(Change("create", "folder", p.grafana_folder_uid, p.grafana_folder))
        if not dry_run:
            call("creating the folder", api.folder.create_folder, p.grafana_folder,
                 p.grafana_folder_uid)
    elif folder.get("title") != p.grafana_folder:
        note(Change("update", "folder", p.grafana_folder_uid, p.grafana_folder,
                    [f"title {folder.get('title')!r} -> {p.grafana_folder!r}"]))
        if not dry_run:
            call("renaming the folder", lambda: api.folder.update_folder(
                p.grafana_folder_uid, title=p.grafana_folder, overwrite=True))
    else:
        note(Change("unchanged", "folder", p.grafana_folder_uid, p.grafana_folder))

    for model in dashboards.build_all(p).values():
        uid, title = model["uid"], model.get("title", model["uid"])
        found = call(f"reading dashboard {uid}", api.dashboard.get_dashboard, uid)
        if found is None:
            change = Change("create", "dashboard", uid, title)
        else:
            old = found.get("dashboard", {})
            same_folder = found.get("meta", {}).get("folderUid") == p.grafana_folder_uid
            if _content(old) == _content(model) and same_folder:
                note(Change("unchanged", "dashboard", uid, title))
                continue
            details = _panel_diff(old, model) if _content(old) != _content(model) else []
            if not same_folder:
                details.append(f"moved into folder {p.grafana_folder_uid}")
            change = Change("update", "dashboard", uid, title, details)
        note(change)
        if not dry_run:
            body = {k: v for k, v in model.items() if k not in _VOLATILE}
            call(f"saving dashboard {uid}", api.dashboard.update_dashboard, {
                "dashboard": body, "folderUid": p.grafana_folder_uid, "overwrite": True,
                "message": "obskit bundle push"})
    return changes
