"""Recording states and their legal transitions: pure.

recording <-> paused -> stopped -> completed; interrupted when a process
died mid-recording; deleted at the end. A stop never comes back.
"""

from __future__ import annotations

from enum import StrEnum

from telephony.domain.errors import InvalidTransition


class RecordingStatus(StrEnum):
    RECORDING = "recording"
    PAUSED = "paused"
    STOPPED = "stopped"  # ended; the media node is sealing its last chunk
    COMPLETED = "completed"
    INTERRUPTED = "interrupted"  # the process holding the media socket died
    DELETED = "deleted"


class EndReason(StrEnum):
    """What ended a stretch of recording (a segment's `ended_by`) or the recording."""

    PAUSE = "pause"
    NEW_COUNTERPART = "new_counterpart"
    CONSENT_REVOKED = "consent_revoked"
    CONSENT_REFUSED = "consent_refused"
    STOP = "stop"
    CALL_ENDED = "call_ended"
    STREAM_ENDED = "stream_ended"
    PROCESSING_RESTRICTED = "processing_restricted"  # D2: the account's processing is restricted
    INTERRUPTED = "interrupted"  # a segment cut by a dead process
    NODE_LOST = "node_lost"  # its media node died; the stream came back on another
    PROCESS_DIED = "process_died"  # the recording's stop reason then


class Action(StrEnum):
    """What a customer may ask of a recording (API.md: /pause, /resume, /stop)."""

    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"


class Control(StrEnum):
    """What a media node is told to do to a call's writer (LISTEN/NOTIFY)."""

    START = "start"
    PAUSE = "pause"
    RESUME = "resume"
    STOP = "stop"


class Channels(StrEnum):
    DUAL = "dual"  # channel 0 the counterparts, channel 1 the customer
    MONO = "mono"  # everything mixed


class PauseBehavior(StrEnum):
    SKIP = "skip"  # a pause leaves no trace in the audio
    SILENCE = "silence"  # a pause is silence of its length


LIVE = frozenset({RecordingStatus.RECORDING, RecordingStatus.PAUSED})
FINISHED = frozenset({RecordingStatus.COMPLETED, RecordingStatus.INTERRUPTED})
# A stream of a recording in these states may still be sealing: the media node holds it.
HELD_BY_A_NODE = LIVE | {RecordingStatus.STOPPED}

_ALLOWED: dict[Action, frozenset[RecordingStatus]] = {
    Action.PAUSE: frozenset({RecordingStatus.RECORDING}),
    Action.RESUME: frozenset({RecordingStatus.PAUSED}),
    Action.STOP: LIVE,
}


def check_transition(action: Action, status: RecordingStatus) -> None:
    if status not in _ALLOWED[action]:
        raise InvalidTransition(
            f"cannot {action.value} a recording that is {status.value}",
            recording_status=status.value,
        )
