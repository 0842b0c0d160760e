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

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar, TypeVar

import orjson
import phonenumbers
from aiohttp import web
from multidict import MultiMapping
from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    RootModel,
    StringConstraints,
    ValidationError,
    ValidationInfo,
    WithJsonSchema,
    field_validator,
    model_validator,
)

from telephony.domain.errors import InvalidInput, MalformedJson, NotFound, UnsupportedMediaType
from telephony.domain.formats import (
    EMAIL_MAX,
    EMAIL_MIN,
    EMAIL_PATTERN,
    FREE_TEXT,
    PASSWORD_MAX,
    PASSWORD_MIN,
)

M = TypeVar("M", bound=BaseModel)

# -- text ---------------------------------------------------------------------------------

# Any text: no C0 control but tab and newline, no DEL, no C1 control (NUL always refused:
# PostgreSQL text cannot hold it). FREE_TEXT is that, whole.
_FREE = r"[^\x00-\x08\x0b-\x1f\x7f-\x9f]"
_EDGE = r"[^\s\x00-\x1f\x7f-\x9f]"  # neither space nor control: what a line starts and ends with
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

Email = Annotated[
    str, StringConstraints(min_length=EMAIL_MIN, max_length=EMAIL_MAX, pattern=EMAIL_PATTERN)
]
Password = Annotated[
    str, StringConstraints(min_length=PASSWORD_MIN, max_length=PASSWORD_MAX, pattern=FREE_TEXT)
]

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


