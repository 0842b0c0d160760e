"""Wire dialects of live call audio, each parsed into `telephony.media.events`."""

from __future__ import annotations

from telephony.media.events import Parser
from telephony.media.ws.jsonstream import CAMEL, SNAKE, JsonStreamParser
from telephony.media.ws.pcmstream import PcmStreamParser

DIALECTS = ("twilio", "telnyx", "jambonz", "audiofork")


def parser_for(dialect: str) -> Parser:
    """A fresh parser for one socket of `dialect` (PROTOCOLS.md)."""
    if dialect == "twilio":
        return JsonStreamParser("twilio", CAMEL)
    if dialect == "telnyx":
        return JsonStreamParser("telnyx", SNAKE)
    if dialect == "jambonz":
        return PcmStreamParser("jambonz", ("audio.jambonz.org",))
    if dialect == "audiofork":
        return PcmStreamParser("audiofork", ("audio.drachtio.org", "audiostream.drachtio.org"))
    raise ValueError(f"unknown media dialect {dialect!r}")
