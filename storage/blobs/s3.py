"""Blobs as objects in an S3-compatible store (AWS S3, MinIO, Ceph RGW), through aiobotocore.

`TELEPHONY_BLOB_URL=s3://bucket/prefix?endpoint=https://…&region=…`; credentials
come as botocore finds them (AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, a
profile, an instance role), never from the URL. The protocol is already the
object store's (put whole, read by ranges, list, delete by prefix), so this is
a thin layer: keys are the filesystem store's keys under the prefix, a read is
one ranged GET per range (many at once, bounded), a deletion lists and deletes
in batches of a thousand.

Errors keep the protocol's meaning: a missing object is NotFound, a short read
an IntegrityFailure, and an unreachable or failing store Unavailable (503):
the callers already hold their data (the spool keeps what it could not ship).
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import AsyncIterable, AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qs, urlsplit

from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError

from storage.blobs.names import check_key
from storage.blobs.protocol import BlobInfo, BlobRange
from telephony.domain.errors import IntegrityFailure, NotFound, Unavailable

if TYPE_CHECKING:
    from types_aiobotocore_s3 import S3Client
    from types_aiobotocore_s3.type_defs import CompletedPartTypeDef, ObjectIdentifierTypeDef

READS_AT_ONCE = 16  # ranged GETs in flight for one read_ranges call
DELETE_BATCH = 1000  # S3's own limit per DeleteObjects
STREAM_PIECE = 1 << 20  # what one read of a streamed GET's body asks for
MULTIPART_BYTES = 8 * 1024 * 1024  # a piece of a multipart upload (S3: at least 5 MiB)
UNLIMITED = 2**62  # an object store has no free-space figure; capacity is the provider's


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
    def __init__(self, location: S3Location, client: S3Client, stack: contextlib.AsyncExitStack):
        self.location = location
        self.client = client
        self._stack = stack
        self._reads = asyncio.Semaphore(READS_AT_ONCE)
        self.stats = RequestStats()

    @classmethod
    async def open(cls, location: S3Location) -> S3BlobStore:
        # Making the client reads botocore's data files and the AWS configuration, once, at
        # start-up (before the node serves); requests afterwards do no file I/O.
        session = get_session()
        stack = contextlib.AsyncExitStack()
        config = AioConfig(
            connect_timeout=5,
            read_timeout=30,
            retries={"max_attempts": 3, "mode": "standard"},
            max_pool_connections=64,
            # Our parameters are built here, never from input: botocore's walk of each
            # request's shape is pure cost. Every chunk carries its own AES-GCM tag, read
            # back and checked, so the CRC32 botocore would add to each PUT guards nothing a
            # download does not check anyway. Together about a sixth of a PUT's CPU
            # (about 2.8 -> 2.4 ms of CPU per 80 kB PUT against moto).
            parameter_validation=False,
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
        client = await stack.enter_async_context(
            session.create_client(
                "s3",
                region_name=location.region or "us-east-1",
                endpoint_url=location.endpoint_url,
                config=config,
            )
        )
        return cls(location, client, stack)

    def __repr__(self) -> str:
        return f"S3BlobStore(s3://{self.location.bucket}/{self.location.prefix})"

    def _object(self, key: str) -> str:
        check_key(key)
        return f"{self.location.prefix}/{key}" if self.location.prefix else key

    def _key(self, name: str) -> str:
        prefix = self.location.prefix
        return name[len(prefix) + 1 :] if prefix else name

    async def close(self) -> None:
        await self._stack.aclose()

    async def probe(self) -> int:
        """Reachable (the bucket answers) or raises Unavailable; no free-space figure."""
        try:
            async with self.stats.timing("head"):
                await self.client.head_bucket(Bucket=self.location.bucket)
        except (ClientError, BotoCoreError) as exc:
            raise Unavailable(f"the object store does not answer: {_reason(exc)}") from None
        return UNLIMITED

    async def put(self, key: str, data: bytes) -> None:
        try:
            async with self.stats.timing("put"):
                await self.client.put_object(
                    Bucket=self.location.bucket, Key=self._object(key), Body=data
                )
        except (ClientError, BotoCoreError) as exc:
            raise Unavailable(f"the object store refused a write: {_reason(exc)}") from None

    async def put_file(self, key: str, path: Path) -> None:
        await self.put(key, await asyncio.to_thread(path.read_bytes))

    async def copy_to(self, key: str, target: S3BlobStore, target_key: str) -> None:
        """A server-side copy into `target`, a store in the same bucket (backups, S8): no
        bytes pass through this process. NotFound when the object is gone."""
        try:
            async with self.stats.timing("copy"):
                await self.client.copy_object(
                    Bucket=target.location.bucket,
                    Key=target._object(target_key),
                    CopySource={"Bucket": self.location.bucket, "Key": self._object(key)},
                )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code", "") in ("NoSuchKey", "404", "NotFound"):
                raise NotFound("no such blob") from None
            raise Unavailable(f"the object store failed a copy: {_reason(exc)}") from None
        except BotoCoreError as exc:
            raise Unavailable(f"the object store failed a copy: {_reason(exc)}") from None

    async def put_stream(self, key: str, pieces: AsyncIterable[bytes]) -> int:
        """One PUT when it all fits in one piece, else a multipart upload of MULTIPART_BYTES
        pieces (S3's minimum is 5 MiB), aborted on any failure so no partial object or
        orphaned upload is left."""
        name, bucket = self._object(key), self.location.bucket
        buffer, size = bytearray(), 0
        upload_id: str | None = None
        done: builtins.list[CompletedPartTypeDef] = []
        try:
            async for piece in pieces:
                buffer += piece
                size += len(piece)
                while len(buffer) >= MULTIPART_BYTES:
                    if upload_id is None:
                        async with self.stats.timing("put"):
                            started = await self.client.create_multipart_upload(
                                Bucket=bucket, Key=name
                            )
                        upload_id = started["UploadId"]
                    done.append(await self._upload_part(name, upload_id, len(done) + 1, buffer))
                    del buffer[:MULTIPART_BYTES]
            if upload_id is None:
                await self.put(key, bytes(buffer))
                return size
            if buffer:
                done.append(await self._upload_part(name, upload_id, len(done) + 1, buffer))
            async with self.stats.timing("put"):
                await self.client.complete_multipart_upload(
                    Bucket=bucket, Key=name, UploadId=upload_id, MultipartUpload={"Parts": done}
                )
        except BaseException as exc:  # the store's failure, or the source's: never half an upload
            if upload_id is not None:
                with contextlib.suppress(ClientError, BotoCoreError):
                    await self.client.abort_multipart_upload(
                        Bucket=bucket, Key=name, UploadId=upload_id
                    )
            if isinstance(exc, ClientError | BotoCoreError):
                raise Unavailable(f"the object store refused a write: {_reason(exc)}") from None
            raise
        return size

    async def _upload_part(
        self, name: str, upload_id: str, number: int, buffer: bytearray
    ) -> CompletedPartTypeDef:
        async with self.stats.timing("put"):
            answer = await self.client.upload_part(
                Bucket=self.location.bucket,
                Key=name,
                UploadId=upload_id,
                PartNumber=number,
                Body=bytes(buffer[:MULTIPART_BYTES]),
            )
        return {"ETag": answer["ETag"], "PartNumber": number}

    async def read_ranges(self, ranges: Sequence[BlobRange]) -> builtins.list[bytes]:
        return list(await asyncio.gather(*(self._read(r) for r in ranges)))

    async def _read(self, wanted: BlobRange) -> bytes:
        if wanted.length == 0:
            return b""
        async with self._reads:
            try:
                async with self.stats.timing("get"):
                    answer = await self.client.get_object(
                        Bucket=self.location.bucket,
                        Key=self._object(wanted.key),
                        Range=f"bytes={wanted.offset}-{wanted.offset + wanted.length - 1}",
                    )
                    async with answer["Body"] as body:
                        data = await body.read()
            except (ClientError, BotoCoreError) as exc:
                raise _read_failure(exc) from None
        if len(data) != wanted.length:
            raise IntegrityFailure("a blob is shorter than its rows say")
        return bytes(data)

    async def stream(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        """One ranged GET for the whole stretch, read as it arrives; the object store's
        failure mid-way is Unavailable, a short object an IntegrityFailure."""
        if length == 0:
            return
        got = 0
        try:
            async with self.stats.timing("get"):
                answer = await self.client.get_object(
                    Bucket=self.location.bucket,
                    Key=self._object(key),
                    Range=f"bytes={offset}-{offset + length - 1}",
                )
            async with answer["Body"] as body:
                while got < length:
                    piece = await body.read(min(STREAM_PIECE, length - got))
                    if not piece:
                        break
                    got += len(piece)
                    yield bytes(piece)
        except (NotFound, IntegrityFailure, Unavailable):
            raise
        except Exception as exc:  # botocore's, or the body's transport failing mid-way
            raise _read_failure(exc) from None
        if got != length:
            raise IntegrityFailure("a blob is shorter than its rows say")

    async def list(self, prefix: str) -> builtins.list[BlobInfo]:
        full = self._object(prefix)
        found: builtins.list[BlobInfo] = []
        token: str | None = None
        try:
            while True:  # pages of a thousand, by continuation token
                async with self.stats.timing("list"):
                    if token:
                        page = await self.client.list_objects_v2(
                            Bucket=self.location.bucket, Prefix=full, ContinuationToken=token
                        )
                    else:
                        page = await self.client.list_objects_v2(
                            Bucket=self.location.bucket, Prefix=full
                        )
                for item in page.get("Contents", []):
                    name = item["Key"]
                    if name == full or name.startswith(full + "/"):  # a whole key segment
                        found.append(BlobInfo(self._key(name), int(item["Size"])))
                token = page.get("NextContinuationToken")
                if not page.get("IsTruncated") or not token:
                    break
        except (ClientError, BotoCoreError) as exc:
            raise Unavailable(f"the object store failed a listing: {_reason(exc)}") from None
        return sorted(found, key=lambda info: info.key)

    async def delete_prefix(self, prefix: str) -> int:
        return await self.delete_keys([info.key for info in await self.list(prefix)])

    async def delete_keys(self, keys: Sequence[str]) -> int:
        gone = list(keys)
        for start in range(0, len(gone), DELETE_BATCH):
            batch: builtins.list[ObjectIdentifierTypeDef] = [
                {"Key": self._object(k)} for k in gone[start : start + DELETE_BATCH]
            ]
            try:
                async with self.stats.timing("delete"):
                    answer = await self.client.delete_objects(
                        Bucket=self.location.bucket, Delete={"Objects": batch, "Quiet": True}
                    )
            except (ClientError, BotoCoreError) as exc:
                raise Unavailable(f"the object store failed a deletion: {_reason(exc)}") from None
            if answer.get("Errors"):
                first: Any = answer["Errors"][0]
                raise Unavailable(f"the object store kept {first.get('Key')}: {first.get('Code')}")
        return len(gone)


def _read_failure(exc: Exception) -> Exception:
    """What a failed read means to callers: a missing object is NotFound, a range past its
    end an IntegrityFailure (the rows promised more), anything else the store's outage."""
    code = exc.response.get("Error", {}).get("Code", "") if isinstance(exc, ClientError) else ""
    if code in ("NoSuchKey", "404", "NotFound"):
        return NotFound("no such blob")
    if code == "InvalidRange":
        return IntegrityFailure("a blob is shorter than its rows say")
    return Unavailable(f"the object store failed a read: {_reason(exc)}")


def _reason(exc: Exception) -> str:
    """A short cause for logs and problems: the error code, never a signed URL or header."""
    if isinstance(exc, ClientError):
        return str(exc.response.get("Error", {}).get("Code") or "error")
    return type(exc).__name__
