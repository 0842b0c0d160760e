"""Envelope keys and the chunk cipher: every kind of damage fails to open (DESIGN "Keys")."""

from __future__ import annotations

import pytest

from storage.keys.crypto import (
    CHUNK_HEADER,
    ChunkCipher,
    derive_key,
    key_id,
    new_key,
    new_nonce_prefix,
    open_sealed,
    record_length,
    seal,
    unwrap_key,
    wrap_key,
)
from telephony.domain.errors import IntegrityFailure


def cipher(recording_id: str = "rec_a") -> ChunkCipher:
    return ChunkCipher(new_key(), new_nonce_prefix(), recording_id)


def test_wrapped_key_unwraps_only_for_its_owner_and_kek() -> None:
    kek, key = new_key(), new_key()

    wrapped = wrap_key(kek, key, "acc_1")

    assert unwrap_key(kek, wrapped, "acc_1") == key
    assert key not in wrapped
    with pytest.raises(IntegrityFailure):
        unwrap_key(kek, wrapped, "acc_2")
    with pytest.raises(IntegrityFailure):
        unwrap_key(new_key(), wrapped, "acc_1")
    flipped = bytes([wrapped[0]]) + bytes([wrapped[1] ^ 1]) + wrapped[2:]
    with pytest.raises(IntegrityFailure):
        unwrap_key(kek, flipped, "acc_1")
    with pytest.raises(IntegrityFailure):
        unwrap_key(kek, wrapped[:-1], "acc_1")


def test_key_id_names_a_key_without_revealing_it() -> None:
    key = new_key()

    assert key_id(key) == key_id(key)
    assert key_id(key) != key_id(new_key())
    assert key.hex()[:16] != key_id(key)


def test_chunks_roundtrip_with_the_final_flag() -> None:
    c = cipher()

    first = c.seal("mix", 0, b"\xff" * 8000)
    last = c.seal("mix", 1, b"\x7f" * 100, final=True)

    assert c.open("mix", 0, first) == (b"\xff" * 8000, False)
    assert c.open("mix", 1, last) == (b"\x7f" * 100, True)
    assert record_length(first[: CHUNK_HEADER.size]) == len(first)
    assert b"\xff" * 32 not in first  # sealed, not plain


def test_reordered_chunks_fail() -> None:
    c = cipher()
    records = [c.seal("mix", i, bytes([i]) * 10) for i in range(3)]

    with pytest.raises(IntegrityFailure):
        c.open("mix", 1, records[2])


def test_a_chunk_whose_index_header_was_rewritten_fails() -> None:
    c = cipher()
    record = c.seal("mix", 2, b"audio")
    relabelled = record[:2] + (1).to_bytes(4, "big") + record[6:]

    with pytest.raises(IntegrityFailure):
        c.open("mix", 1, relabelled)


def test_truncation_is_visible_as_a_missing_final_chunk() -> None:
    c = cipher()
    records = [c.seal("mix", 0, b"a"), c.seal("mix", 1, b"b"), c.seal("mix", 2, b"c", final=True)]

    opened = [c.open("mix", i, r) for i, r in enumerate(records[:2])]

    assert [final for _, final in opened] == [False, False]  # the reader sees no end: truncated


def test_a_final_flag_cannot_be_forged() -> None:
    c = cipher()
    record = c.seal("mix", 0, b"a")
    forged = record[:1] + b"\x01" + record[2:]

    with pytest.raises(IntegrityFailure):
        c.open("mix", 0, forged)


def test_a_chunk_swapped_in_from_another_recording_fails() -> None:
    key, prefix = new_key(), new_nonce_prefix()
    mine, theirs = ChunkCipher(key, prefix, "rec_a"), ChunkCipher(key, prefix, "rec_b")

    with pytest.raises(IntegrityFailure):
        mine.open("mix", 0, theirs.seal("mix", 0, b"their audio"))
    with pytest.raises(IntegrityFailure):
        cipher("rec_a").open("mix", 0, cipher("rec_a").seal("mix", 0, b"other key"))


def test_a_chunk_of_another_track_fails() -> None:
    c = cipher()

    with pytest.raises(IntegrityFailure):
        c.open("inbound", 0, c.seal("outbound", 0, b"x"))


@pytest.mark.parametrize("position", [0, 1, 5, 9, 10, 20, -1])
def test_a_flipped_bit_anywhere_fails(position: int) -> None:
    c = cipher()
    record = bytearray(c.seal("mix", 0, b"some audio bytes here"))

    record[position] ^= 0x04

    with pytest.raises(IntegrityFailure):
        c.open("mix", 0, bytes(record))


@pytest.mark.parametrize("record", [b"", b"\x01", b"\x01\x00\x00\x00\x00\x00\x00\x00\x00\x05abc"])
def test_short_or_garbled_records_fail_with_one_error(record: bytes) -> None:
    with pytest.raises(IntegrityFailure) as info:
        cipher().open("mix", 0, record)

    assert str(info.value) == "an audio chunk failed its integrity check"


def test_bad_key_sizes_are_refused() -> None:
    with pytest.raises(ValueError):
        ChunkCipher(b"short", new_nonce_prefix(), "rec")
    with pytest.raises(ValueError):
        ChunkCipher(new_key(), b"\x00" * 12, "rec")


def test_a_sealed_record_opens_only_under_its_key_and_context() -> None:
    master = new_key()
    key = derive_key(master, "idempotent-replies")
    sealed = seal(key, b"token shown once", "usr_1\0key-1")

    assert open_sealed(key, sealed, "usr_1\0key-1") == b"token shown once"
    assert key != master and derive_key(master, "other purpose") != key
    for wrong_key, context in [(key, "usr_2\0key-1"), (derive_key(new_key(), "x"), "usr_1\0key-1")]:
        with pytest.raises(IntegrityFailure):
            open_sealed(wrong_key, sealed, context)
    flipped = bytearray(sealed)
    flipped[-1] ^= 1
    with pytest.raises(IntegrityFailure):
        open_sealed(key, bytes(flipped), "usr_1\0key-1")
