"""RTP reception (telephony/media/rtp/stream.py; SIP.md 5 and 6), packet by packet.

Times are seconds on the recording clock, given by the test: the stream never reads a clock.
"""

from __future__ import annotations

import itertools
import struct

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from telephony.media.rtp.stream import (
    MAX_DATAGRAM,
    RATE_PER_S,
    Digit,
    Dropped,
    Placed,
    RtpStream,
    parse,
)

SBC = ("198.51.100.8", 30000)
FRAME = 160  # 20 ms of G.711


def rtp(
    seq: int,
    ts: int,
    payload: bytes = b"",
    *,
    pt: int = 8,
    ssrc: int = 0xDEE0EE8F,
    marker: bool = False,
    first: int = 0x80,
) -> bytes:
    body = payload or bytes([seq % 256]) * FRAME
    return (
        struct.pack("!BBHII", first, (0x80 if marker else 0) | pt, seq % 65536, ts % 2**32, ssrc)
        + body
    )


def stream() -> RtpStream:
    return RtpStream(audio_pt=8, event_pt=101, expected_ip=SBC[0], playout_s=0.06)


def feed(
    s: RtpStream, packets: list[tuple[bytes, float]], source: tuple[str, int] = SBC
) -> list[Placed | Digit]:
    """Each packet, then the node's playout tick at its arrival (SipCalls._release_held)."""
    out: list[Placed | Digit] = []
    for data, at in packets:
        out += s.receive(data, source, at)
        out += s.release(at)
    return out + s.release(packets[-1][1] + 1.0, everything=True)


def talk(
    n: int, *, seq0: int = 1000, ts0: int = 5000, t0: float = 10.0, ssrc: int = 0xDEE0EE8F
) -> list[tuple[bytes, float]]:
    return [(rtp(seq0 + i, ts0 + FRAME * i, ssrc=ssrc), t0 + 0.02 * i) for i in range(n)]


def audio(out: list[Placed | Digit]) -> list[Placed]:
    return [o for o in out if isinstance(o, Placed)]


# -- the header ----------------------------------------------------------------------------


def test_a_header_with_csrcs_an_extension_and_padding_yields_only_the_payload() -> None:
    csrcs = struct.pack("!II", 1, 2)
    extension = struct.pack("!HH", 0xBEDE, 1) + b"\x00\x00\x00\x00"
    data = (
        struct.pack("!BBHII", 0x80 | 0x20 | 0x10 | 2, 0x80 | 8, 7, 99, 5)
        + csrcs
        + extension
        + b"voice"
        + b"\x00\x00\x03"
    )

    packet = parse(data)

    assert (packet.marker, packet.pt, packet.seq, packet.ts, packet.ssrc) == (True, 8, 7, 99, 5)
    assert packet.payload == b"voice"


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x80\x08", "short"),
        (rtp(1, 1, first=0x40), "not_rtp"),
        (struct.pack("!BBHII", 0x80, 200, 1, 1, 1) + bytes(20), "rtcp"),  # a sender report
        (struct.pack("!BBHII", 0xA0, 8, 1, 1, 1) + b"ab\x00", "bad_padding"),
        (struct.pack("!BBHII", 0xA0, 8, 1, 1, 1) + b"ab\x09", "bad_padding"),
        (struct.pack("!BBHII", 0x8F, 8, 1, 1, 1) + bytes(8), "short"),  # 15 CSRCs promised
        (rtp(1, 1, bytes(MAX_DATAGRAM)), "too_large"),
    ],
)
def test_what_is_not_an_rtp_packet_of_ours_is_dropped(data: bytes, reason: str) -> None:
    with pytest.raises(Dropped) as dropped:
        parse(data)
    assert dropped.value.reason == reason


# -- order, wraps and placement ----------------------------------------------------------------


def test_a_stream_is_anchored_at_its_first_arrival_and_placed_by_timestamp() -> None:
    packets = talk(50)

    out = audio(feed(stream(), packets))

    assert [o.position for o in out] == [80_000 + FRAME * i for i in range(50)]  # 10 s at 8 kHz
    assert [o.payload for o in out] == [p[0][12:] for p in packets]


