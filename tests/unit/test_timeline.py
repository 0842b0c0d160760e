"""The recorder's arithmetic (telephony/recorder/timeline.py): hand-computed bytes for
placement, holes, overlaps, pauses, interleaving, jitter, windows and pieces.

Unless a case says otherwise: μ-law (one byte a sample, silence 0xff) at 8000 Hz, so a
position is a byte offset on one track, MAX_GAP_S is 80 000 samples, JITTER_S 800 samples
and MAX_SILENCE_FILL_S 4 800 000 samples.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from telephony.domain.recordings import PauseBehavior
from telephony.recorder.timeline import (
    JITTER_S,
    MAX_CHUNK_BYTES,
    MAX_GAP_S,
    MAX_SILENCE_FILL_S,
    SILENCE,
    Frame,
    Timeline,
    Window,
    by_window,
    interleave,
    last_arrival,
    packets_of,
    pieces,
)

RATE_HZ = 8000
MU = b"\xff"  # μ-law silence
L16 = b"\x00\x00"  # linear 16-bit silence
GAP = 80_000  # MAX_GAP_S at 8000 Hz, in samples
FILL = 4_800_000  # MAX_SILENCE_FILL_S at 8000 Hz, in samples
T0 = datetime(2025, 6, 1, 12, 0, tzinfo=UTC)
SKIP, SILENT = PauseBehavior.SKIP, PauseBehavior.SILENCE


def at(ms: int) -> datetime:
    """An arrival `ms` milliseconds after T0."""
    return T0 + timedelta(milliseconds=ms)


def fr(position: int, payload: bytes, arrival_ms: int = 0, channel: int = 0) -> Frame:
    return Frame(channel, position, payload, at(arrival_ms))


def timeline(
    tracks: int = 1,
    pause: PauseBehavior = SKIP,
    sample_bytes: int = 1,
    sample_rate_hz: int = RATE_HZ,
) -> Timeline:
    return Timeline(
        tracks=tracks,
        sample_bytes=sample_bytes,
        sample_rate_hz=sample_rate_hz,
        silence=MU if sample_bytes == 1 else L16,
        pause_behavior=pause,
    )


def joined(placed: list[tuple[bytes, int]]) -> bytes:
    return b"".join(piece for piece, _ in placed)


def test_the_documented_constants_match_the_samples_used_here() -> None:
    assert MAX_GAP_S * RATE_HZ == GAP
    assert MAX_SILENCE_FILL_S * RATE_HZ == FILL
    assert int(JITTER_S * RATE_HZ) == 800
    assert MAX_CHUNK_BYTES == 16 * 1024
    assert SILENCE["mulaw"] == MU
    assert SILENCE["l16le"] == L16
    assert SILENCE["l16be"] == L16


# -- one track: runs, holes, jumps, overlaps -------------------------------------------


@pytest.mark.parametrize(
    ("batches", "outputs", "out_samples", "late", "jumps"),
    [
        pytest.param(
            [[fr(100, b"\x01\x02"), fr(102, b"\x03\x04")]],
            [b"\x01\x02\x03\x04"],
            4,
            0,
            0,
            id="first-audio-starts-the-recording-wherever-the-stream-is",
        ),
        pytest.param(
            [[fr(0, b"\x01\x02")], [fr(2, b"\x03"), fr(3, b"\x04\x05")]],
            [b"\x01\x02", b"\x03\x04\x05"],
            5,
            0,
            0,
            id="in-order-frames-join-without-silence",
        ),
        pytest.param(
            [[fr(0, b"\x01")], [fr(1, b"\x02")], [fr(2, b"\x03\x04")]],
            [b"\x01", b"\x02", b"\x03\x04"],
            4,
            0,
            0,
            id="batch-after-batch-in-order",
        ),
        pytest.param(
            [[fr(0, b"\x01"), fr(3, b"\x02")]],
            [b"\x01\xff\xff\x02"],
            4,
            0,
            0,
            id="short-hole-in-a-batch-is-silence",
        ),
        pytest.param(
            [[fr(0, b"\x01\x02")], [fr(5, b"\x03")]],
            [b"\x01\x02", b"\xff\xff\xff\x03"],
            6,
            0,
            0,
            id="short-hole-between-batches-is-silence",
        ),
        pytest.param(
            [[fr(0, b"\x01")], [fr(1 + GAP, b"\x02")]],
            [b"\x01", MU * GAP + b"\x02"],
            1 + GAP + 1,
            0,
            0,
            id="hole-of-exactly-max-gap-is-still-silence",
        ),
        pytest.param(
            [[fr(0, b"\x01")], [fr(1 + GAP + 1, b"\x02")]],
            [b"\x01", b"\x02"],
            2,
            0,
            1,
            id="jump-beyond-max-gap-is-a-discontinuity",
        ),
        pytest.param(
            [[fr(0, b"\x01")], [fr(3600 * RATE_HZ, b"\x02\x03")]],
            [b"\x01", b"\x02\x03"],
            3,
            0,
            1,
            id="an-hour-jump-is-no-flood-of-silence",
        ),
        pytest.param(
            [[fr(0, b"\x01\x02"), fr(2 + GAP + 1, b"\x03")], [fr(2 + GAP + 2, b"\x04")]],
            [b"\x01\x02\x03", b"\x04"],
            4,
            0,
            1,
            id="jump-inside-a-batch-starts-a-new-run-and-audio-continues-after-it",
        ),
        pytest.param(
            [[fr(0, b"\x10")], [fr(3, b"\x03\x04", 1), fr(1, b"\x01\x02", 2)]],
            [b"\x10", b"\x01\x02\x03\x04"],
            5,
            0,
            0,
            id="frames-out-of-order-are-placed-by-position",
        ),
        pytest.param(
            [[fr(0, b"\x01\x02", 0)], [fr(0, b"\x09\x09", 20)]],
            [b"\x01\x02", b""],
            2,
            1,
            0,
            id="a-repeated-frame-is-dropped",
        ),
        pytest.param(
            [[fr(0, b"\x01\x02\x03\x04")], [fr(0, b"\x09"), fr(1, b"\x09\x09")]],
            [b"\x01\x02\x03\x04", b""],
            4,
            2,
            0,
            id="audio-entirely-before-what-was-stored-is-dropped",
        ),
        pytest.param(
            [[fr(0, b"\x01\x02\x03\x04", 0)], [fr(2, b"\x09\x09\x05\x06", 20)]],
            [b"\x01\x02\x03\x04", b"\x05\x06"],
            6,
            1,
            0,
            id="a-late-overlapping-frame-keeps-only-its-new-tail",
        ),
        pytest.param(
            [[fr(0, b"\x01\x02")], [fr(0, b"\x09\x09", 20), fr(2, b"\x03", 21)]],
            [b"\x01\x02", b"\x03"],
            3,
            1,
            0,
            id="a-late-frame-beside-new-audio-adds-nothing",
        ),
        pytest.param(
            [[fr(0, b"\x01\x02\x03\x04", 0), fr(2, b"\x09\x09\x05\x06", 20)]],
            [b"\x01\x02\x03\x04\x05\x06"],
            6,
            0,
            0,
            id="overlap-in-a-batch-the-first-to-arrive-wins",
        ),
        pytest.param(
            [[fr(2, b"\x03\x04", 0), fr(0, b"\x09\x09\x09\x09", 20)]],
            [b"\x09\x09\x03\x04"],
            4,
            0,
            0,
            id="overlap-in-a-batch-a-later-arrival-only-fills-what-is-new",
        ),
    ],
)
def test_one_track_keeps_what_is_new_and_fills_only_short_holes(
    batches: list[list[Frame]],
    outputs: list[bytes],
    out_samples: int,
    late: int,
    jumps: int,
) -> None:
    tl = timeline()

    placed = [tl.place(batch) for batch in batches]

    assert [joined(p) for p in placed] == outputs
    assert sum(samples for p in placed for _, samples in p) == out_samples
    assert tl.out_samples == out_samples
    assert tl.late_frames == late
    assert tl.discontinuities == jumps


def test_the_fast_path_advances_out_samples_by_the_frames_length() -> None:
    tl = timeline()
    tl.place([fr(500, b"\x01" * 160)])

    placed = tl.place([fr(660, b"\x02" * 160), fr(820, b"\x03" * 160)])

    assert placed == [(b"\x02" * 160 + b"\x03" * 160, 320)]
    assert tl.out_samples == 480
    assert tl.shift == 500


def test_frames_with_the_same_arrival_instant_keep_the_first_in_arrival_order() -> None:
    # Frames reach place() in arrival order, and datetime.now(UTC) often returns the same
    # microsecond twice in a row: the earlier of two equal-time frames arrived first and wins.
    tl = timeline()

    placed = tl.place([fr(0, b"\x01\x01", 5), fr(0, b"\x02\x02", 5)])

    assert joined(placed) == b"\x01\x01"


# -- several tracks: sample by sample -------------------------------------------------


@pytest.mark.parametrize(
    ("tracks", "sample_bytes", "batch", "output", "samples"),
    [
        pytest.param(
            2,
            1,
            [fr(0, b"\x01\x02\x03", channel=0), fr(0, b"\x11\x12\x13", channel=1)],
            b"\x01\x11\x02\x12\x03\x13",
            3,
            id="two-tracks-interleave",
        ),
        pytest.param(
            2,
            1,
            [fr(0, b"\x01\x02", channel=0)],
            b"\x01\xff\x02\xff",
            2,
            id="a-silent-track-is-silence",
        ),
        pytest.param(
            2,
            1,
            [fr(0, b"\x01\x02\x03", channel=0), fr(1, b"\x12", channel=1)],
            b"\x01\xff\x02\x12\x03\xff",
            3,
            id="a-shorter-track-is-padded-with-silence",
        ),
        pytest.param(
            3,
            1,
            [
                fr(0, b"\x01\x02", channel=0),
                fr(0, b"\x11\x12", channel=1),
                fr(0, b"\x21\x22", channel=2),
            ],
            b"\x01\x11\x21\x02\x12\x22",
            2,
            id="three-tracks-interleave",
        ),
        pytest.param(
            3,
            1,
            [fr(0, b"\x01", channel=0), fr(0, b"\x21", channel=2)],
            b"\x01\xff\x21",
            1,
            id="three-tracks-middle-one-silent",
        ),
        pytest.param(
            2,
            2,
            [fr(0, b"\x01\x02\x03\x04", channel=0), fr(0, b"\x11\x12\x13\x14", channel=1)],
            b"\x01\x02\x11\x12\x03\x04\x13\x14",
            2,
            id="l16-two-tracks-keep-byte-pairs",
        ),
        pytest.param(
            2,
            2,
            [fr(0, b"\xaa\xbb", channel=1)],
            b"\x00\x00\xaa\xbb",
            1,
            id="l16-silent-track-is-zero-pairs",
        ),
        pytest.param(
            1,
            2,
            [fr(0, b"\x01\x02"), fr(2, b"\x03\x04")],
            b"\x01\x02\x00\x00\x03\x04",
            3,
            id="l16-hole-counts-in-samples-not-bytes",
        ),
    ],
)
def test_tracks_are_interleaved_sample_by_sample(
    tracks: int, sample_bytes: int, batch: list[Frame], output: bytes, samples: int
) -> None:
    tl = timeline(tracks=tracks, sample_bytes=sample_bytes)

    placed = tl.place(batch)

    assert joined(placed) == output
    assert sum(n for _, n in placed) == samples
    assert tl.out_samples == samples


def test_a_late_frame_on_one_track_keeps_its_new_tail_beside_the_other() -> None:
    tl = timeline(tracks=2)
    first = tl.place([fr(0, b"\x01\x02", channel=0), fr(0, b"\x11\x12", channel=1)])

    second = tl.place([fr(1, b"\x09\x03", 20, channel=0), fr(2, b"\x13", 21, channel=1)])

    assert joined(first) == b"\x01\x11\x02\x12"
    assert second == [(b"\x03\x13", 1)]
    assert tl.out_samples == 3
    assert tl.late_frames == 1


@pytest.mark.parametrize(
    ("tracks", "sample_bytes", "frame_bytes"),
    [
        pytest.param(1, 1, 1, id="mono-mulaw"),
        pytest.param(2, 1, 2, id="dual-mulaw"),
        pytest.param(3, 1, 3, id="three-mulaw"),
        pytest.param(1, 2, 2, id="mono-l16"),
        pytest.param(2, 2, 4, id="dual-l16"),
    ],
)
def test_a_stored_frame_is_one_sample_of_every_track(
    tracks: int, sample_bytes: int, frame_bytes: int
) -> None:
    tl = timeline(tracks=tracks, sample_bytes=sample_bytes)

    assert tl.frame_bytes == frame_bytes


# -- interleave -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("channels", "width", "mixed"),
    [
        pytest.param([b"\x01\x02\x03"], 1, b"\x01\x02\x03", id="one-channel-as-is"),
        pytest.param([bytearray(b"\x01\x02")], 1, b"\x01\x02", id="one-bytearray-as-bytes"),
        pytest.param([b"", b""], 1, b"", id="two-empty-channels"),
        pytest.param([b"\x01\x02", b"\x11\x12"], 1, b"\x01\x11\x02\x12", id="two-width-1"),
        pytest.param(
            [b"\x01\x02", b"\x11\x12", b"\x21\x22"],
            1,
            b"\x01\x11\x21\x02\x12\x22",
            id="three-width-1",
        ),
        pytest.param(
            [bytearray(b"\x01\x02\x03\x04"), bytearray(b"\xa1\xa2\xa3\xa4")],
            2,
            b"\x01\x02\xa1\xa2\x03\x04\xa3\xa4",
            id="two-width-2-keep-pairs",
        ),
        pytest.param(
            [b"\x01\x02\x03\x04", b"\x11\x12\x13\x14", b"\x21\x22\x23\x24"],
            2,
            b"\x01\x02\x11\x12\x21\x22\x03\x04\x13\x14\x23\x24",
            id="three-width-2-keep-pairs",
        ),
        pytest.param(
            [b"\xff\x00", b"\x00\xff"], 2, b"\xff\x00\x00\xff", id="width-2-byte-order-kept"
        ),
    ],
)
def test_interleave_takes_one_sample_of_each_channel_in_turn(
    channels: list[bytes | bytearray], width: int, mixed: bytes
) -> None:
    result = interleave(channels, width)

    assert result == mixed
    assert type(result) is bytes


# -- pauses ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("pause", "resumed_at", "output", "out_samples", "jumps"),
    [
        pytest.param(SKIP, 2 + 20 * RATE_HZ, b"\x03", 3, 0, id="skip-20s-pause-leaves-no-trace"),
        pytest.param(SKIP, 2 + RATE_HZ, b"\x03", 3, 0, id="skip-1s-pause-leaves-no-trace"),
        pytest.param(
            SKIP, 2 + 700 * RATE_HZ, b"\x03", 3, 0, id="skip-long-pause-is-no-discontinuity"
        ),
        pytest.param(
            SILENT,
            2 + 20 * RATE_HZ,
            MU * (20 * RATE_HZ) + b"\x03",
            2 + 20 * RATE_HZ + 1,
            0,
            id="silence-20s-pause-is-20s-of-silence",
        ),
        pytest.param(
            SILENT,
            2 + FILL,
            MU * FILL + b"\x03",
            2 + FILL + 1,
            0,
            id="silence-fills-a-pause-of-exactly-the-longest-fill",
        ),
        pytest.param(
            SILENT,
            2 + FILL + 1,
            b"\x03",
            3,
            1,
            id="silence-pause-beyond-the-longest-fill-is-a-discontinuity",
        ),
        pytest.param(SILENT, 2, b"\x03", 3, 0, id="silence-pause-without-a-gap-adds-nothing"),
    ],
)
def test_a_pause_is_skipped_or_filled_by_the_pause_behavior(
    pause: PauseBehavior, resumed_at: int, output: bytes, out_samples: int, jumps: int
) -> None:
    tl = timeline(pause=pause)
    tl.place([fr(0, b"\x01\x02")])
    tl.enter(1)

    placed = tl.place([fr(resumed_at, b"\x03", 30_000)])

    assert joined(placed) == output
    assert tl.out_samples == out_samples
    assert tl.discontinuities == jumps
    assert tl.window == 1
    assert tl.fill_pause is False


def test_without_a_pause_a_long_jump_is_a_discontinuity_even_in_silence_mode() -> None:
    tl = timeline(pause=SILENT)
    tl.place([fr(0, b"\x01\x02")])

    placed = tl.place([fr(2 + 20 * RATE_HZ, b"\x03")])

    assert joined(placed) == b"\x03"
    assert tl.discontinuities == 1


def test_silence_mode_fills_only_the_first_run_after_the_pause() -> None:
    tl = timeline(pause=SILENT)
    tl.place([fr(0, b"\x01\x02")])
    tl.enter(1)
    resumed = 2 + 20 * RATE_HZ
    jumped = resumed + 1 + 20 * RATE_HZ

    placed = tl.place([fr(resumed, b"\x03"), fr(jumped, b"\x04")])

    assert joined(placed) == MU * (20 * RATE_HZ) + b"\x03\x04"
    assert tl.discontinuities == 1
    assert tl.out_samples == 2 + 20 * RATE_HZ + 2


@pytest.mark.parametrize(
    ("pause", "shift", "fill_pause"),
    [
        pytest.param(SKIP, None, False, id="skip-realigns-at-the-next-run"),
        pytest.param(SILENT, 0, True, id="silence-fills-at-the-next-run"),
    ],
)
def test_entering_a_later_window_prepares_the_next_run(
    pause: PauseBehavior, shift: int | None, fill_pause: bool
) -> None:
    tl = timeline(pause=pause)
    tl.place([fr(0, b"\x01")])

    tl.enter(2)

    assert tl.window == 2
    assert tl.shift == shift
    assert tl.fill_pause is fill_pause


@pytest.mark.parametrize("pause", [pytest.param(p, id=p.value) for p in PauseBehavior])
@pytest.mark.parametrize("window", [pytest.param(w, id=f"window-{w}") for w in (0, 1)])
def test_entering_the_same_or_an_earlier_window_changes_nothing(
    pause: PauseBehavior, window: int
) -> None:
    tl = timeline(pause=pause)
    tl.place([fr(7, b"\x01")])
    tl.window = 1

    tl.enter(window)

    assert tl.window == 1
    assert tl.shift == 7
    assert tl.fill_pause is False


# -- split_jitter ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sample_bytes", "rate_hz", "ends", "ready_ends"),
    [
        pytest.param(
            1,
            8000,
            [100, 1000, 1799, 1800, 1801, 2600],
            [100, 1000, 1799, 1800],
            id="mulaw-ends-within-800-samples-of-the-newest-are-held",
        ),
        pytest.param(1, 8000, [2600], [], id="a-single-frame-is-held"),
        pytest.param(1, 8000, [2000, 2300, 2600], [], id="all-within-jitter-all-held"),
        pytest.param(
            1, 8000, [2600, 100, 1801, 1000], [100, 1000], id="unsorted-input-keeps-its-order"
        ),
        pytest.param(
            2,
            8000,
            [100, 1000, 1799, 1800, 1801, 2600],
            [100, 1000, 1799, 1800],
            id="l16-ends-are-in-samples-not-bytes",
        ),
        pytest.param(
            1,
            16000,
            [100, 1000, 1000 + 1, 2600],
            [100, 1000],
            id="at-16khz-jitter-is-1600-samples",
        ),
    ],
)
def test_split_jitter_holds_back_frames_ending_within_jitter_of_the_newest_end(
    sample_bytes: int, rate_hz: int, ends: list[int], ready_ends: list[int]
) -> None:
    tl = timeline(sample_bytes=sample_bytes, sample_rate_hz=rate_hz)
    length = 100  # samples per frame
    frames = [fr(end - length, b"\x07" * (length * sample_bytes), i) for i, end in enumerate(ends)]

    ready, held = tl.split_jitter(frames)

    assert [f.position + length for f in ready] == ready_ends
    assert [f.position + length for f in held] == [e for e in ends if e not in ready_ends]
    assert len(ready) + len(held) == len(frames)


def test_split_jitter_takes_the_newest_end_across_tracks() -> None:
    tl = timeline(tracks=2)
    frames = [fr(0, b"\x01" * 160, channel=0), fr(900, b"\x02" * 100, channel=1)]

    ready, held = tl.split_jitter(frames)

    assert ready == [frames[0]]
    assert held == [frames[1]]


def test_split_jitter_cuts_frames_of_several_tracks_at_the_horizon() -> None:
    """Two RTP streams anchored 5 samples apart: a seal ending inside one stream's frame
    would fill the rest with silence and cut the frame's head when it is placed."""
    tl = timeline(tracks=2)
    frames = [fr(0, b"\x01" * 240, channel=0), fr(5, b"\x02" * 1000, channel=1)]

    ready, held = tl.split_jitter(frames)  # the horizon: 1005 - 800 = 205

    shape = [(f.channel, f.position, len(f.payload)) for f in ready]
    assert shape == [(0, 0, 205), (1, 5, 200)]
    assert [(f.channel, f.position, len(f.payload)) for f in held] == [(0, 205, 35), (1, 205, 800)]
    sealed = b"".join(piece for piece, _ in tl.place(ready))
    later = b"".join(piece for piece, _ in tl.place(held))
    audio = sealed + later
    assert audio[0::2] == b"\x01" * 240 + b"\xff" * 765  # mu-law silence after its end
    assert audio[1::2] == b"\xff" * 5 + b"\x02" * 1000  # whole: nothing cut, no hole


