"""Reading a posted form: CSRF first, then the same pydantic models the JSON API
validates with, so a field accepted or refused in one is so in the other."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypeVar

from aiohttp import web
from pydantic import BaseModel, ValidationError

from telephony.domain.errors import InvalidInput
from telephony.web.inputs import field_errors
from telephony.web.portal.session import CSRF_FIELD, check_csrf

M = TypeVar("M", bound=BaseModel)
MAX_FIELDS = 50


async def posted(request: web.Request) -> dict[str, str]:
    """The form's text fields (first value of each), after the CSRF check (403 csrf-failed)."""
    data = await request.post()
    fields: dict[str, str] = {}
    for name in list(data.keys())[:MAX_FIELDS]:
        value = data.get(name)
        if isinstance(value, str) and name not in fields:
            fields[name] = value
    await check_csrf(request, fields.pop(CSRF_FIELD, None))
    return fields


def checked(fields: Mapping[str, str], name: str) -> bool:
    return fields.get(name) in ("yes", "on", "true")


def validate(model: type[M], data: Mapping[str, Any]) -> M:
    try:
        return model.model_validate(dict(data))
    except ValidationError as exc:
        raise InvalidInput("some fields need attention", errors=field_errors(exc)) from None


def errors_of(exc: InvalidInput) -> dict[str, str]:
    """{field: message} for the form to show beside each control."""
    out: dict[str, str] = {}
    for error in exc.errors:
        out.setdefault(error.get("field", "form"), error.get("message", ""))
    return out
