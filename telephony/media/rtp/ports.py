"""RTP ports of the configured range (TELEPHONY_RTP_PORTS; SIP.md 5, "Sockets").

An answered stream gets an even port and RTCP the one above it, both bound
for as long as the stream lives: only allocated ports listen. A freed port
goes to the back of the queue, so it is reused least recently used first:
a late packet of an ended call must not land in a new one. A port another
process holds is skipped and tried again later.
"""

from __future__ import annotations

import asyncio
import functools
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

Receive = Callable[[bytes, tuple[str, int]], None]


class _Receiver(asyncio.DatagramProtocol):
    def __init__(self, receive: Receive) -> None:
        # The loop calls the stream's own function: no call in between, and no new tuple
        # (an IPv4 socket's address is (host, port) already), fifty times a second a leg.
        self.datagram_received = receive  # type: ignore[method-assign, assignment]

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error for a datagram we never sent a reply to: nothing to do


@dataclass(eq=False)
class Bound:
    """One stream's pair of sockets: RTP on `port`, RTCP on `port + 1`."""

    port: int
    transports: tuple[asyncio.DatagramTransport, asyncio.DatagramTransport]
    closed: bool = False


class PortPool:
    """The even ports of [first, last] whose odd neighbour is in range too."""

    def __init__(self, host: str, first: int, last: int) -> None:
        self.host = host
        start = first + first % 2
        self._free: deque[int] = deque(range(start, last, 2))
        self.size = len(self._free)

    @property
    def free(self) -> int:
        return len(self._free)

    async def bind(self, rtp: Receive, rtcp: Receive) -> Bound | None:
        """A bound pair, or None when every free port is taken (the node is full)."""
        loop = asyncio.get_running_loop()
        for _ in range(len(self._free)):
            port = self._free.popleft()
            opened: list[asyncio.DatagramTransport] = []
            try:
                for number, receive in ((port, rtp), (port + 1, rtcp)):
                    transport, _ = await loop.create_datagram_endpoint(
                        functools.partial(_Receiver, receive), local_addr=(self.host, number)
                    )
                    opened.append(transport)
            except OSError:
                for transport in opened:
                    transport.close()
                self._free.append(port)  # another process has it now; maybe not later
                continue
            return Bound(port, (opened[0], opened[1]))
        return None

    def release(self, bound: Bound) -> None:
        """Close the pair and put its port at the back of the queue (once)."""
        if bound.closed:
            return
        bound.closed = True
        for transport in bound.transports:
            transport.close()
        self._free.append(bound.port)
