"""The list filters of API.md "Filters and formats", read from a query string.

The JSON lists and the portal's lists read the same parameters with these
declarations, so a filter means one thing in both; what it selects is the
storage query's (`CallFilter`, `RecordingFilter`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from storage.calls import CallFilter
from storage.recordings import RecordingFilter
from telephony.web.inputs import (
    E164_PATTERN,
    ID_PATTERN,
    TIMESTAMP_PATTERN,
    Query,
    e164,
    id_query,
    one_of,
    parse_timestamp,
)

_TIME = {"type": "string", "format": "date-time", "pattern": TIMESTAMP_PATTERN}


def _number(raw: str) -> str:
    if not re.match(E164_PATTERN, raw):
        raise ValueError("a phone number in E.164 form (+48221234567)")
    return e164(raw)


def _boolean(raw: str) -> bool:
    if raw not in ("true", "false"):
        raise ValueError("true or false")
    return raw == "true"


CALL_STATUSES = ("active", "ended")
RECORDING_STATUSES = ("recording", "paused", "stopped", "completed", "interrupted")

CALL_FILTERS = (
    Query(
        "status",
        "only calls in this state",
        {"type": "string", "enum": list(CALL_STATUSES)},
        one_of(CALL_STATUSES),
    ),
    Query(
        "number",
        "calls where this number is a counterpart, `from` or `to`",
        {"type": "string", "format": "e164"},
        _number,
    ),
    Query("created_after", "calls created at or after this time", _TIME, parse_timestamp),
    Query("created_before", "calls created before this time", _TIME, parse_timestamp),
    Query(
        "has_recording",
        "calls with (true) or without (false) a kept recording",
        {"type": "string", "enum": ["true", "false"]},
        _boolean,
    ),
)

RECORDING_FILTERS = (
    Query("call_id", "one call's", {"type": "string", "pattern": ID_PATTERN}, id_query),
    Query(
        "status",
        "only recordings in this state",
        {"type": "string", "enum": list(RECORDING_STATUSES)},
        one_of(RECORDING_STATUSES),
    ),
    Query("started_after", "recordings started at or after this time", _TIME, parse_timestamp),
    Query("started_before", "recordings started before this time", _TIME, parse_timestamp),
)


def call_filter(values: Mapping[str, Any]) -> CallFilter:
    return CallFilter(
        status=values.get("status"),
        number=values.get("number"),
        created_after=values.get("created_after"),
        created_before=values.get("created_before"),
        has_recording=values.get("has_recording"),
    )


def recording_filter(values: Mapping[str, Any]) -> RecordingFilter:
    return RecordingFilter(
        call_id=values.get("call_id"),
        status=values.get("status"),
        started_after=values.get("started_after"),
        started_before=values.get("started_before"),
    )
