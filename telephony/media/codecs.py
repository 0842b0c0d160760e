"""The codecs a stream may carry, and what can be known of a packet without decoding it.

Two kinds. *Sample* codecs (G.711, L16) have a fixed width per sample: the
recorder interleaves their bytes as they come and a download reads them back
unchanged. *Packet* codecs (G.722, Opus, AMR-WB) are kept as the packets
that arrived, RTP payloads exactly as received, and decoded only when a
recording is downloaded. Placing a packet on the recording's timeline needs
its length in samples: here it is read from the packet's own header (an Opus
TOC byte, AMR-WB's table of contents), never by decoding on the hot path.

Rates: a packet codec's audio has the rate its decoder gives, whatever the
engine's `sample_rate` says of the RTP clock: G.722 and AMR-WB 16 kHz, Opus
48 kHz (RFC 7587's clock; the decoder's output).
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Literal

Encoding = Literal["mulaw", "alaw", "l16le", "l16be", "g722", "opus", "amrwb"]

SAMPLE_CODECS: frozenset[str] = frozenset({"mulaw", "alaw", "l16le", "l16be"})
PACKET_CODECS: frozenset[str] = frozenset({"g722", "opus", "amrwb"})
NATIVE_RATE = {"g722": 16000, "amrwb": 16000, "opus": 48000}
MAX_PACKET_S = 1.0  # longer packets are refused: a download reads this far before a block


def stored_rate(encoding: str, declared_hz: int) -> int:
    """The rate the stored audio is kept (and downloaded) at."""
    return NATIVE_RATE.get(encoding, declared_hz)


def packet_samples(encoding: str, payload: bytes) -> int:
    """Samples per channel of one packet at the codec's stored rate; ValueError when the
    packet is malformed (it would never decode)."""
    if encoding == "opus":
        count = opus_samples(payload)
    elif encoding == "amrwb":
        count = 320 * len(amrwb_frames(payload))
    elif encoding == "g722":
        count = 2 * len(payload)  # 64 kbit/s: a byte holds two 16 kHz samples
    else:
        raise ValueError(f"{encoding} is not a packet codec")
    if not 0 < count <= MAX_PACKET_S * NATIVE_RATE[encoding]:
        raise ValueError(f"a {encoding} packet of {count} samples")
    return count


# -- Opus (RFC 6716 section 3.1): the TOC byte ---------------------------------------

# Frame length at 48 kHz by TOC config: SILK NB/MB/WB 10/20/40/60 ms, hybrid SWB/FB
# 10/20 ms, CELT NB/WB/SWB/FB 2.5/5/10/20 ms.
_OPUS_FRAME = [480, 960, 1920, 2880] * 3 + [480, 960] * 2 + [120, 240, 480, 960] * 4


def opus_samples(payload: bytes) -> int:
    """48 kHz samples of one Opus packet, from its TOC byte (and frame count byte)."""
    if not payload:
        raise ValueError("an empty Opus packet")
    toc = payload[0]
    code = toc & 0x03
    if code == 0:
        frames = 1
    elif code in (1, 2):
        frames = 2
    else:
        if len(payload) < 2:
            raise ValueError("an Opus code 3 packet without its frame count")
        frames = payload[1] & 0x3F
        if frames == 0:
            raise ValueError("an Opus packet of no frames")
    total = frames * _OPUS_FRAME[toc >> 3]
    if total > 5760:
        raise ValueError("an Opus packet longer than 120 ms")  # RFC 6716 3.2.5
    return total


# -- AMR-WB (RFC 4867): RTP payloads and the storage format its decoders read ---------

# Speech bits per frame type: 0-8 the nine modes, 9 comfort noise (SID), 14 speech
# lost, 15 no data; 10-13 are reserved.
AMRWB_BITS = {0: 132, 1: 177, 2: 253, 3: 285, 4: 317, 5: 365, 6: 397, 7: 461, 8: 477}
AMRWB_BITS |= {9: 40, 14: 0, 15: 0}
AMRWB_MAGIC = b"#!AMR-WB\n"  # RFC 4867 section 5: the file format


@dataclass(frozen=True)
class AmrFrame:
    kind: int  # the frame type
    quality: int  # Q: 0 when the frame is damaged
    speech: bytes  # the speech bits, left-aligned, zero padded to whole bytes

    def storage(self) -> bytes:
        """The frame as AMR-WB's storage format has it: a ToC byte, then the bits."""
        return bytes([(self.kind << 3) | (self.quality << 2)]) + self.speech