def test_reordered_packets_within_the_playout_come_out_in_order() -> None:
    packets = talk(6)
    shuffled = [packets[0], packets[1], packets[3], packets[2], packets[5], packets[4]]
    shuffled = [(data, 10.0 + 0.02 * i) for i, (data, _) in enumerate(shuffled)]

    out = audio(feed(stream(), shuffled))

    assert [o.payload for o in out] == [p[0][12:] for p in packets]


def test_a_packet_in_sequence_goes_out_at_once_and_only_those_behind_a_gap_wait() -> None:
    """SIP.md 6: the jitter window reorders; it need not delay what is already in order
    (the writer judges each packet by its arrival, not by when it is given out)."""
    s = stream()
    packets = talk(12)
    payload = [data[12:] for data, _ in packets]

    at_once = [len(audio(s.receive(data, SBC, at))) for data, at in packets[:4]]
    behind_gap = [audio(s.receive(data, SBC, at)) for data, at in packets[5:7]]
    early = audio(s.release(packets[6][1] + 0.01))  # 30 ms after seq 5 came: under 60
    filled = audio(s.receive(packets[4][0], SBC, packets[6][1] + 0.02))
    held_after_fill = s.backlog
    after_gap = [audio(s.receive(data, SBC, at)) for data, at in packets[8:10]]  # 7 lost
    due = s.due
    not_yet = audio(s.release(packets[8][1] + 0.05))
    given_up = audio(s.release(packets[8][1] + 0.06))

    assert at_once == [0, 2, 1, 1]  # two in probation, then each as it comes
    assert behind_gap == [[], []] and early == []
    assert [o.payload for o in filled] == payload[4:7]  # the filler, and what waited for it
    assert held_after_fill == 0
    assert after_gap == [[], []] and due == pytest.approx(packets[8][1] + 0.06)
    assert not_yet == []
    assert [o.payload for o in given_up] == payload[8:10]  # seq 7 given up, 8 and 9 in order


def test_duplicates_and_packets_later_than_the_window_are_dropped_and_counted() -> None:
    s = stream()
    packets = talk(10)
    late = (packets[2][0], 10.5)  # 300 ms after its successors went out
    out = audio(feed(s, [*packets[:5], packets[4], *packets[5:], late]))

    assert len(out) == 10
    assert s.drops["duplicate"] == 1
    assert s.drops["late"] == 1


@pytest.mark.parametrize(("seq0", "ts0"), [(65530, 5000), (1000, 2**32 - 800), (65535, 2**32 - 1)])
def test_sequence_and_timestamp_wraps_keep_the_audio_continuous(seq0: int, ts0: int) -> None:
    out = audio(feed(stream(), talk(20, seq0=seq0, ts0=ts0)))

    assert [o.position for o in out] == [80_000 + FRAME * i for i in range(20)]


def test_a_gap_in_timestamps_is_left_for_the_timeline_to_fill() -> None:
    packets = talk(10)
    out = audio(feed(stream(), [*packets[:4], *packets[7:]]))  # three packets lost

    positions = [o.position for o in out]
    assert positions[4] - positions[3] == 4 * FRAME  # the hole stays where it was


def test_a_sequence_jump_is_believed_after_two_in_sequence_packets() -> None:
    s = stream()
    before = talk(5)
    after = talk(5, seq0=40_000, ts0=5000 + 5 * FRAME, t0=10.1)

    out = audio(feed(s, [*before, *after]))

    assert s.drops["sequence_jump"] == 1  # the first after the jump, until the next agrees
    assert len(out) == 9
    assert all(b.position > a.position for a, b in itertools.pairwise(out))


# -- sources ---------------------------------------------------------------------------------------


def test_packets_from_another_address_never_reach_the_recording() -> None:
    s = stream()
    out = s.receive(rtp(1, 1), ("203.0.113.66", 30000), 1.0)
    out += s.receive(rtp(2, 161), ("203.0.113.66", 30000), 1.02)

    assert out == [] and s.drops["wrong_source"] == 2


