"""Request and response bodies of the public API (they are the OpenAPI docs too)."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Material = Literal["PLA", "ABS", "PETG", "RESIN"]
Quality = Literal["draft", "standard", "fine"]


class Model3D(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=200, examples=["bracket-v2.stl"])
    volume_cm3: float = Field(gt=0, le=1_000_000, description="Volume of one part in cm³.",
                              allow_inf_nan=False)
    material: Material
    quality: Quality


class OrderIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    customer_email: str = Field(min_length=3, max_length=254, examples=["ada@example.com"])
    model: Model3D
    quantity: int = Field(ge=1, le=1000, strict=True)
    reference: str | None = Field(default=None, max_length=100,
                                  description="Optional: your own reference (PO number).")

    @field_validator("customer_email")
    @classmethod
    def _email(cls, v: str) -> str:
        local, _, domain = v.partition("@")
        if not local or "." not in domain or " " in v or domain.startswith("."):
            raise ValueError("must be an email address like name@example.com")
        return v


class ShopOrderAccepted(BaseModel):
    order_id: str
    status_url: str
    tracking_token: str
    tracking_url: str = Field(description="A status page for the customer.")


class PartnerOrderAccepted(BaseModel):
    order_id: str
    status_url: str


class HistoryEntry(BaseModel):
    status: str
    at: datetime


class OrderStatus(BaseModel):
    order_id: str
    channel: str
    status: str
    price: float | None
    currency: str
    print_minutes: float | None = None
    failure_reason: str | None = None
    reference: str | None = None
    history: list[HistoryEntry]


class ErrorField(BaseModel):
    field: str
    message: str


class ErrorBody(BaseModel):
    error: str
    message: str
    request_id: str | None = None
    errors: list[ErrorField] | None = None


_ERROR_MEANINGS = {
    400: "Malformed request (a body that is not text, an Idempotency-Key too long)",
    401: "Missing or unknown API key",
    404: "No such order, or not yours",
    413: "Request body over ORDERFLOW_MAX_BODY_BYTES",
    422: "Invalid request: ``errors`` names each field",
    429: "Rate limited: see Retry-After",
}


def errors(*codes: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` for these error statuses, all in the ``ErrorBody`` shape."""
    return {c: {"model": ErrorBody, "description": _ERROR_MEANINGS[c]} for c in codes}
