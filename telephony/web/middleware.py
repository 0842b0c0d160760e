"""What every request and response goes through: ids, problems, metrics, the access log,
and the headers that make a response safe to pass through browsers and caches."""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import time
from datetime import UTC, datetime

from aiohttp import web
from aiohttp.typedefs import Handler

from storage.db import DATABASE_GONE
from storage.securitylog import AccessEntry
from telephony.domain.errors import ServiceError, Unavailable
from telephony.logs import request_id_var
from telephony.web.appkeys import ACCESS_QUEUE, METRICS, SETTINGS
from telephony.web.auth import client_address, principal_id
from telephony.web.inputs import header_text
from telephony.web.problems import (
    SERVER_NAME,
    from_http_exception,
    from_service_error,
    internal_error,
)

log = logging.getLogger(__name__)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._-]{1,64}$")

# On every answer. `no-store` unless the handler chose otherwise (the audio route does,
# for seeking): API answers carry tokens shown once (sessions, API keys, invitations,
# media tokens, webhook secrets) and personal data, which no cache may keep.
SECURITY_HEADERS = {
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}


def route_template(request: web.Request) -> str:
    resource = request.match_info.route.resource
    return resource.canonical if resource is not None else "unmatched"


@web.middleware
async def observe(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Request id, problem+json for every error, metrics and the access log.

    The one place exceptions turn into responses, so no handler can leak a
    traceback or a secret into a body (API.md "Errors").
    """
    incoming = request.headers.get("X-Request-Id", "")
    request_id = incoming if _REQUEST_ID.match(incoming) else secrets.token_hex(8)
    token = request_id_var.set(request_id)
    started = time.perf_counter()
    try:
        try:
            response = await handler(request)
        except ServiceError as exc:
            response = from_service_error(exc)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            response = from_http_exception(exc)
        except asyncio.CancelledError:
            raise
        except DATABASE_GONE as exc:
            # A database restart or fail-over is a moment to wait, not a server error.
            log.warning(
                "database unreachable",
                extra={"route": route_template(request), "error": type(exc).__name__},
            )
            response = from_service_error(
                Unavailable("the database is not reachable; try again shortly", retry_after_s=5)
            )
        except Exception:
            log.exception("unhandled error", extra={"route": route_template(request)})
            response = internal_error()
        if not response.prepared:
            response.headers["X-Request-Id"] = request_id
        _account(request, response.status, time.perf_counter() - started, request_id)
        return response
    finally:
        request_id_var.reset(token)


async def security_headers(request: web.Request, response: web.StreamResponse) -> None:
    """on_response_prepare: every answer, WebSocket handshakes included."""
    for name, value in SECURITY_HEADERS.items():
        response.headers.setdefault(name, value)
    response.headers.setdefault("Cache-Control", "no-store")
    response.headers["Server"] = SERVER_NAME


def _account(request: web.Request, status: int, elapsed_s: float, request_id: str) -> None:
    app = request.app
    route = route_template(request)
    metrics = app[METRICS]
    metrics.requests.labels(request.method, route, str(status)).inc()
    metrics.latency.labels(request.method, route).observe(elapsed_s)
    if not app[SETTINGS].access_log_to_db:
        return
    entry = AccessEntry(
        at=datetime.now(UTC),
        request_id=request_id,
        method=request.method[:16],
        route=route,  # the template, never the raw path or query: no ids, no tokens
        status=status,
        duration_ms=elapsed_s * 1000,
        principal_id=principal_id(request),
        source_address=client_address(request),
        user_agent=header_text(request.headers.get("User-Agent"), 512),
    )
    try:
        app[ACCESS_QUEUE].put_nowait(entry)
    except asyncio.QueueFull:
        metrics.access_log_dropped.inc()