def test_a_latched_source_is_kept_while_it_talks_and_replaced_after_silence() -> None:
    s = stream()
    other_port = (SBC[0], 40000)
    feed(s, talk(5))
    injected = s.receive(rtp(9000, 1, ssrc=7), other_port, 10.12)
    injected += s.receive(rtp(9001, 161, ssrc=7), other_port, 10.14)
    later = feed(
        s, [(rtp(9002 + i, 321 + FRAME * i, ssrc=7), 13.0 + 0.02 * i) for i in range(5)], other_port
    )

    assert injected == [] and s.drops["other_source"] == 2
    assert len(audio(later)) == 5  # 3 s of silence: the newcomer latched


def test_a_re_offer_moving_the_stream_latches_the_new_sender_at_once() -> None:
    """SIP.md 5: re-latch on a new c=/port in a re-offer. The new sender (another media
    server after a transfer) is recorded from its first packets, not after 2 s of silence
    of the old one; the old address then counts as any other, and a new c= is the only
    address believed."""
    s = stream()
    moved_to = ("198.51.100.9", 31000)
    feed(s, talk(5))
    s.moved(moved_to[0])
    taken = feed(s, talk(5, seq0=40, ts0=900, t0=10.12, ssrc=0x5EC0), moved_to)
    old = s.receive(rtp(1005, 5000 + 5 * FRAME), SBC, 10.3)  # the old sender, still talking

    assert len(audio(taken)) == 5 and taken[0].position >= 10 * 8000 + 5 * FRAME
    assert old == [] and s.drops["wrong_source"] == 1


def test_an_ssrc_change_re_anchors_no_earlier_than_what_was_placed() -> None:
    s = stream()
    first = audio(feed(s, talk(10)))
    # As sipp's DTMF pcap does: a new SSRC, its timestamps behind, once the first is quiet.
    second = audio(feed(s, talk(5, seq0=7980, ts0=13280 - 4000, t0=10.5, ssrc=0x0E05384E)))

    assert second[0].position >= first[-1].position + FRAME
    assert [b.position - a.position for a, b in itertools.pairwise(second)] == [FRAME] * 4


def test_comfort_noise_and_unanswered_payload_types_are_dropped() -> None:
    s = stream()
    feed(s, talk(3))
    s.receive(rtp(1003, 5000 + 3 * FRAME, b"\x40", pt=13), SBC, 10.06)
    s.receive(rtp(1004, 5000 + 4 * FRAME, pt=0), SBC, 10.08)

    assert s.drops["comfort_noise"] == 1
    assert s.drops["unknown_pt"] == 1


# -- RFC 4733 -------------------------------------------------------------------------------------


def test_sipps_dtmf_pcap_gives_one_digit_of_280_ms() -> None:
    """SIP.md 6: ten packets of event 1 at timestamp 13280, the end three times."""
    s = stream()
    ssrc = 0x0E05384E
    payloads = [bytes.fromhex(f"010a{d:04x}") for d in range(0, 2240, 320)]
    payloads += [bytes.fromhex("018a08c0")] * 3
    seqs = [7984 + i for i in range(7)] + [7991] * 3  # the three ends share one number
    packets = [
        (rtp(q, 13280, p, pt=101, ssrc=ssrc), 5.0 + 0.04 * i)
        for i, (q, p) in enumerate(zip(seqs, payloads, strict=True))
    ]

    out = feed(s, packets)

    digits = [o for o in out if isinstance(o, Digit)]
    assert [(d.digit, d.duration_ms) for d in digits] == [("1", 280)]
    assert audio(out) == []  # an event is never audio


def test_a_digit_whose_end_was_lost_is_told_when_the_next_starts() -> None:
    s = stream()
    packets = [
        (rtp(1, 800, bytes.fromhex("050a0140"), pt=101), 1.0),  # 5, no end
        (rtp(2, 800, bytes.fromhex("050a0280"), pt=101), 1.02),
        (rtp(3, 4000, bytes.fromhex("0b8a0320"), pt=101), 1.5),  # #, ended
    ]

    digits = [o for o in feed(s, packets) if isinstance(o, Digit)]

    assert [(d.digit, d.duration_ms) for d in digits] == [("5", 80), ("#", 100)]


