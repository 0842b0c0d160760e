"""RTP ports of the configured range (TELEPHONY_RTP_PORTS; SIP.md 5, "Sockets").

An answered stream gets an even port and RTCP the one above it, both bound
for as long as the stream lives: only allocated ports listen. A freed port
goes to the back of the queue, so it is reused least recently used first:
a late packet of an ended call must not land in a new one. A port another
process holds is skipped and tried again later.

RTP is read a tick at a time, not a datagram at a time (_batch.c says why):
the first datagram to arrive on any of the node's streams arms a timer of
TICK_S, and then every ready socket is read at once and its packets handed
to their stream in runs. A packet thus reaches the recorder up to TICK_S
late, which changes nothing it keeps: the window rule judges the kernel's
arrival time, and the crash bound (the seal interval, the jitter window and
this tick) stays under a second. RTCP, a datagram every few seconds, stays
on the event loop.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import socket
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from telephony.media.rtp._batch import Batch

if TYPE_CHECKING:
    # The stub's names (rtp/_batch.pyi): no such names at run time.
    from telephony.media.rtp._batch import Owner as Runs
    from telephony.media.rtp._batch import Run

log = logging.getLogger(__name__)

Receive = Callable[[bytes, tuple[str, int]], None]
TICK_S = 0.04  # two 20 ms packets a leg a tick: half the calls into Python
READ_LIMIT = 2048  # datagrams a socket a tick: a flood past it waits in the kernel's buffer


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, receive: Receive) -> None:
        self.datagram_received = receive  # type: ignore[method-assign, assignment]

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for a datagram we never sent a reply to: nothing to do


@dataclass(eq=False)
class Bound:
    """One stream's pair of sockets: RTP on `port` (read by the pool's batch), RTCP on
    `port + 1` (an event loop transport)."""

    port: int
    rtp: socket.socket
    rtcp: asyncio.DatagramTransport
    closed: bool = False
    kernel_drops: int = 0  # datagrams the kernel dropped for a full buffer, as of the close


class PortPool:
    """The even ports of [first, last] whose odd neighbour is in range too."""

    def __init__(self, host: str, first: int, last: int) -> None:
        self.host = host
        start = first + first % 2
        self._free: deque[int] = deque(range(start, last, 2))
        self.size = len(self._free)
        self._batch = Batch()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._armed = False  # the loop watches the batch's descriptor
        self._ticking: asyncio.TimerHandle | None = None

    @property
    def free(self) -> int:
        return len(self._free)

    async def bind(self, rtp: Runs, rtcp: Receive) -> Bound | None:
        """A bound pair, or None when every free port is taken (the node is full)."""
        loop = self._loop = asyncio.get_running_loop()
        family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for _ in range(len(self._free)):
            port = self._free.popleft()
            sock = socket.socket(family, socket.SOCK_DGRAM)
            try:
                sock.setblocking(False)
                sock.bind((self.host, port))
                control, _ = await loop.create_datagram_endpoint(
                    functools.partial(_Receiver, rtcp), local_addr=(self.host, port + 1)
                )
            except OSError:
                sock.close()
                self._free.append(port)  # another process has it now; maybe not later
                continue
            try:
                self._batch.register(sock.fileno(), rtp)
            except BaseException:
                sock.close()
                control.close()
                self._free.append(port)
                raise
            self._arm()
            return Bound(port, sock, control)
        return None

    def flush(self, bound: Bound) -> None:
        """Hand over what the stream's socket holds now (before its end: a BYE that comes
        right after the last packet must not leave it unread)."""
        if not bound.closed:
            self._hand(self._batch.take(bound.rtp.fileno(), READ_LIMIT))

    def dropped(self, bound: Bound) -> int:
        """Datagrams the kernel dropped on the stream's socket for a full buffer."""
        if bound.closed:
            return bound.kernel_drops
        return self._batch.dropped(bound.rtp.fileno())

    def release(self, bound: Bound) -> None:
        """Close the pair and put its port at the back of the queue (once)."""
        if bound.closed:
            return
        bound.closed = True
        bound.kernel_drops = self._batch.unregister(bound.rtp.fileno())
        bound.rtp.close()
        bound.rtcp.close()
        self._free.append(bound.port)

    def close(self) -> None:
        """The node's end: no more ticks."""
        if self._ticking is not None:
            self._ticking.cancel()
        if self._armed and self._loop is not None:
            self._loop.remove_reader(self._batch.fileno())
        self._armed = False
        self._batch.close()

    # -- the tick ------------------------------------------------------------------------

    def _arm(self) -> None:
        """Watch for the next datagram, unless a tick is already due."""
        if not self._armed and self._ticking is None and self._loop is not None:
            self._loop.add_reader(self._batch.fileno(), self._readable)
            self._armed = True

    def _readable(self) -> None:
        assert self._loop is not None
        self._loop.remove_reader(self._batch.fileno())
        self._armed = False
        self._ticking = self._loop.call_later(TICK_S, self._tick)

    def _tick(self) -> None:
        self._ticking = None
        self._hand(self._batch.drain(READ_LIMIT))
        if self._batch.registered():
            self._arm()

    @staticmethod
    def _hand(runs: list[Run]) -> None:
        for run in runs:
            try:
                run[0].received_run(run)
            except Exception:
                # One stream's fault must not lose the others' packets of this tick.
                log.exception("an RTP run could not be taken")
