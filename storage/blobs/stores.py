"""Which blob store a process uses: TELEPHONY_BLOB_URL, `file:///…` or `s3://…`; or, with
TELEPHONY_REGIONS, one such store per data region behind a RegionalBlobStore."""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote, urlsplit

from storage.blobs.filesystem import FilesystemBlobStore
from storage.blobs.protocol import BlobStore
from storage.blobs.regions import RegionalBlobStore, RegionStore
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


def _folder(url: str) -> Path:
    return Path(unquote(urlsplit(url).path))


def store_identity(url: str) -> tuple[str, ...]:
    """What makes two checked blob URLs one store (the same bucket and prefix at the same
    endpoint, or the same folder): two regions must not share one."""
    if url.startswith("s3:"):
        at = parse_s3_url(url)
        return ("s3", at.endpoint_url or "", at.bucket, at.prefix)
    return ("file", os.path.normpath(_folder(url)))


def describe_blob_url(url: str | None, default_root: Path) -> str:
    """Where a store keeps blobs, fit for a customer's access copy (D1): `s3://bucket/prefix`
    without the query (the endpoint's host and the parameters are deployment detail; the
    URL never carries credentials, parse_s3_url refuses them), or `file:` and the folder's
    own name, without the path above it."""
    if url is None:
        return f"file:{default_root.name}"
    if url.startswith("s3:"):
        at = parse_s3_url(url)
        return f"s3://{at.bucket}/{at.prefix}" if at.prefix else f"s3://{at.bucket}"
    return f"file:{_folder(url).name}"


async def open_blob_store(
    url: str | None,
    default_root: Path,
    *,
    regions: Mapping[str, str] | None = None,
    default_region: str | None = None,
) -> BlobStore:
    """The configured store; None: the filesystem store under `default_root`.

    `regions` (name → blob URL, TELEPHONY_REGIONS): a RegionalBlobStore of one store each,
    `default_region` among them; `url` is then not used. Bind it to the database
    (regions.bind_database) before it stores a recording's blobs.
    """
    if not regions:
        return await _open_one(url, default_root)
    if default_region is None or default_region not in regions:
        raise ValueError("the default region is not one of the regions")
    opened: list[RegionStore] = []
    try:
        for name, region_url in regions.items():
            store = await _open_one(region_url, default_root)
            opened.append(RegionStore(name, store, describe_blob_url(region_url, default_root)))
    except BaseException:
        for made in opened:
            await made.store.close()
        raise
    return RegionalBlobStore(opened, default_region)


async def _open_one(url: str | None, default_root: Path) -> BlobStore:
    if url is None:
        return FilesystemBlobStore(default_root)
    check_blob_url(url)
    if url.startswith("s3:"):
        return await S3BlobStore.open(parse_s3_url(url))
    return FilesystemBlobStore(_folder(url))
