"""The BlobStore protocol, kept alike by the filesystem store and the S3 store (against a
real S3-protocol server, moto, on 127.0.0.1): every caller works on either."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from storage.blobs.filesystem import FilesystemBlobStore
from storage.blobs.protocol import BlobRange, BlobStore
from storage.blobs.s3 import S3BlobStore, parse_s3_url
from storage.blobs.stores import check_blob_url, open_blob_store
from telephony.domain.errors import IntegrityFailure, NotFound, Unavailable
from tests.support.s3 import S3Server


@pytest.fixture(params=["filesystem", "s3"])
async def store(
    request: pytest.FixtureRequest, tmp_path: Path, s3_server: S3Server
) -> AsyncIterator[BlobStore]:
    if request.param == "filesystem":
        made: BlobStore = FilesystemBlobStore(tmp_path / "blobs")
    else:
        made = await open_blob_store(await s3_server.new_bucket(), tmp_path)
    yield made
    await made.close()


async def test_a_put_blob_reads_back_by_ranges(store: BlobStore) -> None:
    await store.put("recordings/rec_a/audio-0000000000000000", b"0123456789" * 100)

    pieces = await store.read_ranges(
        [
            BlobRange("recordings/rec_a/audio-0000000000000000", 0, 10),
            BlobRange("recordings/rec_a/audio-0000000000000000", 995, 5),
            BlobRange("recordings/rec_a/audio-0000000000000000", 7, 0),
        ]
    )

    assert pieces == [b"0123456789", b"56789", b""]


async def test_putting_the_same_bytes_again_is_harmless(store: BlobStore) -> None:
    for _ in range(2):
        await store.put("recordings/rec_a/audio-0000000000000000", b"same")

    assert [i.size_bytes for i in await store.list("recordings/rec_a")] == [4]


async def test_a_missing_blob_is_not_found_and_a_short_one_an_integrity_failure(
    store: BlobStore,
) -> None:
    await store.put("recordings/rec_a/audio-0000000000000000", b"short")

    with pytest.raises(NotFound):
        await store.read_ranges([BlobRange("recordings/rec_b/audio-0000000000000000", 0, 1)])
    with pytest.raises(IntegrityFailure):
        await store.read_ranges([BlobRange("recordings/rec_a/audio-0000000000000000", 2, 10)])


async def test_a_put_file_reads_back_whole_and_the_file_may_go(
    store: BlobStore, tmp_path: Path
) -> None:
    part = tmp_path / "part"
    await asyncio.to_thread(part.write_bytes, b"sealed records" * 100)

    await store.put_file("recordings/rec_a/audio-0000000000000000", part)
    await asyncio.to_thread(part.unlink)  # the spool's name goes once the ship returns

    [whole] = await store.read_ranges(
        [BlobRange("recordings/rec_a/audio-0000000000000000", 0, 1400)]
    )
    assert whole == b"sealed records" * 100


async def test_a_put_file_on_the_same_filesystem_is_a_link_and_elsewhere_a_copy(
    tmp_path: Path,
) -> None:
    """The spool and the store under one data directory: the part's bytes are not
    written twice. Across filesystems (/dev/shm, a tmpfs) the link fails and a copy
    goes in its place, just as whole."""
    store = FilesystemBlobStore(tmp_path / "blobs")
    near = tmp_path / "near"
    far = Path("/dev/shm") / f"part-{tmp_path.name}"
    await asyncio.to_thread(near.write_bytes, b"a" * 4096)
    await asyncio.to_thread(far.write_bytes, b"b" * 4096)
    blobs = tmp_path / "blobs/recordings"
    try:
        await store.put_file("recordings/rec_a/audio-0000000000000000", near)
        await store.put_file("recordings/rec_b/audio-0000000000000000", far)
        linked = await asyncio.to_thread((blobs / "rec_a/audio-0000000000000000").stat)
        copied = await asyncio.to_thread((blobs / "rec_b/audio-0000000000000000").stat)
        original = await asyncio.to_thread(near.stat)
        [far_bytes] = await store.read_ranges(
            [BlobRange("recordings/rec_b/audio-0000000000000000", 0, 4096)]
        )
        left = await asyncio.to_thread(lambda: list(blobs.rglob("*.tmp-*")))
    finally:
        await asyncio.to_thread(far.unlink)
        await store.close()

    assert linked.st_ino == original.st_ino and linked.st_nlink == 2
    assert copied.st_nlink == 1 and far_bytes == b"b" * 4096
    assert left == []  # no temporary name


async def test_listing_takes_whole_key_segments_sorted(store: BlobStore) -> None:
    for key in (
        "recordings/rec_a/audio-0000000000000010",
        "recordings/rec_a/audio-0000000000000000",
        "recordings/rec_ab/audio-0000000000000000",
        "recordings/rec_b/audio-0000000000000000",
    ):
        await store.put(key, b"x" * 3)

    listed = await store.list("recordings/rec_a")

    assert [i.key for i in listed] == [
        "recordings/rec_a/audio-0000000000000000",
        "recordings/rec_a/audio-0000000000000010",
    ]
    assert await store.list("recordings/rec_none") == []


async def test_deleting_a_prefix_removes_only_it_and_repeats_harmlessly(store: BlobStore) -> None:
    for n in range(3):
        await store.put(f"recordings/rec_a/audio-{n:016d}", b"a")
    await store.put("recordings/rec_b/audio-0000000000000000", b"b")

    assert await store.delete_prefix("recordings/rec_a") == 3
    assert await store.delete_prefix("recordings/rec_a") == 0
    assert await store.list("recordings/rec_a") == []
    assert len(await store.list("recordings/rec_b")) == 1


async def pieces_of(data: bytes, size: int, fail_after: int | None = None) -> AsyncIterator[bytes]:
    for n, start in enumerate(range(0, len(data), size)):
        if fail_after is not None and n == fail_after:
            raise Unavailable("the source went away")
        yield data[start : start + size]


async def test_a_streamed_put_is_one_blob_multipart_past_eight_mebibytes(store: BlobStore) -> None:
    """Compaction writes a long recording's whole without holding it (multipart on S3)."""
    big = bytes(range(256)) * (20 * 4096)  # 20 MiB: three multipart pieces on S3
    small = b"tiny"

    size = await store.put_stream("recordings/rec_a/audio-whole", pieces_of(big, 1 << 20))
    await store.put_stream("recordings/rec_b/audio-whole", pieces_of(small, 2))

    assert size == len(big)
    got = await store.read_ranges(
        [
            BlobRange("recordings/rec_a/audio-whole", 0, len(big)),
            BlobRange("recordings/rec_b/audio-whole", 0, 4),
        ]
    )
    assert got == [big, small]


