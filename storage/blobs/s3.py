"""Blobs as objects in an S3-compatible store (AWS S3, MinIO, Ceph RGW), through obstore.

`TELEPHONY_BLOB_URL=s3://bucket/prefix?endpoint=https://…&region=…`; credentials
come from the usual AWS environment variables (AWS_ACCESS_KEY_ID,
AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, a web identity token file, the
container or instance role), never from the URL. The protocol is already the
object store's (put whole, read by ranges, list, delete by prefix), so this is
a thin layer: keys are the filesystem store's keys under the prefix, a read is
a ranged GET per range (many at once, bounded), a deletion one DeleteObjects
per thousand keys.

Why obstore (Rust's object_store) and not aiobotocore: every live recording
ships a part every ten seconds, and a PUT of 80 kB cost 1.9 ms of this
process's CPU through aiobotocore against 0.5 ms through obstore (400 PUTs
against moto, measured the same way), while signing, retries and the
connection pool run outside the event loop's thread.

Errors keep the protocol's meaning: a missing object is NotFound, a short read
an IntegrityFailure, and an unreachable or failing store Unavailable (503):
the callers already hold their data (the spool keeps what it could not ship).
An error's text from the store names the URL it asked; only its status or kind
goes on (`_reason`).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import gc
import re
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit

import obstore
from obstore.exceptions import BaseError
from obstore.store import S3Store

from storage.blobs.names import check_key
from storage.blobs.protocol import BlobInfo, BlobRange
from telephony.domain.errors import IntegrityFailure, NotFound, Unavailable

if TYPE_CHECKING:
    from obstore.store import S3Config

READS_AT_ONCE = 16  # ranged GETs in flight for one read_ranges call
STREAM_PIECE = 1 << 20  # what one read of a streamed GET's body asks for
MULTIPART_BYTES = 8 * 1024 * 1024  # a piece of a multipart upload (S3: at least 5 MiB)
UNLIMITED = 2**62  # an object store has no free-space figure; capacity is the provider's
# obstore raises the builtin FileNotFoundError for a 404 (a missing bucket, for a write).
_FAILED = (BaseError, FileNotFoundError)


@dataclass
class RequestStats:
    """Requests to the object store by operation: counts, failures and seconds (S7), read by
    /metrics; plain numbers, since storage imports no metrics library."""

    requests: dict[str, int] = field(default_factory=dict)
    errors: dict[str, int] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)

    @contextlib.asynccontextmanager
    async def timing(self, op: str) -> AsyncIterator[None]:
        started = time.perf_counter()
        try:
            yield
        except BaseException:
            self.errors[op] = self.errors.get(op, 0) + 1
            raise
        finally:
            self.requests[op] = self.requests.get(op, 0) + 1
            self.seconds[op] = self.seconds.get(op, 0.0) + time.perf_counter() - started


@dataclass(frozen=True)
class S3Location:
    bucket: str
    prefix: str
    endpoint_url: str | None
    region: str | None


def parse_s3_url(url: str) -> S3Location:
    """s3://bucket[/prefix][?endpoint=URL&region=NAME]; ValueError for anything else."""
    parts = urlsplit(url)
    if parts.scheme != "s3" or not parts.netloc or parts.username or parts.password:
        raise ValueError("an s3:// URL names a bucket, and no credentials")
    query = parse_qs(parts.query)
    unknown = set(query) - {"endpoint", "region"}
    if unknown:
        raise ValueError(f"unknown s3 URL parameter: {sorted(unknown)[0]}")
    prefix = parts.path.strip("/")
    if prefix:
        check_key(prefix)
    endpoint = query.get("endpoint", [None])[0]
    if endpoint is not None and urlsplit(endpoint).scheme not in ("http", "https"):
        raise ValueError("the endpoint is an http(s) URL")
    return S3Location(parts.netloc, prefix, endpoint, query.get("region", [None])[0])