# -- hostile input ---------------------------------------------------------------------------------


def test_a_flood_on_one_port_is_bounded_and_the_call_goes_on() -> None:
    s = stream()
    feed(s, talk(5))
    flood = rtp(2000, 1, ssrc=99)
    for i in range(20_000):  # 20,000 packets in one second
        s.receive(flood, ("198.51.100.8", 50000), 11.0 + i / 20_000)

    after = audio(feed(s, talk(5, seq0=1005, ts0=5000 + 5 * FRAME, t0=12.5)))

    assert s.drops["rate"] >= 20_000 - RATE_PER_S - 100
    assert s.backlog <= 1  # nothing piles up
    assert len(after) == 5


def test_a_flood_from_another_port_of_the_senders_address_leaves_the_stream_whole() -> None:
    """The offer's address may send from any port (SIP.md 5): a flood from another one
    passes that check, and still takes nothing of the latched stream's budget."""
    s = stream()
    flood = rtp(2000, 1, ssrc=99)
    out: list[Placed | Digit] = []
    packets = talk(55)
    for n, (data, at) in enumerate(packets):
        out += s.receive(data, SBC, at) + s.release(at)
        if n >= 5:  # a second of 20,000 packets a second, 400 between each two frames
            for k in range(400):
                s.receive(flood, (SBC[0], 50000), at + 0.0001 + k * 0.02 / 400)
    out += s.release(packets[-1][1] + 1.0, everything=True)

    assert s.drops["rate"] >= 20_000 - RATE_PER_S - 100
    assert len(audio(out)) == 55  # every frame of the stream, none lost to the flood
    assert s.backlog <= 2


@settings(max_examples=300, deadline=None)
@given(st.lists(st.binary(max_size=200), max_size=30))
def test_any_datagrams_are_placed_or_dropped_and_nothing_else(datagrams: list[bytes]) -> None:
    s = stream()
    for i, data in enumerate(datagrams):
        at = 1.0 + i * 0.02
        for item in [*s.receive(data, SBC, at), *s.release(at)]:
            assert isinstance(item, Placed | Digit)


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(6)), st.integers(0, 65535), st.integers(0, 2**32 - 1))
def test_any_order_within_the_window_loses_nothing(order: list[int], seq0: int, ts0: int) -> None:
    packets = talk(8, seq0=seq0, ts0=ts0)
    head = packets[:2]  # the first two latch the source
    arrivals = [(packets[2 + i][0], 10.04 + 0.001 * k) for k, i in enumerate(order)]

    out = audio(feed(stream(), [*head, *arrivals]))

    assert [o.payload for o in out] == [p[0][12:] for p in packets]


# -- runs: what the node's batch reads a tick at a time (rtp/_batch.c) ---------------------


# What a drain hands a stream, less its owner and source: data, count, header, arrivals.
Run = tuple[bytes, int, tuple[int, int, int, int], tuple[float, ...]]


def runs_of(packets: list[tuple[bytes, float]]) -> list[Run]:
    """The batch's grouping (see _batch.c): plain packets that continue each other join;
    anything else comes alone, count 0. (data, count, (pt, seq, ts, ssrc), arrivals)."""
    out: list[Run] = []
    for data, at in packets:
        plain = 12 < len(data) <= MAX_DATAGRAM and data[0] == 0x80 and data[1] < 128
        if not plain:
            out.append((data, 0, (0, 0, 0, 0), (at,)))
            continue
        pt, seq, ts, ssrc = struct.unpack_from("!xBHII", data)
        if out and out[-1][1]:
            joined, count, (pt0, seq0, ts0, ssrc0), ats = out[-1]
            size = len(joined) // count
            if (pt, ssrc, len(data) - 12) == (pt0, ssrc0, size) and (
                seq == (seq0 + count) % 65536 and ts == (ts0 + size * count) % 2**32
            ):
                out[-1] = (joined + data[12:], count + 1, (pt0, seq0, ts0, ssrc0), (*ats, at))
                continue
        out.append((data[12:], 1, (pt, seq, ts, ssrc), (at,)))
    return out