# The schema names the format and no pattern: a pattern cannot hold numbering plans, and
# one that admits "+1000000" would promise what the validator refuses. The format `e164`
# says "E.164, valid in its country's plan" (the fuzzer draws such numbers).
Phone = Annotated[
    str,
    StringConstraints(pattern=E164_PATTERN),
    AfterValidator(e164),
    WithJsonSchema(
        {
            "type": "string",
            "format": "e164",
            "description": "E.164 (+48221234567), valid in its numbering plan (libphonenumber)",
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


# A time that has passed (a consent obtained): the schema names the format `past-date-time`,
# since no pattern can say "before now" (the fuzzer draws such times).
PastTimestamp = Annotated[
    datetime,
    BeforeValidator(parse_timestamp),
    WithJsonSchema(
        {
            "type": "string",
            "format": "past-date-time",
            "pattern": TIMESTAMP_PATTERN,
            "description": "RFC 3339 with an offset, from 1970, and not in the future",
        }
    ),
]


# -- bodies -------------------------------------------------------------------------------

MAX_DEPTH = 8  # the deepest body of the API is 3 levels; nothing legitimate nests deeper


class Body(BaseModel):
    """Base of request bodies: unknown fields and loose types are refused, not ignored."""

    model_config = ConfigDict(extra="forbid", strict=True)


def _patch_schema(schema: dict[str, Any], model: type[BaseModel]) -> None:
    """What Patch validates, said in its schema: null only where allowed, at least one field."""
    nullable: frozenset[str] = getattr(model, "NULLABLE", frozenset())
    for name, prop in schema.get("properties", {}).items():
        options = prop.get("anyOf")
        if name not in nullable and options:
            kept = [o for o in options if o.get("type") != "null"]
            prop.pop("anyOf")
            prop.pop("default", None)
            prop.update(kept[0] if len(kept) == 1 else {"anyOf": kept})
    schema["minProperties"] = 1


class Patch(Body):
    """A partial update: absent fields stay as they are, `null` clears only a NULLABLE field,
    and an update changes at least one field."""

    NULLABLE: ClassVar[frozenset[str]] = frozenset()
    model_config = ConfigDict(extra="forbid", strict=True, json_schema_extra=_patch_schema)

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: object, info: ValidationInfo) -> object:
        if value is None and info.field_name not in cls.NULLABLE:
            raise ValueError("may not be null")
        return value

    @model_validator(mode="after")
    def _something(self) -> Patch:
        if not self.model_fields_set:
            raise ValueError("send at least one field to change")
        return self

    def changes(self) -> dict[str, Any]:
        """The fields the client sent, as sent (null where it clears)."""
        return self.model_dump(exclude_unset=True)


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


def field_errors(exc: ValidationError, *, tagged: bool = False) -> list[dict[str, str]]:
    """`tagged`: the body is one of several shapes by a tag field (a RootModel over a
    discriminated union): pydantic's location starts with the tag's value, which is no
    field of the body, and a bad tag is the tag field's error."""
    found = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = err["loc"]
        if err["type"] in ("union_tag_invalid", "union_tag_not_found"):
            loc = (str(err.get("ctx", {}).get("discriminator", "body")).strip("'"),)
        elif tagged:
            loc = loc[1:]
        found.append({"field": ".".join(str(p) for p in loc) or "body", "message": err["msg"]})
    return found


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
            "the request body has invalid fields",
            errors=field_errors(exc, tagged=issubclass(model, RootModel)),
        ) from None


# -- query values ---------------------------------------------------------------------------


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
    return read_values(request.query, params)


def read_values(query: MultiMapping[str], params: Sequence[Query]) -> dict[str, Any]:
    """`read_query` over any multi-valued mapping (the portal's translated filter form)."""
    out: dict[str, Any] = {}
    for param in params:
        values = query.getall(param.name, [])
        if not values:
            continue
        if len(values) > 1:
            raise _invalid(param.name, "given more than once")
        try:
            out[param.name] = param.parse(values[0])
        except ValueError as exc:
            raise _invalid(param.name, str(exc)) from None
    return out


def whole(value: object) -> object:
    """JSON Schema's integer: 5.0 is one. Strict validation then refuses what is not."""
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def digits(low: int, high: int) -> Callable[[str], int]:
    """ASCII digits only ("²" and "٣" are digits to str.isdigit, not to us), in range."""

    def parse(raw: str) -> int:
        leading_zero = len(raw) > 1 and raw.startswith("0")
        if not raw.isascii() or not raw.isdigit() or len(raw) > 19 or leading_zero:
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
# Cursors are opaque to clients (pass back the next_cursor you got), and exact to us: a
# keyset position "k<microseconds since 1970>.<id>", or a sequence number "s<n>". Their
# patterns are the schema and the check alike, so any cursor the schema admits is a
# position (one past the end reads as an empty page). 17 digits of microseconds reach the
# year 5138; 18 digits stay below 2**63.
KEYSET_CURSOR = r"^k[0-9]{1,17}\.[A-Za-z0-9_-]{1,64}$"
SEQUENCE_CURSOR = r"^s[0-9]{1,18}$"


def keyset_cursor(at: datetime, ident: str) -> str:
    """After (time, id): the position of a list ordered by both."""
    return f"k{(at - EARLIEST) // _MICROSECOND}.{ident}"


def sequence_cursor(seq: int) -> str:
    return f"s{seq}"


def parse_keyset(raw: str) -> tuple[datetime, str]:
    if not re.match(KEYSET_CURSOR, raw):
        raise ValueError("a next_cursor this service issued")
    micros, _, ident = raw[1:].partition(".")
    return EARLIEST + int(micros) * _MICROSECOND, ident


def parse_sequence(raw: str) -> int:
    if not re.match(SEQUENCE_CURSOR, raw):
        raise ValueError("a next_cursor this service issued")
    return int(raw[1:])


LIMIT = Query(
    "limit",
    f"page size, 1 to {MAX_LIMIT} (default {DEFAULT_LIMIT})",
    {"type": "string", "pattern": r"^([1-9][0-9]?|1[0-9]{2}|200)$"},  # 1 to 200, no leading 0
    digits(1, MAX_LIMIT),
)


def cursor_query(parse: Callable[[str], Any], pattern: str) -> Query:
    return Query(
        "cursor",
        "next_cursor of the previous page (opaque: pass it back as it came)",
        {"type": "string", "pattern": pattern},
        parse,
    )


KEYSET_PAGING = (LIMIT, cursor_query(parse_keyset, KEYSET_CURSOR))
SEQUENCE_PAGING = (LIMIT, cursor_query(parse_sequence, SEQUENCE_CURSOR))


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