class S3BlobStore:
    def __init__(self, location: S3Location, store: S3Store):
        self.location = location
        self.store: S3Store | None = store
        self._reads = asyncio.Semaphore(READS_AT_ONCE)
        self.stats = RequestStats()

    @classmethod
    async def open(cls, location: S3Location) -> S3BlobStore:
        # No request is made here: credentials are fetched at the first request, and again
        # when they expire. The store is the bucket's root; keys carry our prefix, so a
        # server-side copy between two prefixes of one bucket (backups) is one store's call.
        endpoint = location.endpoint_url
        config: S3Config = {"region": location.region or "us-east-1"}
        if endpoint:
            config["endpoint"] = endpoint
        store = S3Store(
            location.bucket,
            config=config,
            client_options={
                "allow_http": bool(endpoint and endpoint.startswith("http:")),
                "connect_timeout": timedelta(seconds=5),
                "timeout": timedelta(seconds=30),
            },
            # Three tries, as before; a store that is down is found in seconds, and the
            # spool holds what could not move (the outage test's 20 s).
            retry_config={"max_retries": 2, "retry_timeout": timedelta(seconds=10)},
        )
        return cls(location, store)

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.location.bucket}/{self.location.prefix})"

    @property
    def _store(self) -> S3Store:
        if self.store is None:
            raise Unavailable("the object store is closed")
        return self.store

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    def _key(self, name: str) -> str:
        prefix = self.location.prefix
        return name[len(prefix) + 1 :] if prefix else name

    async def close(self) -> None:
        # obstore's futures keep reference cycles to the loop; collected at interpreter
        # exit, after the loop, they abort the process (seen 3 exits in 14 without this,
        # none in 14 with it). So the store goes, and its garbage, while the loop runs.
        self.store = None
        gc.collect()

    async def probe(self) -> int:
        """Reachable (the bucket answers a one-level listing) or raises Unavailable; no
        free-space figure."""
        try:
            async with self.stats.timing("head"):
                await obstore.list_with_delimiter_async(self._store, self.location.prefix or None)
        except _FAILED as exc:
            raise Unavailable(f"the object store does not answer: {_reason(exc)}") from None
        return UNLIMITED

    async def put(self, key: str, data: bytes | Path) -> None:
        """One PUT; of a Path, the file is read by obstore's own threads, not this one."""
        name = self._object(key)
        try:
            async with self.stats.timing("put"):
                await obstore.put_async(self._store, name, data, use_multipart=False)
        except _FAILED as exc:
            raise Unavailable(f"the object store refused a write: {_reason(exc)}") from None

    async def put_file(self, key: str, path: Path) -> None:
        await self.put(key, path)

    async def copy_to(self, key: str, target: S3BlobStore, target_key: str) -> None:
        """A server-side copy into `target`, a store in the same bucket (backups, S8): no
        bytes pass through this process. NotFound when the object is gone."""
        source, copy = self._object(key), target._object(target_key)
        try:
            async with self.stats.timing("copy"):
                await obstore.copy_async(self._store, source, copy)
        except FileNotFoundError:
            raise NotFound("no such blob") from None
        except BaseError as exc:
            raise Unavailable(f"the object store failed a copy: {_reason(exc)}") from None

    async def put_stream(self, key: str, pieces: AsyncIterable[bytes]) -> int:
        """One PUT when it all fits in one piece, else a multipart upload of MULTIPART_BYTES
        pieces (S3's minimum is 5 MiB), which obstore aborts on any failure, the source's
        included, so no partial object or orphaned upload is left."""
        name = self._object(key)
        stream = aiter(pieces)
        first, size = bytearray(), 0
        async for piece in stream:
            first += piece
            size += len(piece)
            if len(first) >= MULTIPART_BYTES:
                break
        else:
            await self.put(key, bytes(first))
            return size

        async def rest() -> AsyncIterator[bytes]:
            nonlocal size
            yield bytes(first)
            async for piece in stream:
                size += len(piece)
                yield piece

        try:
            async with self.stats.timing("put"):
                await obstore.put_async(
                    self._store,
                    name,
                    rest(),
                    use_multipart=True,
                    chunk_size=MULTIPART_BYTES,
                    max_concurrency=2,
                )
        except _FAILED as exc:
            raise Unavailable(f"the object store refused a write: {_reason(exc)}") from None
        return size

    async def read_ranges(self, ranges: Sequence[BlobRange]) -> builtins.list[bytes]:
        return list(await asyncio.gather(*(self._read(r) for r in ranges)))

    async def _read(self, wanted: BlobRange) -> bytes:
        if wanted.length == 0:
            return b""
        name = self._object(wanted.key)
        async with self._reads:
            try:
                async with self.stats.timing("get"):
                    data = await obstore.get_range_async(
                        self._store, name, start=wanted.offset, length=wanted.length
                    )
            except _FAILED as exc:
                raise _read_failure(exc) from None
        if len(data) != wanted.length:
            raise IntegrityFailure("a blob is shorter than its rows say")
        return bytes(data)

    async def stream(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """One ranged GET for the whole stretch, read as it arrives; the object store's
        failure mid-way is Unavailable, a short object an IntegrityFailure."""
        if length == 0:
            return
        name, got = self._object(key), 0
        try:
            async with self.stats.timing("get"):
                answer = await obstore.get_async(
                    self._store, name, options={"range": (offset, offset + length)}
                )
            async for piece in answer.stream(min_chunk_size=STREAM_PIECE):
                got += len(piece)
                yield bytes(piece)
        except _FAILED as exc:
            raise _read_failure(exc) from None
        if got != length:
            raise IntegrityFailure("a blob is shorter than its rows say")

    async def list(self, prefix: str) -> builtins.list[BlobInfo]:
        """Under `prefix` as a folder (obstore lists whole key segments), and `prefix`
        itself when it is an object's key: one HEAD more."""
        full = self._object(prefix)
        found: builtins.list[BlobInfo] = []
        try:
            async with self.stats.timing("list"):
                async for batch in obstore.list(self._store, full, chunk_size=1000):
                    found.extend(BlobInfo(self._key(m["path"]), int(m["size"])) for m in batch)
                with contextlib.suppress(FileNotFoundError):
                    meta = await obstore.head_async(self._store, full)
                    found.append(BlobInfo(self._key(meta["path"]), int(meta["size"])))
        except _FAILED as exc:
            raise Unavailable(f"the object store failed a listing: {_reason(exc)}") from None
        return sorted(found, key=lambda info: info.key)

    async def delete_prefix(self, prefix: str) -> int:
        return await self.delete_keys([info.key for info in await self.list(prefix)])

    async def delete_keys(self, keys: Sequence[str]) -> int:
        """obstore sends DeleteObjects of a thousand keys each, and raises on any key the
        store kept."""
        names = [self._object(k) for k in keys]
        if names:
            try:
                async with self.stats.timing("delete"):
                    await obstore.delete_async(self._store, names)
            except _FAILED as exc:
                raise Unavailable(f"the object store failed a deletion: {_reason(exc)}") from None
        return len(names)


def _read_failure(exc: Exception) -> Exception:
    """What a failed read means to callers: a missing object is NotFound, a range past its
    end an IntegrityFailure (the rows promised more), anything else the store's outage."""
    if isinstance(exc, FileNotFoundError):
        return NotFound("no such blob")
    if "InvalidRange" in str(exc) or _status(exc) == 416:
        return IntegrityFailure("a blob is shorter than its rows say")
    return Unavailable(f"the object store failed a read: {_reason(exc)}")


_STATUS = re.compile(r"status code: (\d{3})")


def _status(exc: Exception) -> int | None:
    found = _STATUS.search(str(exc))
    return int(found[1]) if found else None


def _reason(exc: Exception) -> str:
    """A short cause for logs and problems, never the URL or a signed header: the HTTP
    status the store answered, or that it could not be reached."""
    status = _status(exc)
    if status is not None:
        return f"HTTP {status}"
    text = str(exc)
    if "error sending request" in text or "onnect" in text:
        return "unreachable"
    if "timed out" in text or "Timeout" in text:
        return "timeout"
    return type(exc).__name__
