"""Binary L16 dialects (PROTOCOLS.md §3): jambonz `listen` and FreeSWITCH mod_audio_fork.

One text frame of metadata first, then raw 16-bit little-endian PCM, stereo
interleaved left (inbound) / right (outbound). Frames may cut a sample or a
stereo pair anywhere: the remainder waits for the next frame.
"""

from __future__ import annotations

import array
from typing import Any

import orjson

from telephony.media.events import (
    Audio,
    Dtmf,
    MediaEvent,
    ProtocolViolation,
    StreamStart,
    StreamStop,
)


class PcmStreamParser:
    def __init__(self, dialect: str, subprotocols: tuple[str, ...]) -> None:
        self.dialect = dialect
        self.subprotocols = subprotocols
        self.start: StreamStart | None = None
        self._remainder = b""

    @property
    def _frame_bytes(self) -> int:
        assert self.start is not None
        return 2 * len(self.start.tracks)

    def feed_text(self, text: str) -> list[MediaEvent]:
        try:
            message = orjson.loads(text)  # bounded depth: no RecursionError
        except ValueError:
            message = None
        if self.start is None:
            if not isinstance(message, dict):
                raise ProtocolViolation(1007, "the first frame must be JSON metadata")
            if "event" in message:
                # A JSON media-stream peer on the wrong path: say so rather than record nothing.
                raise ProtocolViolation(1007, "JSON media-stream events belong on /v1/media/twilio")
            self.start = self._metadata(message)
            return [self.start]
        if isinstance(message, dict) and message.get("event") == "dtmf":
            digit = message.get("dtmf")
            if isinstance(digit, str):
                return [Dtmf(digit, None)]
        return []

    def _metadata(self, message: dict[str, Any]) -> StreamStart:
        rate = message.get("sampleRate", 8000)
        if isinstance(rate, str) and rate.isascii() and rate.isdigit() and len(rate) <= 6:
            rate = int(rate)
        # jambonz documents 8000 to 64000; mod_audio_fork takes multiples of 8000 up to 64000.
        if not isinstance(rate, int) or isinstance(rate, bool) or not 8000 <= rate <= 64000:
            raise ProtocolViolation(1007, "sampleRate out of range")
        stereo = message.get("mixType") == "stereo" or message.get("channels") == 2
        token = message.get("token")
        return StreamStart(
            token if isinstance(token, str) else None,
            ("inbound", "outbound") if stereo else ("inbound",),
            "l16le",
            rate,
            message.get("callSid") if isinstance(message.get("callSid"), str) else None,
        )

    def feed_binary(self, data: bytes) -> list[MediaEvent]:
        if self.start is None:
            raise ProtocolViolation(1003, "metadata text must come before audio")
        if not data:
            return [StreamStop("graceful")] if self.dialect == "audiofork" else []
        data = self._remainder + data
        usable = len(data) - len(data) % self._frame_bytes
        self._remainder = data[usable:]
        if not usable:
            return []
        whole = data[:usable]
        if len(self.start.tracks) == 1:
            return [Audio("inbound", whole, None, None)]
        pairs = array.array("h", whole)  # 2-byte units; byte order is kept as it is
        left, right = pairs[0::2].tobytes(), pairs[1::2].tobytes()
        return [Audio("inbound", left, None, None), Audio("outbound", right, None, None)]

    def finish(self) -> list[MediaEvent]:
        self._remainder = b""  # half a sample is not audio
        return []
