"""Managers' access to the MES dashboard: one shared secret, ``ORDERFLOW_DASHBOARD_TOKEN``.

The dashboard lists every recent order, so on the public ingress it answers only a caller that
shows the token, in whichever way is simplest for it:

* ``Authorization: Bearer <token>`` (scripts, the demo's traffic),
* HTTP basic with the token as password, any user name (a browser asks for it by itself),
* ``/dashboard?token=<token>`` once, a link for managers: it sets an HttpOnly cookie and
  redirects to the page without the token, and the page's polls carry the cookie.

The cookie holds an HMAC of the token, not the token: changing the token logs everyone out.
Without a token configured the dashboard is refused (403): an open dashboard must be a choice.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac

from fastapi import Request
from fastapi.responses import JSONResponse

COOKIE = "orderflow_dashboard"
REALM = 'Basic realm="orderflow dashboard", charset="UTF-8"'


def session_value(token: str) -> str:
    return hmac.new(token.encode(), b"orderflow-dashboard-session", hashlib.sha256).hexdigest()


def _same(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode(), b.encode())


def dashboard_token(request: Request) -> str:
    settings = getattr(request.app.state, "settings", None)
    return str(getattr(settings, "dashboard_token", "") or "")


def presented_token(request: Request, token: str) -> bool:
    """The request carries the manager credential (header, basic password or cookie)."""
    scheme, _, value = request.headers.get("authorization", "").partition(" ")
    value = value.strip()
    if scheme.lower() == "bearer" and value and _same(value, token):
        return True
    if scheme.lower() == "basic" and value:
        try:
            _, _, password = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            password = ""
        if password and _same(password, token):
            return True
    cookie = request.cookies.get(COOKIE)
    return cookie is not None and _same(cookie, session_value(token))


def refuse(request: Request, *, query_token: str | None = None) -> JSONResponse | None:
    """None if the caller is a manager; otherwise the 401/403 to send."""
    token = dashboard_token(request)
    state = request.scope.setdefault("state", {})
    if not token:
        body = {"error": "dashboard_disabled",
                "message": "the dashboard is off on this ingress: set ORDERFLOW_DASHBOARD_TOKEN",
                "request_id": state.get("request_id")}
        return JSONResponse(body, status_code=403)
    if presented_token(request, token) or (query_token and _same(query_token, token)):
        return None
    if "access" in state:
        state["access"]["outcome"] = "unauthorized"
    body = {"error": "unauthorized",
            "message": "the dashboard is for managers: send the dashboard token as "
                       "'Authorization: Bearer <token>' or as the HTTP basic password",
            "request_id": state.get("request_id")}
    return JSONResponse(body, status_code=401, headers={"WWW-Authenticate": REALM})