def feed_runs(s: RtpStream, runs: list[Run], started: float) -> list[Placed]:
    out: list[Placed | Digit] = []
    for data, count, header, arrivals in runs:
        out += s.receive_run(SBC, data, count, header, arrivals, started)
        out += s.release(arrivals[-1] - started)
    out += s.release(runs[-1][3][-1] - started + 1.0, everything=True)
    return [p for o in audio(out) for p in o.split(started)]


def test_a_run_of_the_latched_source_is_one_placement_of_its_packets() -> None:
    packets = talk(6)
    alone = audio(feed(stream(), packets))
    s = stream()
    feed(s, packets[:2])  # latched
    ((data, count, header, arrivals),) = runs_of([(d, at + 64.0) for d, at in packets[2:]])

    (run,) = audio(s.receive_run(SBC, data, count, header, arrivals, 64.0))

    assert run.arrivals == arrivals  # the loop's clock, for the writer's window rule
    assert run.arrival == pytest.approx(10.04)  # the recording clock's, as one by one
    assert [(p.position, p.payload) for p in run.split(64.0)] == [
        (p.position, p.payload) for p in alone[2:]
    ]


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(["send", "lose", "repeat", "marker", "renumber"]), min_size=3, max_size=40
    ),
    st.integers(0, 65535),
    st.integers(0, 2**32 - 1),
)
def test_runs_place_exactly_what_their_packets_would_one_by_one(
    events: list[str], seq0: int, ts0: int
) -> None:
    """In-order streams with losses, repeats, markers and a renumbering sender: fed as the
    batch would group them, the audio out is the same packets, at the same places, with
    the same arrivals, as fed one at a time."""
    packets: list[tuple[bytes, float]] = []
    seq, ts, at, ssrc = seq0, ts0, 10.0, 0xDEE0EE8F
    for event in ["send", "send", *events]:
        if event == "renumber":
            seq, ts, ssrc = seq + 20_000, ts + 5_000_000, ssrc + 1
        if event != "lose":
            data = rtp(seq, ts, marker=event == "marker", ssrc=ssrc)
            packets.append((data, at))
            if event == "repeat":
                packets.append((data, at + 0.001))
        seq, ts, at = seq + 1, ts + FRAME, at + 0.02

    one_by_one = audio(feed(stream(), packets))
    by_runs = feed_runs(stream(), runs_of(packets), 0.0)  # the loop's clock as the recording's

    assert by_runs == one_by_one


def test_a_run_from_another_source_is_dropped_packet_by_packet() -> None:
    s = stream()
    feed(s, talk(2))
    data, count, header, arrivals = runs_of(talk(5, seq0=1002, ts0=5000 + 2 * FRAME, t0=10.04))[0]

    out = s.receive_run((SBC[0], 40000), data, count, header, arrivals, 0.0)

    assert out == [] and s.drops["other_source"] == 5


def test_a_run_past_the_latched_budget_keeps_only_what_the_budget_admits() -> None:
    """150 packets in one millisecond (a sender's burst after a stall): the budget's 100
    go in, one by one, the rest are counted as a flood."""
    s = stream()
    feed(s, talk(2))
    burst = [(rtp(1002 + i, 5000 + FRAME * (2 + i)), 20.0 + i / 150_000) for i in range(150)]
    ((data, count, header, arrivals),) = runs_of(burst)

    out = audio(s.receive_run(SBC, data, count, header, arrivals, 0.0))

    assert count == 150
    assert sum(len(p.payload) for p in out) == 100 * FRAME and s.drops["rate"] == 50


def test_a_lone_datagram_of_a_run_list_is_judged_as_received() -> None:
    s = stream()
    feed(s, talk(2))

    out = s.receive_run(SBC, b"\x80\xc8\x00\x01" + bytes(24), 0, (0, 0, 0, 0), (10.1,), 0.0)

    assert out == [] and s.drops["rtcp"] == 1
