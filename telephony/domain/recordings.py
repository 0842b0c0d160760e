"""Recording states and their legal transitions: pure.

recording <-> paused -> stopped -> completed; interrupted when a process
died mid-recording; deleted at the end. A stop never comes back.
"""

from __future__ import annotations

from enum import StrEnum

from telephony.domain.errors import InvalidTransition


class Status(StrEnum):
    RECORDING = "recording"
    PAUSED = "paused"
    STOPPED = "stopped"
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"
    DELETED = "deleted"


class Reason(StrEnum):
    """What ended a stretch of recording (the segments' `ended_by`) or the recording."""

    PAUSE = "pause"
    NEW_COUNTERPART = "new_counterpart"
    CONSENT_REVOKED = "consent_revoked"
    CONSENT_REFUSED = "consent_refused"
    STOP = "stop"
    CALL_ENDED = "call_ended"
    STREAM_ENDED = "stream_ended"
    PROCESSING_RESTRICTED = "processing_restricted"  # D2: the account's processing is restricted


LIVE = frozenset({Status.RECORDING, Status.PAUSED})

_ALLOWED: dict[str, frozenset[Status]] = {
    "pause": frozenset({Status.RECORDING}),
    "resume": frozenset({Status.PAUSED}),
    "stop": LIVE,
}


def check_transition(action: str, status: str) -> None:
    if Status(status) not in _ALLOWED[action]:
        raise InvalidTransition(
            f"cannot {action} a recording that is {status}", recording_status=status
        )
