"""The one input layer: every value a request brings is read here, or refused with a 4xx.

API.md "Error codes": text refuses NUL and control characters other than
tab and newline; numbers in queries are ASCII digits, in range; cursors are
opaque and checked; JSON is bounded in size (aiohttp, 413) and in depth;
times are RFC 3339 with an offset and within the years the database keeps.

Each type here is also its own JSON Schema: `/openapi.json` is built from
the same declarations, so a request the schema accepts is never refused as
invalid, and the reverse (the fuzzer in `make test` checks both).
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, TypeVar

import orjson
import phonenumbers
from aiohttp import web
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    StringConstraints,
    ValidationError,
    WithJsonSchema,
)

from telephony.domain.errors import InvalidInput, MalformedJson, NotFound, UnsupportedMediaType

M = TypeVar("M", bound=BaseModel)

# -- text ---------------------------------------------------------------------------------

# Any text: no C0 control but tab and newline, no DEL, no C1 control (NUL always refused:
# PostgreSQL text cannot hold it).
_FREE = r"[^\x00-\x08\x0b-\x1f\x7f-\x9f]"
_EDGE = r"[^\s\x00-\x1f\x7f-\x9f]"  # neither space nor control: what a line starts and ends with
FREE_TEXT = rf"^{_FREE}*$"
# Non-empty, no leading or trailing space: names, labels, addresses. Written without
# look-arounds, so the database side (Rust regex), JSON Schema and the fuzzer agree.
TRIMMED_TEXT = rf"^{_EDGE}(?:{_FREE}*{_EDGE})?$"


def trimmed(max_length: int) -> StringConstraints:
    """A text field: non-empty, no leading or trailing space (`Annotated[str, trimmed(200)]`)."""
    return StringConstraints(min_length=1, max_length=max_length, pattern=TRIMMED_TEXT)


def free(max_length: int) -> StringConstraints:
    """A text field that may be empty and hold any text but controls."""
    return StringConstraints(max_length=max_length, pattern=FREE_TEXT)


# Opaque ids and tokens we issued: ASCII letters, digits and a few marks, bounded.
TOKEN_PATTERN = r"^[A-Za-z0-9_-]{1,200}$"  # noqa: S105 - a pattern, not a secret
Token = Annotated[str, StringConstraints(pattern=TOKEN_PATTERN)]
ID_PATTERN = r"^[A-Za-z0-9_-]{1,64}$"
IDEMPOTENCY_KEY_PATTERN = r"^[\x21-\x7e]{1,255}$"  # visible ASCII
Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]

# E-mail: what the service accepts, written out, so the schema says exactly that
# (an ASCII local part of the RFC 5322 "atext" characters and dots, a dotted host name).
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
EMAIL_PATTERN = rf"^[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{{|}}~-]+)*@{_LABEL}(?:\.{_LABEL})+$"  # noqa: E501
# 254: RFC 5321's limit for an address.
Email = Annotated[str, StringConstraints(min_length=6, max_length=254, pattern=EMAIL_PATTERN)]

# S1: at least 12 characters; the upper bound keeps Argon2 input sane. Any character but
# NUL and controls (a password is typed).
Password = Annotated[str, StringConstraints(min_length=12, max_length=1024, pattern=FREE_TEXT)]


_UNSAFE_IN_HEADER = re.compile(r"[\x00-\x1f\x7f-\x9f\ud800-\udfff]")


def header_text(value: str | None, max_length: int) -> str | None:
    """A header value fit for a log row: aiohttp hands undecodable bytes over as lone
    surrogates, which PostgreSQL text cannot hold; those and controls become U+FFFD."""
    if value is None:
        return None
    return _UNSAFE_IN_HEADER.sub("\ufffd", value[:max_length])


# -- phone numbers ------------------------------------------------------------------------

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"


def e164(value: str) -> str:
    """A dialable number in E.164 form, checked against real numbering plans (libphonenumber)."""
    try:
        parsed = phonenumbers.parse(value, None)
    except phonenumbers.NumberParseException:
        raise ValueError("not a phone number in E.164 form (+48221234567)") from None
    if not phonenumbers.is_valid_number(parsed):
        raise ValueError("not a valid phone number")
    if phonenumbers.format_number(parsed, phonenumbers.PhoneNumberFormat.E164) != value:
        raise ValueError("write it in E.164 form")
    return value


# The schema names the format: a pattern cannot hold numbering plans, so the format
# `e164` says "valid in its country's plan" (the fuzzer generates such numbers).
Phone = Annotated[
    str,
    StringConstraints(pattern=E164_PATTERN),
    AfterValidator(e164),
    WithJsonSchema(
        {
            "type": "string",
            "format": "e164",
            "pattern": E164_PATTERN,
            "description": "E.164, valid in its numbering plan (libphonenumber)",
        }
    ),
]


# -- times --------------------------------------------------------------------------------

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
LATEST = datetime(9999, 1, 1, tzinfo=UTC)
# RFC 3339 date-time with an offset (or Z): the years 1970 to 9998, so every one of them
# has a UTC form the database can store.
TIMESTAMP_PATTERN = (
    r"^(19[7-9][0-9]|[2-8][0-9]{3}|9[0-8][0-9]{2}|99[0-8][0-9]|999[0-8])"
    r"-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])"
    r"[Tt]([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{1,6})?"
    r"([Zz]|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)


def parse_timestamp(value: object) -> datetime:
    if not isinstance(value, str) or not re.match(TIMESTAMP_PATTERN, value):
        raise ValueError("an RFC 3339 time with an offset, from 1970")
    try:
        parsed = datetime.fromisoformat(value.replace("z", "Z").replace("t", "T"))
        at = parsed.astimezone(UTC)
    except (ValueError, OverflowError):
        raise ValueError("not a calendar date (say, 31 February)") from None
    if not EARLIEST <= at < LATEST:
        raise ValueError("an RFC 3339 time with an offset, from 1970")
    return at


Timestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    WithJsonSchema(
        {
            "type": "string",
            "format": "date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": "RFC 3339 with an offset, 1970 or later; a valid calendar date",
        }
    ),
]


# -- bodies -------------------------------------------------------------------------------

MAX_DEPTH = 8  # the deepest body of the API is 3 levels; nothing legitimate nests deeper


class Body(BaseModel):
    """Base of request bodies: unknown fields and loose types are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _depth(value: Any) -> int:
    """Nesting depth of parsed JSON, without recursion."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        deepest = max(deepest, depth)
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values())
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
    return deepest


def field_errors(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "message": err["msg"]}
        for err in exc.errors(include_input=False, include_url=False)
    ]


async def read_body(request: web.Request, model: type[M]) -> M:
    """Parse and validate a JSON body; raise problems the client can act on."""
    if request.content_type != "application/json":
        raise UnsupportedMediaType("send the body as application/json")
    raw = await request.read()  # aiohttp enforces client_max_size (413) before this returns
    return parse_body(raw, model)


def parse_body(raw: bytes, model: type[M]) -> M:
    try:
        data = orjson.loads(raw)  # strict UTF-8: a lone surrogate is not JSON either
    except orjson.JSONDecodeError:
        raise MalformedJson("the body is not valid JSON") from None
    if _depth(data) > MAX_DEPTH:
        raise InvalidInput(
            f"the body nests deeper than {MAX_DEPTH} levels",
            errors=[{"field": "body", "message": f"at most {MAX_DEPTH} levels deep"}],
        )
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        raise InvalidInput(
            "the request body has invalid fields", errors=field_errors(exc)
        ) from None


# -- query values ---------------------------------------------------------------------------

INT64_MAX = 2**63 - 1


@dataclass(frozen=True)
class Query:
    """One query parameter: its name, how it reads, and its schema (for /openapi.json)."""

    name: str
    description: str
    schema: dict[str, Any]
    parse: Callable[[str], Any]


def _invalid(name: str, message: str) -> InvalidInput:
    return InvalidInput(f"{name}: {message}", errors=[{"field": name, "message": message}])


def read_query(request: web.Request, params: Sequence[Query]) -> dict[str, Any]:
    """Every declared parameter, parsed (absent ones are absent); unknown ones are ignored,
    as the API's clients (and caches) may add their own."""
    out: dict[str, Any] = {}
    for param in params:
        values = request.query.getall(param.name, [])
        if not values:
            continue
        if len(values) > 1:
            raise _invalid(param.name, "given more than once")
        try:
            out[param.name] = param.parse(values[0])
        except ValueError as exc:
            raise _invalid(param.name, str(exc)) from None
    return out