def test_split_jitter_keeps_the_arrival_order_of_cut_frames() -> None:
    """The window check reads a turn's first and last arrivals when the frames are in
    order (R2): a cut frame must stay where it arrived, not go to the end of the list."""
    tl = timeline(tracks=2)
    frames = [
        fr(0, b"\x01" * 240, arrival_ms=0, channel=0),  # straddles the horizon
        fr(5, b"\x02" * 160, arrival_ms=10, channel=1),  # ready whole
        fr(165, b"\x02" * 840, arrival_ms=20, channel=1),  # straddles, the newest end
    ]

    ready, held = tl.split_jitter(frames)  # the horizon: 1005 - 800 = 205

    assert [f.arrival for f in ready] == [at(0), at(10), at(20)]
    assert [f.arrival for f in held] == [at(0), at(20)]


# -- by_window: frames sorted into the windows they arrived in ---------------------------

CLOSED = Window(at(0), at(1000))
OPEN = Window(at(2000))


@pytest.mark.parametrize(
    ("arrivals_ms", "windows", "groups", "dropped"),
    [
        pytest.param([2000, 2500, 9000], [CLOSED, OPEN], {1: [0, 1, 2]}, 0, id="all-in-last"),
        pytest.param([0, 500, 999], [CLOSED, OPEN], {0: [0, 1, 2]}, 0, id="all-in-first"),
        pytest.param([10, 1500, 2000], [CLOSED, OPEN], {0: [0], 1: [2]}, 1, id="one-in-the-pause"),
        pytest.param([-1, 0], [CLOSED, OPEN], {0: [1]}, 1, id="before-the-first-window"),
        pytest.param([999, 1000], [CLOSED, OPEN], {0: [0]}, 1, id="a-window-end-is-exclusive"),
        pytest.param(
            [999, 1000],
            [CLOSED, Window(at(1000))],
            {0: [0], 1: [1]},
            0,
            id="adjacent-windows-the-end-belongs-to-the-next",
        ),
        pytest.param(
            [2000, 2999, 3000],
            [CLOSED, Window(at(2000), at(3000))],
            {1: [0, 1]},
            1,
            id="after-the-last-closed-window",
        ),
        pytest.param(
            [0, 1500, 2000, 500],
            [CLOSED, OPEN],
            {0: [0, 3], 1: [2]},
            1,
            id="groups-keep-arrival-order",
        ),
        pytest.param([10, 20], [], {}, 2, id="no-windows-drops-everything"),
        pytest.param([], [CLOSED, OPEN], {}, 0, id="no-frames"),
    ],
)
def test_frames_are_grouped_by_the_window_they_arrived_in(
    arrivals_ms: list[int],
    windows: list[Window],
    groups: dict[int, list[int]],
    dropped: int,
) -> None:
    frames = [fr(i, b"\x01", ms) for i, ms in enumerate(arrivals_ms)]

    result, result_dropped = by_window(frames, windows)

    assert result == {w: [frames[i] for i in indexes] for w, indexes in groups.items()}
    assert result_dropped == dropped


