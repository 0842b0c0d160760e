"""Which blob store a process uses: TELEPHONY_BLOB_URL, `file:///…` or `s3://…`."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.blobs.filesystem import FilesystemBlobStore
from storage.blobs.protocol import BlobStore
from storage.blobs.s3 import S3BlobStore, parse_s3_url


def check_blob_url(url: str) -> None:
    """ValueError, naming what is wrong (never the URL: it is configuration), or nothing."""
    scheme = urlsplit(url).scheme
    if scheme == "file":
        if not urlsplit(url).path.startswith("/"):
            raise ValueError("a file: URL names an absolute folder (file:///srv/blobs)")
        return
    if scheme == "s3":
        parse_s3_url(url)
        return
    raise ValueError("the blob URL is file:///folder or s3://bucket/prefix?endpoint=…&region=…")


async def open_blob_store(url: str | None, default_root: Path) -> BlobStore:
    """The configured store; None: the filesystem store under `default_root`."""
    if url is None:
        return FilesystemBlobStore(default_root)
    check_blob_url(url)
    if url.startswith("s3:"):
        return await S3BlobStore.open(parse_s3_url(url))
    return FilesystemBlobStore(Path(unquote(urlsplit(url).path)))