def digits(low: int, high: int) -> Callable[[str], int]:
    """ASCII digits only ("²" and "٣" are digits to str.isdigit, not to us), in range."""

    def parse(raw: str) -> int:
        if not raw.isascii() or not raw.isdigit() or len(raw) > 19:
            raise ValueError(f"an integer from {low} to {high}")
        value = int(raw)
        if not low <= value <= high:
            raise ValueError(f"an integer from {low} to {high}")
        return value

    return parse


def one_of(choices: Sequence[str]) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if raw not in choices:
            raise ValueError("one of " + ", ".join(choices))
        return raw

    return parse


def text_query(max_length: int) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        if not 1 <= len(raw) <= max_length or not re.match(TRIMMED_TEXT, raw):
            raise ValueError(f"1 to {max_length} characters, no control characters")
        return raw

    return parse


def email_query(raw: str) -> str:
    if len(raw) > 254 or not re.match(EMAIL_PATTERN, raw):
        raise ValueError("an e-mail address")
    return raw


def id_query(raw: str) -> str:
    if not re.match(ID_PATTERN, raw):
        raise ValueError("an id this service issued")
    return raw


# -- lists: ?limit= and ?cursor= (API.md conventions) ----------------------------------------

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
_MICROSECOND = datetime(1970, 1, 1, 0, 0, 0, 1, tzinfo=UTC) - EARLIEST
_KEYSET = re.compile(r"^k\.([0-9]{1,19})\.([A-Za-z0-9_-]{1,64})$")
_SEQUENCE = re.compile(r"^s\.([0-9]{1,19})$")
CURSOR_PATTERN = r"^[A-Za-z0-9_-]{1,120}$"


