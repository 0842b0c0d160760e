"""What an INVITE's headers and body say, before any call is touched (SIP.md 1, 2.4, 4.1).

The SDP offer and the SIPREC metadata out of a body that may be multipart,
the extensions the peer requires and supports, its session interval. A
request that cannot be answered raises `Refusal`, the status to answer.
"""

from __future__ import annotations

from telephony.media.sip import metadata, multipart
from telephony.media.sip.message import Request
from telephony.media.sip.replies import warning

ACCEPT = "application/sdp, multipart/mixed"


def session_interval(request: Request) -> int | None:
    """Session-Expires' delta-seconds (RFC 4028), None when absent or not a number."""
    value = (request.headers.get("session-expires") or "").split(";")[0].strip()
    return int(value) if value.isascii() and value.isdigit() and len(value) <= 9 else None


def supported(request: Request) -> set[str]:
    return {t.strip().lower() for v in request.headers.get_all("supported") for t in v.split(",")}


def media_type(request: Request) -> str:
    return (request.headers.get("content-type") or "").split(";")[0].strip().lower()


def offer_of(request: Request) -> tuple[bytes, metadata.Metadata | None]:
    """The SDP offer and the SIPREC metadata of an INVITE's body (SIP.md 4.1)."""
    content_type = request.headers.get("content-type") or ""
    media_type = content_type.split(";")[0].strip().lower()
    if not request.body:
        raise Refusal(488, "Not Acceptable Here", (warning(399, "no SDP offer"),))
    if media_type == "application/sdp":
        return request.body, None
    if media_type != "multipart/mixed":
        raise Refusal(415, "Unsupported Media Type", (("accept", ACCEPT),))
    parts = multipart.parse(content_type, request.body)
    offers = [p for p in parts if p.media_type == "application/sdp"]
    described = [
        p
        for p in parts
        if p.media_type in metadata.MEDIA_TYPES or p.disposition == "recording-session"
    ]
    for part in parts:
        required = "handling=required" in part.headers.get("content-disposition", "").replace(
            " ", ""
        )
        if required and part not in offers and part not in described:
            raise Refusal(415, "Unsupported Media Type", (("accept", ACCEPT),))
    if not offers:
        raise Refusal(488, "Not Acceptable Here", (warning(399, "no SDP part"),))
    return offers[0].content, metadata.parse(described[0].content) if described else None


class Refusal(Exception):
    def __init__(self, status: int, reason: str, headers: tuple[tuple[str, str], ...]) -> None:
        super().__init__(reason)
        self.status, self.reason, self.headers = status, reason, headers


def required(request: Request) -> set[str]:
    return {t.strip().lower() for t in request.headers.get_all("require") if t.strip()}