async def test_a_streamed_put_that_fails_leaves_nothing(
    store: BlobStore, s3_server: S3Server
) -> None:
    data = b"x" * (17 * 1024 * 1024)
    with pytest.raises(Unavailable):
        await store.put_stream("recordings/rec_a/audio-whole", pieces_of(data, 1 << 20, 12))

    assert await store.list("recordings") == []
    if isinstance(store, S3BlobStore):  # no orphaned multipart upload keeps paying for space
        assert await s3_server.multipart_uploads(store.location.bucket) == []


async def test_deleting_keys_removes_exactly_those(store: BlobStore) -> None:
    for n in range(3):
        await store.put(f"recordings/rec_a/audio-{n:016d}", b"a")

    gone = await store.delete_keys(
        ["recordings/rec_a/audio-0000000000000000", "recordings/rec_a/audio-0000000000000002"]
    )

    assert [i.key for i in await store.list("recordings/rec_a")] == [
        "recordings/rec_a/audio-0000000000000001"
    ]
    assert gone == 2


async def test_keys_are_checked_before_any_request(store: BlobStore) -> None:
    with pytest.raises(ValueError, match="not a blob key"):
        await store.put("../etc/passwd", b"x")
    with pytest.raises(ValueError, match="not a blob key"):
        await store.read_ranges([BlobRange("a//b", 0, 1)])


async def test_probe_answers_while_the_store_does(store: BlobStore) -> None:
    assert await store.probe() > 0


async def test_a_thousand_and_one_objects_delete_in_batches(s3_server: S3Server) -> None:
    store = await S3BlobStore.open(parse_s3_url(await s3_server.new_bucket()))
    try:
        for n in range(1001):
            await store.put(f"recordings/rec_many/audio-{n:016d}", b"")
        assert len(await store.list("recordings/rec_many")) == 1001  # past one listing page

        assert await store.delete_prefix("recordings/rec_many") == 1001
        assert await store.list("recordings/rec_many") == []
    finally:
        await store.close()


async def test_an_unreachable_object_store_is_unavailable_not_a_crash(
    s3_server: S3Server,
) -> None:
    from tests.support.servers import free_port

    store = await S3BlobStore.open(
        parse_s3_url(f"s3://gone/blobs?endpoint=http://127.0.0.1:{free_port()}&region=us-east-1")
    )
    try:
        with pytest.raises(Unavailable) as probe:
            await store.probe()
        with pytest.raises(Unavailable):
            await store.put("recordings/rec_a/audio-0000000000000000", b"x")
    finally:
        await store.close()
    # The cause by its class; never the endpoint's URL or a signed request.
    assert str(probe.value) == "the object store does not answer: unreachable"


@pytest.mark.parametrize(
    "url",
    [
        "s3://",
        "s3://user:secret@bucket/x",
        "s3://bucket/../x",
        "s3://bucket/x?token=1",
        "s3://bucket/x?endpoint=ftp://h",
        "ftp://x/y",
        "file:relative/path",
    ],
)
def test_malformed_blob_urls_are_refused(url: str) -> None:
    with pytest.raises(ValueError) as refused:
        check_blob_url(url)
    assert "secret" not in str(refused.value)