def encode_cursor(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def _decode_cursor(raw: str) -> str:
    if not re.match(CURSOR_PATTERN, raw):
        raise ValueError("a next_cursor this service issued")
    try:
        return base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)).decode("ascii")
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ValueError("a next_cursor this service issued") from None


def keyset_cursor(at: datetime, ident: str) -> str:
    """After (time, id): the position of a list ordered by both."""
    micros = (at - EARLIEST) // _MICROSECOND
    return encode_cursor(f"k.{micros}.{ident}")


def sequence_cursor(seq: int) -> str:
    return encode_cursor(f"s.{seq}")


def parse_keyset(raw: str) -> tuple[datetime, str]:
    match = _KEYSET.match(_decode_cursor(raw))
    if match is None:
        raise ValueError("a next_cursor this service issued")
    micros = int(match[1])
    if micros > (LATEST - EARLIEST) // _MICROSECOND:
        raise ValueError("a next_cursor this service issued")
    return EARLIEST + micros * _MICROSECOND, match[2]


def parse_sequence(raw: str) -> int:
    match = _SEQUENCE.match(_decode_cursor(raw))
    if match is None or int(match[1]) > INT64_MAX:
        raise ValueError("a next_cursor this service issued")
    return int(match[1])


LIMIT = Query(
    "limit",
    f"page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
    {"type": "string", "pattern": r"^[0-9]{1,3}$"},
    digits(1, MAX_LIMIT),
)


def cursor_query(parse: Callable[[str], Any]) -> Query:
    return Query(
        "cursor",
        "next_cursor of the previous page",
        {"type": "string", "pattern": CURSOR_PATTERN},
        parse,
    )


KEYSET_PAGING = (LIMIT, cursor_query(parse_keyset))
SEQUENCE_PAGING = (LIMIT, cursor_query(parse_sequence))


@dataclass(frozen=True)
class Page:
    limit: int
    after: Any  # the decoded cursor, or None for the first page


def page(values: Mapping[str, Any]) -> Page:
    return Page(values.get("limit", DEFAULT_LIMIT), values.get("cursor"))


def page_of(
    items: Sequence[Any],
    page: Page,
    render: Callable[[Any], dict[str, Any]],
    cursor_of: Callable[[Any], str],
) -> dict[str, Any]:
    """`items` were fetched with limit+1 so we know whether another page exists."""
    shown = list(items[: page.limit])
    next_cursor = cursor_of(shown[-1]) if len(items) > page.limit else None
    return {"items": [render(i) for i in shown], "next_cursor": next_cursor}


def iso(value: datetime | None) -> str | None:
    return value.isoformat().replace("+00:00", "Z") if value else None


def path_id(request: web.Request, name: str = "id") -> str:
    """A path id: anything that is not an id this service issues cannot name a resource."""
    value = request.match_info[name]
    if not re.match(ID_PATTERN, value):
        raise NotFound("no such resource")
    return value
