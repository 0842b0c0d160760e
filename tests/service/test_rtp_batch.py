"""The node's batched RTP receive (telephony/media/rtp/_batch.c, SIP.md 5) on real sockets.

What a drain hands Python is checked against what was sent: the runs it joins, the
datagrams it leaves alone, the kernel's arrival times and drop counts, and its bounds.
"""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator

import pytest

from telephony.media.rtp._batch import Batch

SSRC = 0x1234ABCD


def rtp(
    seq: int, ts: int, payload: bytes, *, pt: int = 8, ssrc: int = SSRC, first: int = 0x80
) -> bytes:
    return struct.pack("!BBHII", first, pt, seq % 65536, ts % 2**32, ssrc) + payload


class Pair:
    """A registered receiving socket and a sender aimed at it."""

    def __init__(self, batch: Batch, owner: object = "leg") -> None:
        self.rx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.rx.bind(("127.0.0.1", 0))
        self.rx.setblocking(False)
        self.tx = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.tx.bind(("127.0.0.1", 0))
        self.to = self.rx.getsockname()
        self.source = self.tx.getsockname()
        batch.register(self.rx.fileno(), owner)

    def send(self, *datagrams: bytes) -> None:
        for d in datagrams:
            self.tx.sendto(d, self.to)

    def close(self) -> None:
        self.rx.close()
        self.tx.close()


@pytest.fixture
def batch() -> Iterator[Batch]:
    b = Batch()
    yield b
    b.close()


@pytest.fixture
def pair(batch: Batch) -> Iterator[Pair]:
    p = Pair(batch)
    yield p
    batch.unregister(p.rx.fileno())
    p.close()


def talk(n: int, seq0: int = 65534, ts0: int = 2**32 - 160, size: int = 160) -> list[bytes]:
    return [rtp(seq0 + i, ts0 + size * i, bytes([i % 256]) * size) for i in range(n)]


def test_packets_that_continue_each_other_come_as_one_run(batch: Batch, pair: Pair) -> None:
    """Across the sequence and timestamp wraps: one run, the first packet's header."""
    packets = talk(5)
    before = time.monotonic()
    pair.send(*packets)
    after = time.monotonic()
    (run,) = batch.drain(64)
    owner, source, data, count, pt, seq, ts, ssrc, arrivals = run
    assert (owner, source, count, pt, seq, ts, ssrc) == (
        "leg",
        pair.source,
        5,
        8,
        65534,
        2**32 - 160,
        SSRC,
    )
    assert data == b"".join(p[12:] for p in packets)
    # The kernel's times, on the loop's clock: stamped while sendto ran, not at the drain.
    assert len(arrivals) == 5 and list(arrivals) == sorted(arrivals)
    assert before - 0.001 <= arrivals[0] and arrivals[-1] <= after + 0.001
    assert batch.drain(64) == []  # nothing is handed twice


@pytest.mark.parametrize(
    ("second", "why"),
    [
        (rtp(1002, 480, b"\x01" * 160), "a lost packet before it"),
        (rtp(1001, 800, b"\x01" * 160), "a timestamp jump"),
        (rtp(1001, 320, b"\x01" * 80), "another payload length"),
        (rtp(1001, 320, b"\x01" * 160, ssrc=7), "another SSRC"),
        (rtp(1001, 320, b"\x01" * 160, pt=0), "another payload type"),
    ],
)
def test_a_packet_that_does_not_continue_the_run_starts_another(
    batch: Batch, pair: Pair, second: bytes, why: str
) -> None:
    pair.send(rtp(1000, 160, b"\x00" * 160), second)
    runs = batch.drain(64)
    assert [r[3] for r in runs] == [1, 1], why
    assert runs[1][2] == second[12:]
    assert runs[1][4:8] == struct.unpack("!xBHII", second[:12])