def test_when_all_arrived_in_the_last_window_the_frames_are_returned_as_they_are() -> None:
    frames = [fr(0, b"\x01", 2000), fr(1, b"\x02", 2001)]

    groups, dropped = by_window(frames, [CLOSED, OPEN])

    assert groups[1] is frames
    assert list(groups) == [1]
    assert dropped == 0


def run(position: int, arrivals_ms: list[int], channel: int = 0) -> Frame:
    """A run of 20 ms packets read in one tick (rtp/ports.py), packet k filled with k+1."""
    payload = b"".join(bytes([k + 1]) * 160 for k in range(len(arrivals_ms)))
    offset = T0.timestamp()  # the "loop's clock" here is milliseconds after T0, in seconds
    spans = tuple(ms / 1000 for ms in arrivals_ms)
    return Frame(
        channel,
        position,
        payload,
        at(arrivals_ms[0]),
        len(payload),
        at(arrivals_ms[-1]),
        (spans, offset),
    )


@pytest.mark.parametrize(
    ("windows", "kept", "dropped"),
    [
        pytest.param([Window(at(0), at(50))], {0: [1, 2, 3]}, 1, id="consent-ends-inside-the-run"),
        pytest.param([Window(at(30))], {0: [3, 4]}, 2, id="the-start-falls-inside-the-run"),
        pytest.param(
            [Window(at(0), at(30)), Window(at(50))],
            {0: [1, 2], 1: [4]},
            1,
            id="a-pause-inside-the-run",
        ),
        pytest.param([Window(at(200))], {}, 4, id="the-run-before-every-window"),
    ],
)
def test_a_run_with_a_window_edge_inside_is_judged_packet_by_packet(
    windows: list[Window], kept: dict[int, list[int]], dropped: int
) -> None:
    """R2 for RTP read a tick at a time: a packet is kept only if *it* arrived inside a
    window, though it came in one run with others that did not."""
    frames = [run(0, [0, 20, 40, 60])]

    groups, result_dropped = by_window(frames, windows)

    assert {w: [f.payload[0] for f in fs] for w, fs in groups.items()} == kept
    assert all(len(f.payload) == 160 for fs in groups.values() for f in fs)
    assert [f.arrival for f in groups.get(0, [])] == [at(20 * (k - 1)) for k in kept.get(0, [])]
    assert result_dropped == dropped


