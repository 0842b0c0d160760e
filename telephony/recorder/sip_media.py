"""A SIP call's media on this node: its RTP legs, and what they hand the recorder.

Each answered `m=` line is a `Leg`: its port pair, its `RtpStream` (latching,
ordering, placement), the track it records. A `SipCall` ties its legs to the
call's live stream: positions are samples since the INVITE, shared by the
legs so two one-way streams align, and each packet reaches the writer with
its arrival time, which the writer's window judges, not its release from
the jitter window: a packet that came before the start is never kept.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from telephony.domain.tracks import INBOUND
from telephony.media.rtp.ports import Bound
from telephony.media.rtp.stream import Digit, Placed, RtpStream
from telephony.media.sip import metadata
from telephony.media.sip.message import Request
from telephony.media.sip.uas import Peer
from telephony.metrics import Metrics
from telephony.recorder.hub import LiveStream

if TYPE_CHECKING:
    from telephony.media.rtp._batch import Run  # the stub's alias: no such name at run time

CLOCK_HZ = 8000
METRIC_EVERY = 10  # one lag sample in ten frames, as the WebSocket path takes

DialogKey = tuple[str, str, str]  # Call-ID, their tag, ours


@dataclass(eq=False)
class Leg:
    """One answered `m=` line: its sockets and its RTP state."""

    bound: Bound | None = None
    rtp: RtpStream | None = None
    track: str = INBOUND.name
    # Packets that arrived before `track_from` (the recording clock) keep `track_before`:
    # a SIPREC update may hand the stream to the other side (siprec_sides.remap).
    track_before: str = INBOUND.name
    track_from: float = float("-inf")
    label: str | None = None  # its a=label (SIPREC: the metadata's name for it)
    line: int = 0  # its m= line in the offer
    remote: tuple[str, int] | None = None  # where the offer last said it sends from
    call: SipCall | None = None  # set once the dialog exists: packets before it are dropped

    holding: set[Leg] | None = None  # the node's legs whose jitter window holds packets

    def received_run(self, run: Run) -> None:
        """What the node's batch read from this leg's socket this tick (rtp/ports.py)."""
        call, rtp = self.call, self.rtp
        if call is None or rtp is None or call.ended:
            return
        _, source, data, count, pt, seq, ts, ssrc, arrivals = run
        call.heard_at = arrivals[-1] - call.started
        out = rtp.receive_run(source, data, count, (pt, seq, ts, ssrc), arrivals, call.started)
        if out:
            call.deliver(self, out)
        if rtp.held and self.holding is not None:
            self.holding.add(self)  # SipCalls._release_held gives them out when due

    def release(self, now: float) -> bool:
        """What is due of the jitter window goes to the writer; True while more waits."""
        call, rtp = self.call, self.rtp
        if call is None or rtp is None or call.ended:
            return False
        out = rtp.release(now - call.started)
        if out:
            call.deliver(self, out)
        return rtp.due is not None

    def rtcp(self, data: bytes, source: tuple[str, int]) -> None:
        """Bound so nothing else takes the port; never parsed as audio (SIP.md 5)."""


@dataclass(eq=False)
class SipCall:
    key: DialogKey
    invite: Request  # the dialog's INVITE: our BYE's addresses come from it
    peer: Peer
    live: LiveStream
    legs: list[Leg]
    answer_body: bytes
    offer_version: str | None
    remote_cseq: int
    started: float  # loop time of the recording clock's zero
    wall_start: datetime
    session_id: str = field(default_factory=lambda: str(secrets.randbelow(10**12)))
    version: int = 1
    heard_at: float = 0.0  # recording clock of the last datagram
    on_hold: bool = False
    offered: bool = False  # our 200 to an offerless re-INVITE awaits its answer in the ACK
    ended: bool = False
    local_cseq: int = 0
    siprec: bool = False
    expires_at: float | None = None  # loop time the caller's session refresh is due by
    described: metadata.Metadata | None = None  # SIPREC: who sends which stream
    metrics: Metrics | None = None
    # The loop's clock, kept: asyncio.get_running_loop() makes a getpid() system call (its
    # fork check), and a packet must not cost one.
    clock: Callable[[], float] = time.monotonic

    def __post_init__(self) -> None:
        # Arrivals become wall-clock times from this: fromtimestamp is half the cost of
        # adding a timedelta, and it runs for every packet.
        self._wall_epoch = self.wall_start.timestamp()

    def deliver(self, leg: Leg, out: Sequence[Placed | Digit]) -> None:
        writer, live, epoch = self.live.writer, self.live, self._wall_epoch
        track, since = leg.track, leg.track_from
        for item in out:
            if type(item) is not Placed:
                continue  # digits: the recorder keeps none, as from the WebSocket dialects
            arrivals = item.arrivals
            if arrivals is not None and (writer is None or item.arrival < since):
                # A run that the pre-roll keeps, or that may straddle a handover of the
                # stream to the other side: its packets, each judged by its own arrival.
                self.deliver(leg, item.split(self.started))
                continue
            packets = 1 if arrivals is None else len(arrivals)
            live.frames += packets
            if self.metrics is not None and live.frames % METRIC_EVERY < packets:
                # How far the placed audio runs behind its place on the recording clock:
                # the jitter window's playout, the batch's tick, and whatever the node
                # falls behind by (a run's first packet: the oldest).
                lag_s = self.clock() - self.started - item.position / CLOCK_HZ
                self.metrics.media_lag.observe(lag_s)
            arrival = datetime.fromtimestamp(epoch + item.arrival, UTC)
            side = track if item.arrival >= since else leg.track_before
            if writer is None:  # until the writer opens (hub.PREROLL_FRAMES)
                live.hold((side, item.payload, item.position, arrival))
            elif arrivals is None:
                writer.offer_placed(side, item.payload, item.position, arrival)
            else:
                offset = epoch - self.started  # the loop's clock to wall-clock seconds
                until = datetime.fromtimestamp(offset + arrivals[-1], UTC)
                writer.offer_placed(
                    side, item.payload, item.position, arrival, (until, arrivals, offset)
                )