def amrwb_frames(payload: bytes) -> list[AmrFrame]:
    """The frames of an RFC 4867 payload in either mode (no interleaving, no CRC).

    An SDP chooses octet-aligned or bandwidth-efficient, and a forked stream
    does not say which: a payload is read in the one its bytes fit exactly
    (octet-aligned first, whose reserved bits must be zero).
    """
    frames = _octet_aligned(payload)
    if frames is None:
        frames = _bandwidth_efficient(payload)
    if frames is None:
        raise ValueError("not an AMR-WB payload in either RTP mode")
    return frames


def _octet_aligned(p: bytes) -> list[AmrFrame] | None:
    if len(p) < 2 or p[0] & 0x0F:  # CMR, then four reserved zero bits
        return None
    at, toc = 1, []
    while True:
        if at >= len(p):
            return None
        entry = p[at]
        at += 1
        kind = (entry >> 3) & 0x0F
        if entry & 0x03 or kind not in AMRWB_BITS:
            return None
        toc.append((kind, (entry >> 2) & 1))
        if not entry & 0x80:
            break
    frames = []
    for kind, quality in toc:
        size = (AMRWB_BITS[kind] + 7) // 8
        if at + size > len(p):
            return None
        frames.append(AmrFrame(kind, quality, p[at : at + size]))
        at += size
    return frames if at == len(p) else None


def _bandwidth_efficient(p: bytes) -> list[AmrFrame] | None:
    bits = _Bits(p)
    try:
        bits.take(4)  # CMR
        toc = []
        while True:
            more, kind, quality = bits.take(1), bits.take(4), bits.take(1)
            if kind not in AMRWB_BITS:
                return None
            toc.append((kind, quality))
            if not more:
                break
        frames = []
        for kind, quality in toc:
            width = AMRWB_BITS[kind]
            value = bits.take(width) if width else 0
            speech = (value << (-width % 8)).to_bytes((width + 7) // 8, "big") if width else b""
            frames.append(AmrFrame(kind, quality, speech))
    except EOFError:
        return None
    rest = bits.left
    return frames if rest < 8 and bits.take(rest) == 0 else None


class _Bits:
    def __init__(self, data: bytes) -> None:
        self.value = int.from_bytes(data, "big")
        self.size = 8 * len(data)
        self.at = 0

    @property
    def left(self) -> int:
        return self.size - self.at

    def take(self, count: int) -> int:
        if self.at + count > self.size:
            raise EOFError
        self.at += count
        return (self.value >> (self.size - self.at)) & ((1 << count) - 1)


# -- a packet as the recorder stores it ----------------------------------------------

# Track (channel index), position on the recording's timeline (samples at the
# stored rate), payload length; then the payload as received.
PACKET_HEADER = struct.Struct("<BQH")


@dataclass(frozen=True)
class StoredPacket:
    track: int
    position: int
    payload: bytes


def pack(track: int, position: int, payload: bytes) -> bytes:
    return PACKET_HEADER.pack(track, position, len(payload)) + payload


def unpack(plaintext: bytes) -> Iterator[StoredPacket]:
    """The packets of one chunk, in the order they were sealed; ValueError when the
    bytes do not hold whole packets (which a verified chunk always does)."""
    view = memoryview(plaintext)
    at = 0
    while at < len(view):
        if at + PACKET_HEADER.size > len(view):
            raise ValueError("a packet header cut short")
        track, position, size = PACKET_HEADER.unpack_from(view, at)
        at += PACKET_HEADER.size
        if at + size > len(view):
            raise ValueError("a packet cut short")
        yield StoredPacket(track, position, bytes(view[at : at + size]))
        at += size
