"""Errors at the edge: one function maps every routebandit error to an HTTP status.

Bodies are JSON, ``{"error": {"type", "message", "field"}}``, and name the field at
fault. A client's input never produces a 500: validation errors are 422, unknown (or
another tenant's) decisions 404, oversized bodies 413, conflicting feedback 409, an
unavailable database 503.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from bandit.errors import (
    CatalogError,
    NoEligibleModelError,
    PolicyError,
    RequestError,
    RouteBanditError,
)
from feedback.errors import (
    FeedbackConflictError,
    RecordRefusedError,
    StoreError,
    UnknownDecisionError,
)

log = logging.getLogger("routebandit.errors")

#: Seconds a client is asked to wait (``Retry-After``) when the database is unavailable.
RETRY_AFTER_S = 1
_FIELD_RE = re.compile(r"^([A-Za-z_][\w.\[\]-]*): ")


class AuthError(RouteBanditError):
    """No valid API key (401)."""


class ForbiddenError(RouteBanditError):
    """The key is valid but may not do this (403: admin operations)."""


class BudgetExceededError(RouteBanditError):
    """The tenant has spent its budget for the period (402, with ``Retry-After``)."""

    def __init__(self, message: str, *, retry_after: int) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class NotFoundError(RouteBanditError, LookupError):
    """Nothing of that name (404); the message starts with the field."""


class BodyTooLargeError(StarletteHTTPException):
    """The body exceeds ``max_body_bytes`` (413). An HTTPException so that FastAPI's
    body parsing re-raises it unchanged."""

    def __init__(self, limit: int) -> None:
        super().__init__(413, f"body: larger than the limit of {limit} bytes")


def printable(text: str) -> str:
    """``text`` as an error body can carry it: a lone surrogate (which no UTF-8 encoder
    takes) becomes its escape, ``\\ud800``."""
    if text.isascii():
        return text
    return text.encode("utf-8", "backslashreplace").decode("utf-8")


def error_response(exc: Exception) -> tuple[int, dict[str, Any]]:
    """THE mapping from an exception to ``(status, body)``."""
    status, body = _error_response(exc)
    err = body["error"]
    err["message"] = printable(str(err["message"]))
    for item in [err, *err.get("errors", ())]:
        if item.get("field") is not None:
            item["field"] = printable(str(item["field"]))
        item["message"] = printable(str(item["message"]))
    return status, body


def _error_response(exc: Exception) -> tuple[int, dict[str, Any]]:
    message = str(exc)
    match = _FIELD_RE.match(message)
    field: str | None = match.group(1) if match else None
    extra: dict[str, Any] = {}
    if isinstance(exc, NoEligibleModelError):
        status, kind, extra = 422, "no_eligible_model", {"reasons": exc.reasons}
        if exc.needs:  # what no model offers: a capability, max_output_tokens, ...
            extra["needs"] = list(exc.needs)
        field = field or "models"
    elif isinstance(exc, (RequestError, CatalogError)):
        status, kind = 422, "invalid_request"
    elif isinstance(exc, UnknownDecisionError):
        status, kind, field = 404, "not_found", "decision_id"
    elif isinstance(exc, NotFoundError):
        status, kind = 404, "not_found"
    elif isinstance(exc, FeedbackConflictError):
        status, kind = 409, "conflict"
    elif isinstance(exc, AuthError):
        status, kind, field = 401, "unauthorized", None
    elif isinstance(exc, ForbiddenError):
        status, kind, field = 403, "forbidden", None
    elif isinstance(exc, BudgetExceededError):
        status, kind, field = 402, "budget_exceeded", None
        extra = {"retry_after": exc.retry_after}
    elif isinstance(exc, RecordRefusedError):
        status, kind = 422, "record_refused"
    elif isinstance(exc, StoreError):
        status, kind, field = 503, "unavailable", None
        message = "the database is unavailable; try again shortly"
        extra = {"retry_after": RETRY_AFTER_S}
    elif isinstance(exc, PolicyError):
        status, kind, field = 500, "policy_error", None
    elif isinstance(exc, RequestValidationError):
        errors = [_validation_item(e) for e in exc.errors()]
        first = errors[0] if errors else {"field": None, "message": "invalid request"}
        status, kind, field = 422, "invalid_request", first["field"]
        message = str(first["message"])
        if first["field"]:
            message = f"{first['field']}: {message}"
        extra = {"errors": errors}
    elif isinstance(exc, StarletteHTTPException):
        status, kind = exc.status_code, _KINDS.get(exc.status_code, "error")
        message = str(exc.detail)
        if status == 400 and exc.__cause__ is not None:  # FastAPI could not parse the body
            field, message = "body", f"body: {_unparsable(exc.__cause__)}"
    else:
        status, kind, field, message = 500, "internal_error", None, "internal server error"
    return status, {"error": {"type": kind, "message": message, "field": field, **extra}}


_KINDS = {400: "bad_request", 401: "unauthorized", 403: "forbidden", 404: "not_found",
          405: "method_not_allowed", 413: "payload_too_large", 415: "unsupported_media_type"}


def _unparsable(cause: BaseException) -> str:
    if isinstance(cause, UnicodeDecodeError):
        return f"not valid UTF-8 (byte 0x{cause.object[cause.start]:02x} at {cause.start})"
    if isinstance(cause, RecursionError):
        return "JSON nested too deeply"
    return "not valid JSON"


def _validation_item(err: Any) -> dict[str, Any]:
    loc: Sequence[Any] = err.get("loc", ())
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]
    field = _dotted(loc) if loc else "body"
    message = err.get("msg", "invalid")
    if err.get("type") == "json_invalid":
        field, message = "body", f"not valid JSON ({err.get('ctx', {}).get('error', message)})"
    elif err.get("type") == "missing" and not loc:
        field, message = "body", "a JSON object is required"
    return {"field": field, "message": message}


def _dotted(loc: Sequence[Any]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out


def install(app: FastAPI) -> None:
    """Register the handlers that route every error through :func:`error_response`."""

    async def handle(request: Request, exc: Exception) -> JSONResponse:
        status, body = error_response(exc)
        if status == 503:
            log.error("%s %s: %s", request.method, request.url.path, exc)
        elif status >= 500:
            log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        retry = body["error"].get("retry_after")
        if retry is not None:
            headers = {"Retry-After": str(retry)}
        return JSONResponse(body, status_code=status, headers=headers)

    for cls in (RouteBanditError, RequestValidationError, StarletteHTTPException, Exception):
        app.add_exception_handler(cls, handle)