def test_what_is_not_a_plain_rtp_packet_comes_alone_as_received(batch: Batch, pair: Pair) -> None:
    """Marker, CSRC, padding, RTCP, short, empty-payload and oversized datagrams: count 0
    and the datagram's bytes (an oversized one cut past 1,500 bytes, still too big to
    parse), for stream.py's full path to judge; the plain packets around them still run."""
    odd = [
        rtp(2, 320, b"\x02" * 160, pt=0x80 | 8),  # marker
        rtp(3, 480, b"\x03" * 160, first=0x81) + b"\x00" * 4,  # a CSRC
        struct.pack("!BBH", 0x80, 200, 6) + b"\x00" * 24,  # RTCP SR on the RTP port
        b"\x80\x08",  # short
        rtp(4, 640, b""),  # a header alone
        b"\xff" * 9000,  # oversized
    ]
    pair.send(
        rtp(0, 0, b"\x00" * 160), rtp(1, 160, b"\x01" * 160), *odd, rtp(5, 800, b"\x05" * 160)
    )
    runs = batch.drain(64)
    assert [r[3] for r in runs] == [2, 0, 0, 0, 0, 0, 0, 1]
    assert [r[2] for r in runs[1:6]] == odd[:5]
    assert len(runs[6][2]) > 1500 and set(runs[6][2]) == {0xFF}
    assert all(len(r[8]) == max(r[3], 1) for r in runs)


def test_each_source_has_its_own_runs(batch: Batch, pair: Pair) -> None:
    other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    other.bind(("127.0.0.1", 0))
    elsewhere = other.getsockname()
    try:
        pair.send(rtp(0, 0, b"\x00" * 160))
        other.sendto(rtp(1, 160, b"\x01" * 160), pair.to)  # would continue it, from elsewhere
        pair.send(rtp(1, 160, b"\x01" * 160))
        runs = batch.drain(64)
    finally:
        other.close()
    assert [(r[1], r[3]) for r in runs] == [
        (pair.source, 1),
        (elsewhere, 1),
        (pair.source, 1),
    ]


def test_a_drain_reads_at_most_its_limit_a_socket_and_the_rest_waits(
    batch: Batch, pair: Pair
) -> None:
    pair.send(*talk(10, seq0=0, ts0=0))
    first = batch.drain(4)
    second = batch.drain(64)
    assert sum(r[3] for r in first) == 4 and sum(r[3] for r in second) == 6
    assert second[0][5] == 4  # the fifth packet, next in line


def test_every_ready_socket_is_read_and_names_its_owner(batch: Batch) -> None:
    pairs = [Pair(batch, owner=i) for i in range(300)]  # past the first events array
    try:
        for i, p in enumerate(pairs):
            p.send(*talk(2, seq0=i, ts0=0))
        runs = batch.drain(64)
        assert sorted((r[0], r[3], r[5]) for r in runs) == [(i, 2, i) for i in range(300)]
        assert batch.registered() == 300
    finally:
        for p in pairs:
            batch.unregister(p.rx.fileno())
            p.close()
    assert batch.registered() == 0


def test_take_reads_one_socket_and_leaves_the_others(batch: Batch, pair: Pair) -> None:
    other = Pair(batch, owner="other")
    try:
        pair.send(*talk(3))
        other.send(*talk(2))
        taken = batch.take(pair.rx.fileno(), 64)
        assert [(r[0], r[3]) for r in taken] == [("leg", 3)]
        assert [(r[0], r[3]) for r in batch.drain(64)] == [("other", 2)]
    finally:
        batch.unregister(other.rx.fileno())
        other.close()


def test_datagrams_the_kernel_dropped_for_a_full_buffer_are_counted(batch: Batch) -> None:
    p = Pair(batch)
    dropped = -1
    p.rx.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    try:
        p.send(*talk(500, seq0=0, ts0=0))
        read = sum(max(r[3], 1) for r in batch.drain(2048))
        # The kernel tells its count with the next datagram it queues.
        p.send(rtp(500, 500 * 160, b"\x00" * 160))
        assert sum(r[3] for r in batch.drain(2048)) == 1
        dropped = batch.dropped(p.rx.fileno())
        assert read < 500 and dropped == 500 - read  # each was read or counted
    finally:
        assert batch.unregister(p.rx.fileno()) == dropped  # the count as of the close
        p.close()


def test_a_descriptor_is_registered_once_and_only_known_ones_are_asked_about(
    batch: Batch, pair: Pair
) -> None:
    with pytest.raises(ValueError, match="already registered"):
        batch.register(pair.rx.fileno(), "again")
    with pytest.raises(KeyError):
        batch.unregister(pair.tx.fileno())
    with pytest.raises(KeyError):
        batch.take(pair.tx.fileno(), 64)
    with pytest.raises(ValueError, match="positive"):
        batch.drain(0)
    with pytest.raises(OSError):
        batch.register(10_000, "not open")
