"""The OpenAPI 3.1 document, built from the same route list the app serves."""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

from telephony.web.spec import Route

_PARAM = re.compile(r"\{(\w+)\}")

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
                "properties": {"field": {"type": "string"}, "message": {"type": "string"}},
            },
        },
    },
}


def build(routes: Iterable[Route], version: str = "1.0.0") -> dict[str, Any]:
    paths: dict[str, dict[str, Any]] = {}
    schemas: dict[str, Any] = {"Problem": _PROBLEM}
    for route in routes:
        operation: dict[str, Any] = {
            "summary": route.summary,
            "tags": [route.tag],
            "operationId": route.handler.__name__,
            "x-allowed": route.who,
            "responses": {
                str(status): _response(status, text)
                for status, text in sorted(route.responses.items())
            },
        }
        if route.who != "anyone":
            operation["security"] = [{"bearer": []}]
            operation["responses"].setdefault("401", _response(401, "unauthenticated"))
        params = [
            {"name": n, "in": "path", "required": True, "schema": {"type": "string"}}
            for n in _PARAM.findall(route.path)
        ]
        params += [
            {
                "name": n,
                "in": "query",
                "required": False,
                "description": d,
                "schema": {"type": "string"},
            }
            for n, d in route.query
        ]
        if params:
            operation["parameters"] = params
        if route.body is not None:
            schema = route.body.model_json_schema(ref_template="#/components/schemas/{model}")
            for name, sub in schema.pop("$defs", {}).items():
                schemas[name] = sub
            schemas[route.body.__name__] = schema
            operation["requestBody"] = {
                "required": True,
                "content": {
                    "application/json": {
                        "schema": {"$ref": f"#/components/schemas/{route.body.__name__}"}
                    }
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


def _response(status: int, text: str) -> dict[str, Any]:
    if status < 400:
        if status == 204:
            return {"description": text}
        return {
            "description": text,
            "content": {"application/json": {"schema": {"type": "object"}}},
        }
    return {
        "description": text,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }
