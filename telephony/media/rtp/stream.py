"""One received RTP stream (RFC 3550, RFC 4733; SIP.md 5 and 6): datagrams in, audio out.

What arrives on an answered stream's port is checked, ordered and placed here;
what comes out is audio at a sample position of the recording's clock, and
digits, the same shapes the WebSocket dialects give the recorder:
- a datagram that is not RTP of this stream (too big, not version 2, RTCP on
  the RTP port, a payload type the answer did not name, comfort noise) is
  dropped and counted (`drops`, for /metrics);
- the first source to send two in-sequence packets of one SSRC is latched
  (RFC 3550 A.1 probation); other sources are dropped, so nobody who finds the
  port can speak into a consented recording;
- sequence numbers extend across their 16-bit wrap; duplicates and packets
  later than the jitter window are dropped; a jump resynchronises after two
  in-sequence packets;
- a stream, and each new SSRC, is anchored at its first packet's arrival (no
  earlier than what was already placed); positions follow the RTP timestamp
  from there, compared as signed 32-bit numbers, so its wrap does no harm;
- a packet next in sequence goes out at once; after a gap, the packets behind it are
  held until it fills or they are `playout` old, and go out in sequence order. The
  writer judges each by its arrival, so going out early changes no recording; and it
  keeps the jitter window's cost to the streams that lose or reorder packets.
Gaps are left to the recorder's timeline, which fills them with silence.
"""

from __future__ import annotations

import heapq
import struct
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

HEADER = struct.Struct("!BBHII")
_SEQ_TS_SSRC = struct.Struct("!HII")  # the header past its first two bytes
MAX_DATAGRAM = 1500  # G.711 at 120 ms is 960 bytes of payload
COMFORT_NOISE_PT = 13
MAX_DROPOUT = 3000  # RFC 3550 A.1
MAX_MISORDER = 100
PROBATION = 2  # in-sequence packets before a source (or a resync) is believed
DISCONTINUITY_S = 30.0  # a timestamp jump past this re-anchors on arrival
RELATCH_SILENCE_S = 2.0  # a latched address quiet this long may be replaced by another
SSRC_QUIET_S = 0.1  # a new SSRC from the latched address takes over once the old is quiet
RATE_PER_S = 300.0  # three times 10 ms packets: more is a flood, dropped before parsing
BURST = 100.0
# The latched source has a budget of its own: a flood from another port of the offer's
# address (the check that lets it through) must not starve the stream being recorded.
DTMF = "0123456789*#ABCD"


class Placed(NamedTuple):
    """Tuples, not dataclasses: one of each is made for every packet of every leg."""

    position: int  # in samples of the recording's clock
    payload: bytes  # codec bytes as received
    arrival: float  # when it was received (the recording clock): the window judges that
    # A run of packets (receive_run): each one's arrival, on the loop's clock (not the
    # recording's), for whoever must judge them one by one; None for a single packet.
    arrivals: tuple[float, ...] | None = None

    def split(self, started: float) -> list[Placed]:
        """A run as its packets, each at its own arrival (a byte a sample: G.711)."""
        if self.arrivals is None:
            return [self]
        return [
            Placed(self.position + i * len(part), part, at - started)
            for i, (part, at) in enumerate(run_packets(self.payload, self.arrivals))
        ]


def run_packets(payload: bytes, arrivals: Sequence[float]) -> list[tuple[bytes, float]]:
    """A run's joined payload cut back into its packets' (equal ones, as rtp/_batch.c only
    joins those), each with its arrival."""
    size = len(payload) // len(arrivals)
    return [(payload[i * size : (i + 1) * size], at) for i, at in enumerate(arrivals)]


@dataclass(frozen=True)
class Digit:
    digit: str
    position: int  # where the event started, in samples
    duration_ms: int


class Packet(NamedTuple):
    marker: bool
    pt: int
    seq: int
    ts: int
    ssrc: int
    payload: bytes


class Dropped(Exception):
    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


def parse(data: bytes) -> Packet:
    """An RTP packet's fields, CSRCs, extension and padding skipped; Dropped otherwise."""
    if len(data) > MAX_DATAGRAM:
        raise Dropped("too_large")
    if len(data) < HEADER.size:
        raise Dropped("short")
    first, second, seq, ts, ssrc = HEADER.unpack_from(data)
    if first == 0x80 and second < 128:  # the usual: no CSRC, extension, padding, marker
        return Packet(False, second, seq, ts, ssrc, data[HEADER.size :])
    if first >> 6 != 2:
        raise Dropped("not_rtp")
    if 192 <= second <= 223:
        raise Dropped("rtcp")  # RTCP multiplexed on the RTP port (RFC 5761)
    start = HEADER.size + 4 * (first & 0x0F)
    if first & 0x10:  # an extension: 16-bit profile, 16-bit length in words
        if len(data) < start + 4:
            raise Dropped("short")
        start += 4 + 4 * int.from_bytes(data[start + 2 : start + 4], "big")
    end = len(data)
    if first & 0x20:
        padding = data[-1]
        if padding == 0 or start + padding > end:
            raise Dropped("bad_padding")
        end -= padding
    if start > end:
        raise Dropped("short")
    return Packet(bool(second & 0x80), second & 0x7F, seq, ts, ssrc, bytes(data[start:end]))


def signed32(delta: int) -> int:
    """A timestamp difference, modulo 2**32, as the signed number it means."""
    return ((delta + 2**31) % 2**32) - 2**31


@dataclass
class _Source:
    """What is known of the current SSRC: its sequence state and anchor."""

    ssrc: int
    address: tuple[str, int]
    highest: int  # extended sequence number
    anchor_ts: int
    anchor_position: int
    bad_seq: int | None = None
    last_ts: int = 0


@dataclass
class RtpStream:
    """One answered `m=` line's packets, for a codec of `clock_hz` samples a second."""

    audio_pt: int
    event_pt: int | None = None
    expected_ip: str | None = None  # the offer's c=: only it may send, on any port
    clock_hz: int = 8000
    playout_s: float = 0.08
    drops: Counter[str] = field(default_factory=Counter)
    _source: _Source | None = None
    _latched_at: float = 0.0  # arrival time of the latched source's last packet
    _probation: list[tuple[Packet, tuple[str, int], float]] = field(default_factory=list)
    # The jitter window, a heap by extended sequence number: public, so the node's tick
    # asks whether a stream holds any with a truth test, not a call a packet.
    held: list[tuple[int, float, Packet]] = field(default_factory=list)
    _released: int = -1  # the extended sequence number last sent out
    _placed_end: int = 0  # the sample after the last placed audio
    _told: dict[tuple[int, int], None] = field(default_factory=dict)  # (ssrc, ts) of digits told
    _pending: tuple[tuple[int, int], int, int, int] | None = None  # (key, event, position, units)
    _latched_budget: _Bucket = field(default_factory=lambda: _Bucket())
    _others_budget: _Bucket = field(default_factory=lambda: _Bucket())

    def __post_init__(self) -> None:
        self._discontinuity = round(DISCONTINUITY_S * self.clock_hz)

    def receive(self, data: bytes, source: tuple[str, int], now: float) -> list[Placed | Digit]:
        """One datagram from `source` at `now` (seconds on the recording clock), and what
        goes out with it: itself when it is next in sequence (and whatever waited behind
        it), nothing when one before it is missing. Held packets that are `playout` old go
        out by `release`, which one task calls each tick for the streams that hold some."""
        current = self._source
        latched = current is not None and source == current.address
        budget = self._latched_budget if latched else self._others_budget
        if not budget.admit(now):
            self.drops["rate"] += 1
            return []
        if (
            latched
            and not self.held
            and HEADER.size < len(data) <= MAX_DATAGRAM
            and data[0] == 0x80
            and data[1] == self.audio_pt
        ):
            # The usual packet, fifty a second a leg: the latched source's audio, no CSRC,
            # extension, padding or marker. Next in sequence with nothing held (then what
            # went out last is the highest seen), it is placed here; anything else takes
            # the full path below, which would do the same with it.
            assert current is not None
            seq, ts, ssrc = _SEQ_TS_SSRC.unpack_from(data, 2)
            highest = current.highest
            if ssrc == current.ssrc and seq == (highest + 1) & 0xFFFF and highest == self._released:
                self._latched_at = now
                self._released = current.highest = highest + 1
                return self._place_audio(ts, data[HEADER.size :], now)
        try:
            packet = parse(data)
        except Dropped as dropped:
            self.drops[dropped.reason] += 1
            return []
        if self.expected_ip is not None and source[0] != self.expected_ip:
            self.drops["wrong_source"] += 1
            return []
        if packet.pt == COMFORT_NOISE_PT:
            self.drops["comfort_noise"] += 1  # a silence starts: the next audio fills it
            return []
        if packet.pt not in (self.audio_pt, self.event_pt):
            self.drops["unknown_pt"] += 1
            return []
        if current is None or packet.ssrc != current.ssrc or not latched:
            quiet = now - self._latched_at
            wait = SSRC_QUIET_S if latched else RELATCH_SILENCE_S
            if current is not None and quiet < wait:
                # Another sender while the latched one talks (an injection), or a second
                # SSRC interleaved with the first (the first is kept): neither is recorded.
                self.drops["other_source"] += 1
                return []
            return self._on_probation(packet, source, now)
        self._latched_at = now
        return self._sequenced(packet, now)

    def receive_run(
        self,
        source: tuple[str, int],
        data: bytes,
        count: int,
        header: tuple[int, int, int, int],
        arrivals: tuple[float, ...],
        started: float,
    ) -> list[Placed | Digit]:
        """What the node's batch read (rtp/_batch.c): `count` packets of one source, pt,
        SSRC, in sequence and contiguous in time, their payloads joined in `data` and their
        (pt, seq, ts, ssrc) those of the first; or, count 0, one datagram as received.
        `arrivals` are the loop's clock; `started` is the recording clock's zero on it.

        The usual run, the latched source's next packets with nothing held, goes out as one
        Placed: what `receive` would make of them one by one, joined. Anything else is
        taken apart and goes through `receive`, packet by packet."""
        current = self._source
        pt, seq, ts, ssrc = header
        if (
            count
            and current is not None
            and source == current.address
            and not self.held
            and pt == self.audio_pt
            and ssrc == current.ssrc
            and seq == (current.highest + 1) & 0xFFFF
            and current.highest == self._released
        ):
            first, last = arrivals[0] - started, arrivals[-1] - started
            if self._latched_budget.admit_many(count, last):
                self._latched_at = last
                self._released = current.highest = current.highest + count
                return self._place_audio(ts, data, first, arrivals if count > 1 else None)
        if not count:
            return self.receive(data, source, arrivals[0] - started)
        out: list[Placed | Digit] = []
        size = len(data) // count
        for i, at in enumerate(arrivals):
            packet = HEADER.pack(0x80, pt, (seq + i) & 0xFFFF, (ts + i * size) & 0xFFFFFFFF, ssrc)
            out += self.receive(packet + data[i * size : (i + 1) * size], source, at - started)
        return out

    def moved(self, expected_ip: str | None) -> None:
        """A re-offer names another address or port for this stream (media anchored
        elsewhere, after a transfer): the latched address is believed no more, and the
        first source to pass probation from the offer's address takes the stream at once,
        not after RELATCH_SILENCE_S (SIP.md 5, "Source latching")."""
        self.expected_ip = expected_ip
        if self._source is not None:
            self._source.address = ("", 0)  # nobody's: every source is on probation now
        self._latched_at = float("-inf")
        self._probation = []

    @property
    def due(self) -> float | None:
        """When the next held packet is `playout` old (recording clock), if one is held:
        the packet missing before it is given up then."""
        return self.held[0][1] + self.playout_s if self.held else None

    @property
    def backlog(self) -> int:
        """Packets held (the jitter window and probation): a few, whatever arrives."""
        return len(self.held) + len(self._probation)

    def release(self, now: float, *, everything: bool = False) -> list[Placed | Digit]:
        """The held packets that are next in sequence or `playout` old (all of them at the
        end), in order: a packet waits only while one before it is missing."""
        out: list[Placed | Digit] = []
        held = self.held
        while held and (
            everything or held[0][0] <= self._released + 1 or now - held[0][1] >= self.playout_s
        ):
            ext, arrival, packet = heapq.heappop(held)
            if ext <= self._released:
                self.drops["duplicate"] += 1
                continue
            self._released = ext
            out += self._place(packet, arrival)
        return out

    # -- sources and sequence numbers ------------------------------------------------------

    def _on_probation(
        self, packet: Packet, source: tuple[str, int], now: float
    ) -> list[Placed | Digit]:
        waiting = [p for p in self._probation if p[0].ssrc == packet.ssrc and p[1] == source]
        if waiting and (packet.seq - waiting[-1][0].seq) % 65536 == 1:
            waiting.append((packet, source, now))
            if len(waiting) >= PROBATION:
                out = self.release(now, everything=True)  # the old SSRC's last packets first
                self._latch(waiting, now)
                for held, _, at in waiting:
                    self._hold(held, at)
                return out + self.release(now)
            self._probation = waiting
            return []
        self._probation = [(packet, source, now)]
        return []

    def _latch(self, packets: list[tuple[Packet, tuple[str, int], float]], now: float) -> None:
        first, address, arrived = packets[0]
        position = max(round(arrived * self.clock_hz), self._placed_end)
        self._source = _Source(first.ssrc, address, first.seq - 1, first.ts, position)
        self._released = self._source.highest
        self._probation = []
        self._latched_at = now

    def _sequenced(self, packet: Packet, now: float) -> list[Placed | Digit]:
        source = self._source
        assert source is not None
        delta = (packet.seq - source.highest) % 65536
        if delta == 0:
            self.drops["duplicate"] += 1
            return []
        if delta <= MAX_DROPOUT:
            ext = source.highest + delta
            source.highest = ext
        elif delta >= 65536 - MAX_MISORDER:
            ext = source.highest - (65536 - delta)  # late, within the misorder window
            if ext <= self._released:
                self.drops["late"] += 1
                return []
        elif source.bad_seq is not None and packet.seq == source.bad_seq:
            # The packet after a jump followed it (A.1's bad_seq): the sender renumbered.
            # What is held goes out first; then numbering and anchor start again here.
            out = self.release(now, everything=True)
            self._latch([(packet, source.address, now)], now)
            self._hold(packet, now)
            return out + self.release(now)
        else:
            source.bad_seq = (packet.seq + 1) % 65536
            self.drops["sequence_jump"] += 1
            return []
        if ext == self._released + 1:
            if not self.held:  # in sequence, nothing missing before it: the usual
                self._released = ext
                return self._place(packet, now)
            heapq.heappush(self.held, (ext, now, packet))
            return self.release(now)  # it fills a gap: what waited behind it follows
        heapq.heappush(self.held, (ext, now, packet))
        return []

    def _hold(self, packet: Packet, now: float) -> None:
        """Hold a packet of a just-latched source (its numbering starts at the first)."""
        source = self._source
        assert source is not None
        ext = source.highest + (packet.seq - source.highest) % 65536
        source.highest = max(source.highest, ext)
        heapq.heappush(self.held, (ext, now, packet))

    # -- placement -------------------------------------------------------------------------

    def _place(self, packet: Packet, arrival: float) -> list[Placed | Digit]:
        source = self._source
        assert source is not None
        if packet.pt == self.event_pt:
            position = source.anchor_position + signed32(packet.ts - source.anchor_ts)
            return self._event(packet, position)
        return self._place_audio(packet.ts, packet.payload, arrival)

    def _place_audio(
        self, ts: int, payload: bytes, arrival: float, arrivals: tuple[float, ...] | None = None
    ) -> list[Placed | Digit]:
        source = self._source
        assert source is not None
        position = source.anchor_position + signed32(ts - source.anchor_ts)
        placed_end = self._placed_end
        if position != placed_end:  # not right after the last (a gap, a repeat, a jump)
            limit = self._discontinuity
            if position < placed_end - limit or position > placed_end + limit:
                # A discontinuity (a restarted sender, a huge jump): re-anchor where we are.
                source.anchor_ts, source.anchor_position = ts, placed_end
                position = placed_end
            if position < placed_end:
                self.drops["behind"] += 1  # would overwrite what is placed
                return []
        if not payload:
            return []
        self._placed_end = position + len(payload)  # G.711: a byte a sample
        return [Placed(position, payload, arrival, arrivals)]

    def _event(self, packet: Packet, position: int) -> list[Placed | Digit]:
        """RFC 4733: one digit per (SSRC, timestamp), told when its end packet comes, or
        when another event starts without it (the ends were lost); repeats are ignored."""
        if len(packet.payload) < 4:
            self.drops["bad_event"] += 1
            return []
        key = (packet.ssrc, packet.ts)
        if key in self._told:
            return []  # the end, sent three times
        event, ended = packet.payload[0], bool(packet.payload[1] & 0x80)
        units = int.from_bytes(packet.payload[2:4], "big")
        out: list[Placed | Digit] = []
        if self._pending is not None and self._pending[0] != key:
            out += self._tell(*self._pending)
        self._pending = None
        if ended:
            out += self._tell(key, event, position, units)
        else:
            self._pending = (key, event, position, units)
        return out

    def _tell(self, key: tuple[int, int], event: int, position: int, units: int) -> list[Digit]:
        self._told[key] = None
        if len(self._told) > 64:
            del self._told[next(iter(self._told))]
        if event >= len(DTMF):
            return []  # flash (16) and other codes are not digits
        return [Digit(DTMF[event], position, units * 1000 // self.clock_hz)]


@dataclass
class _Bucket:
    """A token bucket: past RATE_PER_S (bursts of BURST) packets go unread."""

    tokens: float = BURST
    at: float = 0.0

    def admit(self, now: float) -> bool:
        self.tokens = min(BURST, self.tokens + (now - self.at) * RATE_PER_S)
        self.at = now
        if self.tokens < 1.0:
            return False
        self.tokens -= 1.0
        return True

    def admit_many(self, count: int, now: float) -> bool:
        """A run's packets, all or none (none: they are taken one by one, and `admit`
        drops those past the budget)."""
        tokens = min(BURST, self.tokens + (now - self.at) * RATE_PER_S)
        if tokens < count:
            return False
        self.tokens, self.at = tokens - count, now
        return True
