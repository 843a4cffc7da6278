"""Errors raised by the framework itself (unknown path, wrong method, a body that is not even
text) answered in the API's error shape, ``{"error", "message", "request_id"}``, not FastAPI's
``{"detail": ...}``: a client handles one shape for every 4xx."""

from __future__ import annotations

from http import HTTPStatus

from fastapi import Request
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException


async def http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    try:
        phrase = HTTPStatus(exc.status_code).phrase
    except ValueError:
        phrase = "error"
    code = phrase.lower().replace(" ", "_").replace("-", "_")
    detail = exc.detail if isinstance(exc.detail, str) else phrase
    state = request.scope.get("state", {})
    if "access" in state:
        state["access"].setdefault("outcome", code)
    return JSONResponse({"error": code, "message": detail, "request_id": state.get("request_id")},
                        status_code=exc.status_code, headers=exc.headers)
