"""The OpenAPI 3.1 document, built from the same route list the app serves.

Exact by construction: request schemas are the body models and query
declarations the handlers validate with; the statuses are those the route
answers itself plus those every route of its kind answers (a bad token, a
bad body, an unknown id). `make test` runs a fuzzer against it to keep it so.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

from telephony.web.inputs import ID_PATTERN, IDEMPOTENCY_KEY_PATTERN
from telephony.web.routes import ANYONE, JSON, Route

_PARAM = re.compile(r"\{(\w+)\}")
PROBLEM_JSON = "application/problem+json"

_PROBLEM = {
    "type": "object",
    "required": ["type", "title", "status", "detail", "code"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
        "code": {"type": "string"},
        "errors": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["field", "message"],
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}

# What every route of a kind can answer, beyond its own statuses.
_ANY = {
    500: "internal-error",
    # The middleware's answer while the database (or a store) is unreachable: a restart or
    # a fail-over is a moment to wait, with Retry-After, never a 500.
    503: "unavailable: a data store is not reachable, with Retry-After",
}
_AUTHENTICATED = {401: "unauthenticated: no token, or an unknown, expired or revoked one"}
_RESTRICTED = {403: "forbidden: the caller's role or scopes do not allow this"}
_WITH_ID = {404: "not-found: no such resource in the caller's account"}
_WITH_BODY = {
    400: "malformed-json",
    413: "payload-too-large",
    415: "unsupported-media-type",
    422: "validation-failed, with `errors` naming each field",
}
_WITH_QUERY = {422: "validation-failed: a query value out of range, or unknown"}
_CREATING = {
    409: "idempotency-in-progress: the first request with this Idempotency-Key still runs",
    422: "idempotency-key-reused: the key was used for a different request",
}
_THROTTLED = {
    429: "too-many-attempts, with Retry-After",
    503: "unavailable: too many sign-ins at once, with Retry-After",
}


def statuses(route: Route) -> dict[int, str]:
    """Every status the route can answer, with what it means."""
    out: dict[int, str] = {}

    def add(more: dict[int, str]) -> None:
        for status, text in more.items():
            out[status] = f"{out[status]}; {text}" if status in out else text

    add(dict(route.responses))
    add(_ANY)
    if route.who != ANYONE:
        add(_AUTHENTICATED)
        add(_RESTRICTED)
    if _PARAM.search(route.path):
        add(_WITH_ID)
    if route.body is not None:
        add(_WITH_BODY)
    if route.query:
        add(_WITH_QUERY)
    if route.method == "POST":
        add(_CREATING)
    if route.throttled:
        add(_THROTTLED)
    return dict(sorted(out.items()))


CHOICES = "x-choices"  # a field whose values this deployment configures (data regions)


def _configured(schema: Any, choices: Mapping[str, Sequence[str]]) -> Any:
    """`{"x-choices": NAME, …}` anywhere in `schema` becomes the enum of choices[NAME]: the
    values this deployment accepts, so the document promises no value it refuses."""
    if isinstance(schema, dict):
        if CHOICES in schema:
            return {"type": "string", "enum": list(choices[schema[CHOICES]])}
        return {k: _configured(v, choices) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_configured(v, choices) for v in schema]
    return schema


def build(
    routes: Iterable[Route],
    version: str = "1.0.0",
    *,
    choices: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """The document; `choices` names the configured values of `x-choices` fields
    (`{"data-regions": ("eu-central", …)}`)."""
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Problem": _PROBLEM}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": route.name,
            "x-allowed": route.who,
            "responses": {
                str(status): _response(route, status, text)
                for status, text in statuses(route).items()
            },
        }
        if route.who != ANYONE:
            operation["security"] = [{"bearer": []}]
        params: list[dict[str, Any]] = [
            {
                "name": name,
                "in": "path",
                "required": True,
                "schema": {"type": "string", "pattern": ID_PATTERN},
            }
            for name in _PARAM.findall(route.path)
        ]
        params += [
            {
                "name": q.name,
                "in": "query",
                "required": False,
                "description": q.description,
                "schema": q.schema,
            }
            for q in route.query
        ]
        if route.method == "POST":
            params.append(
                {
                    "name": "Idempotency-Key",
                    "in": "header",
                    "required": False,
                    "description": "retries with the same key get the first answer (24 h)",
                    "schema": {"type": "string", "pattern": IDEMPOTENCY_KEY_PATTERN},
                }
            )
        if params:
            operation["parameters"] = params
        if route.body is not None:
            schema = _configured(
                route.body.model_json_schema(ref_template="#/components/schemas/{model}"),
                choices or {},
            )
            for name, sub in schema.pop("$defs", {}).items():
                schemas[name] = sub
            schemas[route.body.__name__] = schema
            operation["requestBody"] = {
                "required": True,
                "content": {
                    JSON: {"schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}}
                },
            }
        paths.setdefault(route.path, {})[route.method.lower()] = operation
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Consent-aware call recording API",
            "version": version,
            "description": "Recording only with every counterpart's consent (R1, R2); "
            "audio stored encrypted and delivered only to the customer's account (R3, R4).",
        },
        "servers": [{"url": "/"}],
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
    }


def _response(route: Route, status: int, text: str) -> dict[str, Any]:
    if status >= 400:
        return {
            "description": text,
            "content": {PROBLEM_JSON: {"schema": {"$ref": "#/components/schemas/Problem"}}},
        }
    if status in (101, 204, 304):
        return {"description": text}
    if route.produces == JSON:
        return {"description": text, "content": {JSON: {"schema": {"type": "object"}}}}
    kinds = (route.produces,) if isinstance(route.produces, str) else route.produces
    return {"description": text, "content": {kind: {} for kind in kinds}}