def test_a_run_wholly_inside_the_open_window_stays_whole() -> None:
    frames = [run(0, [2000, 2020]), run(320, [2040, 2060])]

    groups, dropped = by_window(frames, [CLOSED, OPEN])

    assert groups == {1: frames} and dropped == 0


def test_the_last_packet_of_an_earlier_run_bounds_the_turn() -> None:
    """Runs are ordered by their first arrival; the turn's last arrival may be another's:
    one past the window's end is found, not hidden behind a later-starting run."""
    late = run(0, [900, 1100])  # its second packet arrived after CLOSED's end
    frames = [late, fr(500, b"\x09" * 160, 950)]

    groups, dropped = by_window(frames, [CLOSED])

    assert [f.payload[0] for f in groups[0]] == [1, 9] and dropped == 1
    assert last_arrival(frames) == at(1100)


def test_split_jitter_cuts_a_run_at_its_packets_and_each_keeps_its_arrival() -> None:
    tl = timeline(tracks=2)
    frames = [run(0, [0, 20, 40, 60], channel=0), fr(0, b"\x07" * 1000, 70, channel=1)]

    ready, held = tl.split_jitter(frames)  # the horizon: 1000 - 800 = 200

    assert [(f.position, len(f.payload), f.arrival) for f in ready if f.channel == 0] == [
        (0, 160, at(0)),
        (160, 40, at(20)),
    ]
    assert [(f.position, len(f.payload), f.arrival) for f in held if f.channel == 0] == [
        (200, 120, at(20)),
        (320, 160, at(40)),
        (480, 160, at(60)),
    ]
    assert all(f.spans is None for f in ready + held)


