"""The consent rules and the recording gate (R1, R2): pure, no I/O, time passed in."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from telephony.domain.errors import (
    CallNotActive,
    ConsentRequired,
    ProcessingRestricted,
    RecordingInProgress,
)


class Decision(StrEnum):
    """What a consent event records."""

    GRANTED = "granted"
    REFUSED = "refused"
    REVOKED = "revoked"


class Consent(StrEnum):
    """A counterpart's flag: its latest decision, or pending before any."""

    PENDING = "pending"
    GRANTED = "granted"
    REFUSED = "refused"
    REVOKED = "revoked"


class Method(StrEnum):
    ANNOUNCEMENT = "announcement"
    DTMF = "dtmf"
    VERBAL = "verbal"
    WRITTEN = "written"
    PRIOR_AGREEMENT = "prior_agreement"


@dataclass(frozen=True)
class CounterpartFacts:
    id: str
    consent: Consent


@dataclass(frozen=True)
class CallFacts:
    """What the gate needs to know, read under the call's row lock."""

    id: str
    active: bool
    counterparts: Sequence[CounterpartFacts]
    has_live_recording: bool
    processing_restricted: bool


def current_flags(
    counterpart_ids: Iterable[str], decisions: Iterable[tuple[str, Decision]]
) -> dict[str, Consent]:
    """Each counterpart's flag is its latest decision; `decisions` come oldest first."""
    flags = {cp: Consent.PENDING for cp in counterpart_ids}
    for counterpart_id, decision in decisions:
        if counterpart_id in flags:
            flags[counterpart_id] = Consent(decision.value)
    return flags


def missing_consent(call: CallFacts) -> list[str]:
    return [c.id for c in call.counterparts if c.consent is not Consent.GRANTED]


def check_can_record(call: CallFacts) -> None:
    """Raise unless a recording may start now; the caller's explicit request is R1."""
    if not call.active:
        raise CallNotActive(f"call {call.id} has ended")
    if call.processing_restricted:
        raise ProcessingRestricted("the account restricted processing (D2); lift it to record")
    if call.has_live_recording:
        raise RecordingInProgress("stop or resume the call's live recording instead")
    check_consent(call)


def check_consent(call: CallFacts) -> None:
    missing = missing_consent(call)
    if missing:
        raise ConsentRequired(
            "every counterpart on the call must have granted consent (R2)", missing=missing
        )


def check_can_resume(call: CallFacts) -> None:
    """Resume re-checks all that start checks, except the live recording (it is this one)."""
    check_can_record(replace(call, has_live_recording=False))


def can_resume(call: CallFacts) -> bool:
    try:
        check_can_resume(call)
    except (CallNotActive, ConsentRequired, ProcessingRestricted):
        return False
    return True
