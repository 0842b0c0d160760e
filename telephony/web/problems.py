"""Errors to RFC 9457 problem documents; the one place that knows HTTP statuses."""

from __future__ import annotations

import json
from typing import Any

from aiohttp import web

from telephony.domain.errors import (
    BadRequest,
    Conflict,
    Forbidden,
    IntegrityFailure,
    InvalidInput,
    NotFound,
    PayloadTooLarge,
    RangeNotSatisfiable,
    ServiceError,
    TooManyRequests,
    Unauthenticated,
    Unavailable,
    UnsupportedMediaType,
)

PROBLEM_TYPE = "application/problem+json"
_TYPE_BASE = "https://docs.telephony.example/problems/"
SERVER_NAME = "telephony"  # the `Server` header: no product versions for a scanner to match

_STATUS: dict[type[ServiceError], int] = {
    BadRequest: 400,
    Unauthenticated: 401,
    Forbidden: 403,
    NotFound: 404,
    Conflict: 409,
    PayloadTooLarge: 413,
    UnsupportedMediaType: 415,
    InvalidInput: 422,
    RangeNotSatisfiable: 416,
    TooManyRequests: 429,
    IntegrityFailure: 500,
    Unavailable: 503,
}

# Statuses aiohttp raises on its own (routing, body size), mapped to our codes.
_HTTP_CODES = {
    400: ("malformed-request", "The request could not be read"),
    404: ("not-found", "Not found"),
    405: ("method-not-allowed", "Method not allowed"),
    413: ("payload-too-large", "The request body is too large"),
    415: ("unsupported-media-type", "Unsupported media type"),
    500: ("internal-error", "Internal error"),
}


def status_of(exc: ServiceError) -> int:
    """Walk the class hierarchy, so a new leaf needs no edit here."""
    return next((_STATUS[c] for c in type(exc).__mro__ if c in _STATUS), 500)


def problem(
    status: int,
    code: str,
    title: str,
    detail: str,
    headers: dict[str, str] | None = None,
    extra: dict[str, Any] | None = None,
) -> web.Response:
    # The standard members come last: an extension can never overwrite them.
    body = {
        **(extra or {}),
        "type": _TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail,
        "code": code,
    }
    return web.Response(
        status=status,
        body=json.dumps(body).encode(),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def from_service_error(exc: ServiceError) -> web.Response:
    extra: dict[str, Any] = dict(exc.extra)
    headers: dict[str, str] = {}
    if isinstance(exc, InvalidInput) and exc.errors:
        extra["errors"] = exc.errors
    if isinstance(exc, TooManyRequests | Unavailable) and exc.retry_after_s is not None:
        headers["Retry-After"] = str(exc.retry_after_s)
    if isinstance(exc, Unauthenticated):
        headers["WWW-Authenticate"] = 'Bearer realm="api"'
    if isinstance(exc, RangeNotSatisfiable):
        headers["Content-Range"] = f"bytes */{exc.size_bytes}"
    return problem(status_of(exc), exc.code, exc.title, exc.detail, headers, extra)


def http_problem_body(status: int, detail: str | None = None) -> dict[str, Any]:
    """The problem document for a status aiohttp itself answers (routing, parsing, size)."""
    code, title = _HTTP_CODES.get(status, ("malformed-request", "The request could not be read"))
    return {
        "type": _TYPE_BASE + code,
        "title": title,
        "status": status,
        "detail": detail or title,
        "code": code,
    }


def from_http_exception(exc: web.HTTPException) -> web.Response:
    code, title = _HTTP_CODES.get(exc.status, ("http-error", exc.reason))
    headers = {}
    if exc.status == 405 and "Allow" in exc.headers:
        headers["Allow"] = exc.headers["Allow"]
    return problem(exc.status, code, title, exc.reason, headers)


def internal_error() -> web.Response:
    return problem(
        500, "internal-error", "Internal error", "The server failed; it has been logged."
    )