def test_packets_of_a_single_frame_is_the_frame() -> None:
    frame = fr(0, b"\x01" * 160, 5)
    assert packets_of(frame) == [frame]


@pytest.mark.parametrize(
    ("window", "arrival_ms", "inside"),
    [
        pytest.param(CLOSED, 0, True, id="start-is-inside"),
        pytest.param(CLOSED, 999, True, id="before-end-is-inside"),
        pytest.param(CLOSED, 1000, False, id="end-is-outside"),
        pytest.param(CLOSED, -1, False, id="before-start-is-outside"),
        pytest.param(OPEN, 10**9, True, id="an-open-window-never-ends"),
        pytest.param(OPEN, 1999, False, id="an-open-window-still-has-a-start"),
    ],
)
def test_a_window_is_half_open(window: Window, arrival_ms: int, inside: bool) -> None:
    assert window.contains(at(arrival_ms)) is inside


# -- pieces ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("size_bytes", "frame_bytes", "piece_bytes"),
    [
        pytest.param(0, 1, [], id="nothing"),
        pytest.param(1, 1, [1], id="one-byte"),
        pytest.param(16384, 1, [16384], id="exactly-the-limit"),
        pytest.param(16385, 1, [16384, 1], id="one-over-the-limit"),
        pytest.param(40000, 2, [16384, 16384, 7232], id="two-byte-frames"),
        pytest.param(60000, 3, [16383, 16383, 16383, 10851], id="three-byte-frames-stay-whole"),
        pytest.param(20000, 4, [16384, 3616], id="four-byte-frames"),
    ],
)
def test_pieces_never_exceed_the_chunk_limit_and_hold_whole_frames(
    size_bytes: int, frame_bytes: int, piece_bytes: list[int]
) -> None:
    mixed = bytes(i % 251 for i in range(size_bytes))

    result = pieces(mixed, frame_bytes)

    assert [len(p) for p, _ in result] == piece_bytes
    assert [n for _, n in result] == [b // frame_bytes for b in piece_bytes]
    assert all(len(p) <= MAX_CHUNK_BYTES and len(p) % frame_bytes == 0 for p, _ in result)
    assert b"".join(p for p, _ in result) == mixed


def test_a_large_three_track_placement_is_cut_into_whole_frame_pieces() -> None:
    tl = timeline(tracks=3)
    batch = [fr(0, bytes([c + 1]) * 10_000, channel=c) for c in range(3)]

    placed = tl.place(batch)

    assert [(len(p), n) for p, n in placed] == [(16383, 5461), (13617, 4539)]
    assert joined(placed) == b"\x01\x02\x03" * 10_000
    assert tl.out_samples == 10_000


def test_a_large_fast_path_placement_is_cut_at_the_chunk_limit() -> None:
    tl = timeline()
    tl.place([fr(0, b"\x00")])

    placed = tl.place([fr(1 + 160 * i, b"\x05" * 160) for i in range(200)])

    assert [(len(p), n) for p, n in placed] == [(16384, 16384), (15616, 15616)]
    assert tl.out_samples == 1 + 32_000


# -- snapshot / restore ---------------------------------------------------------------


def test_restore_undoes_a_placement_so_it_can_be_placed_again() -> None:
    tl = timeline()
    tl.place([fr(0, b"\x01\x02")])
    snap = tl.snapshot()
    batch = [fr(2, b"\x03\x04")]
    first = tl.place(batch)

    tl.restore(snap)
    again = tl.place(batch)

    assert snap[:3] == (2, 0, False)
    assert first == again == [(b"\x03\x04", 2)]
    assert tl.out_samples == 4


def test_restore_undoes_a_realignment_after_a_skipped_pause() -> None:
    tl = timeline(pause=SKIP)
    tl.place([fr(0, b"\x01\x02")])
    tl.enter(1)
    snap = tl.snapshot()
    tl.place([fr(10_000, b"\x03")])

    tl.restore(snap)

    assert snap[:3] == (2, None, False)
    assert (tl.out_samples, tl.shift, tl.fill_pause) == (2, None, False)
    assert tl.place([fr(20_000, b"\x04")]) == [(b"\x04", 1)]
    assert tl.shift == 20_000 - 2


def test_restore_brings_back_a_pending_silence_fill() -> None:
    tl = timeline(pause=SILENT)
    tl.place([fr(0, b"\x01\x02")])
    tl.enter(1)
    snap = tl.snapshot()
    batch = [fr(7, b"\x03")]
    first = tl.place(batch)

    tl.restore(snap)
    again = tl.place(batch)

    assert snap[:3] == (2, 0, True)
    assert joined(first) == joined(again) == b"\xff" * 5 + b"\x03"
    assert tl.out_samples == 8


def test_restore_also_rolls_back_the_counters_of_a_refused_placement() -> None:
    tl = timeline()
    tl.place([fr(0, b"\x01\x02\x03\x04")])
    snap = tl.snapshot()
    tl.place([fr(1, b"\x05")])  # entirely before what was stored: late

    tl.restore(snap)

    assert tl.late_frames == 0
    assert tl.place([fr(1, b"\x05")]) == []
    assert tl.late_frames == 1  # counted once, not once per attempt
