"""A call session's own vocabulary."""

from __future__ import annotations

from enum import StrEnum


class CallStatus(StrEnum):
    ACTIVE = "active"
    ENDED = "ended"


class Direction(StrEnum):
    INBOUND = "inbound"
    OUTBOUND = "outbound"
