"""Tracks as data: a stream brings one or more, each heard on one side of the call.

A WebSocket engine sends `inbound` (the counterparts, heard by the customer)
and `outbound` (the customer's own side); a SIPREC session brings a stream per
participant. The recorder stores every track as a channel of its own, in the
order the stream declared them; a download lays them out by side: `dual` puts
every counterpart track on channel 0 and every customer track on channel 1,
`mono` mixes them all.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from enum import StrEnum

MAX_TRACKS = 16  # a SIPREC session of a conference: far more than a call has parties


class Side(StrEnum):
    COUNTERPARTS = "counterparts"
    CUSTOMER = "customer"


@dataclass(frozen=True)
class Track:
    name: str  # as the stream calls it
    side: Side


INBOUND = Track("inbound", Side.COUNTERPARTS)
OUTBOUND = Track("outbound", Side.CUSTOMER)
BOTH = (INBOUND, OUTBOUND)


def named(name: str) -> Track:
    """The track a WebSocket dialect calls `name`: `outbound` is the customer's side."""
    return OUTBOUND if name == OUTBOUND.name else Track(name, Side.COUNTERPARTS)


def from_stored(names: Sequence[str], sides: Sequence[str] | None) -> tuple[Track, ...]:
    """Tracks as a recording row keeps them; rows from before sides were stored name them."""
    if sides is None or len(sides) != len(names):
        return tuple(named(n) for n in names)
    return tuple(Track(n, Side(s)) for n, s in zip(names, sides, strict=True))


def channels_by_side(tracks: Iterable[Track]) -> dict[Side, list[int]]:
    """Which stored channels each side's audio is on."""
    sides: dict[Side, list[int]] = {Side.COUNTERPARTS: [], Side.CUSTOMER: []}
    for index, track in enumerate(tracks):
        sides[track.side].append(index)
    return sides
