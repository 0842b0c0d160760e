"""The coverage map as a picture: where on the call's clock audio was kept, where it was
paused (and what paused it), and where audio was lost.

Pure layout, no I/O: the template draws these boxes as inline SVG, and the same
list is shown as a table for screen readers. Each kept stretch also says where
it begins in the audio file (pauses are skipped there, unless the recording
keeps them as silence), so a click on it seeks the player (static/recording.js).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from storage.recordings import Recording
from telephony.domain.recordings import PauseBehavior

WIDTH = 1000.0  # SVG user units across the whole recording


@dataclass(frozen=True)
class Stretch:
    kind: str  # "recorded", "paused", "lost"
    x: float
    width: float
    started_at: datetime
    ended_at: datetime
    ended_by: str | None  # what ended a recorded stretch (the coverage map's `ended_by`)
    audio_start_s: float | None  # where a recorded stretch begins in the audio file


def _ms(a: datetime, b: datetime) -> float:
    return (b - a).total_seconds() * 1000


def layout(recording: Recording, now: datetime) -> list[Stretch]:
    start = recording.started_at
    end = recording.ended_at or now
    total = max(_ms(start, end), 1.0)

    def x(at: datetime) -> float:
        return round(min(max(_ms(start, at) / total, 0.0), 1.0) * WIDTH, 2)

    out: list[Stretch] = []
    audio_s, cursor = 0.0, start
    silence = recording.pause_behavior is PauseBehavior.SILENCE
    for segment in recording.segments:
        seg_end = segment.ended_at or end
        if segment.started_at > cursor:
            out.append(
                Stretch(
                    "paused",
                    x(cursor),
                    x(segment.started_at) - x(cursor),
                    cursor,
                    segment.started_at,
                    None,
                    None,
                )
            )
            if silence:
                audio_s += _ms(cursor, segment.started_at) / 1000
        out.append(
            Stretch(
                "recorded",
                x(segment.started_at),
                max(x(seg_end) - x(segment.started_at), 0.5),
                segment.started_at,
                seg_end,
                segment.ended_by.value if segment.ended_by else None,
                round(audio_s, 3),
            )
        )
        audio_s += _ms(segment.started_at, seg_end) / 1000
        cursor = seg_end
    if cursor < end and recording.segments:
        out.append(Stretch("paused", x(cursor), x(end) - x(cursor), cursor, end, None, None))
    for gap in recording.gaps:
        at_ms, duration = float(gap.get("at_ms") or 0), float(gap.get("duration_ms") or 0)
        lost_at = start + timedelta(milliseconds=at_ms)
        lost_end = lost_at + timedelta(milliseconds=duration)
        out.append(
            Stretch(
                "lost",
                x(lost_at),
                max(x(lost_end) - x(lost_at), 1.0),
                lost_at,
                lost_end,
                str(gap.get("reason") or "lost"),
                None,
            )
        )
    return out
