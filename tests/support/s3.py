"""A real S3-protocol server on 127.0.0.1: moto in server mode, as its own process."""

from __future__ import annotations

import asyncio
import contextlib
import os
import re
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest

from tests.support.servers import free_port
from tests.support.waiting import eventually

# moto accepts any credentials; an S3 client insists on having some.
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


@dataclass
class S3Server:
    endpoint: str
    process: subprocess.Popen[bytes]

    def url(self, bucket: str, prefix: str = "blobs") -> str:
        return f"s3://{bucket}/{prefix}?endpoint={self.endpoint}&region=us-east-1"

    async def new_bucket(self, prefix: str = "blobs") -> str:
        """A fresh bucket on the server; the blob URL of `prefix` in it."""
        bucket = f"test-{secrets.token_hex(6)}"
        # moto checks no signature: a bare PUT makes the bucket (our store only uses them).
        async with aiohttp.ClientSession() as http, http.put(f"{self.endpoint}/{bucket}") as made:
            assert made.status == 200, await made.text()
        return self.url(bucket, prefix)

    async def multipart_uploads(self, bucket: str) -> list[str]:
        """The upload ids of the bucket's unfinished multipart uploads."""
        async with (
            aiohttp.ClientSession() as http,
            http.get(f"{self.endpoint}/{bucket}?uploads") as listing,
        ):
            assert listing.status == 200
            return re.findall(r"<UploadId>([^<]+)</UploadId>", await listing.text())


@pytest.fixture(scope="session")
def aws_credentials() -> Iterator[None]:
    saved = {k: os.environ.get(k) for k in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    yield
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value


@pytest.fixture(scope="session")
async def s3_server(
    aws_credentials: None, tmp_path_factory: pytest.TempPathFactory
) -> AsyncIterator[S3Server]:
    port = free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    moto = Path(sys.executable).with_name("moto_server")
    with open(log, "wb") as out:  # noqa: ASYNC230 -- once per run, before any test
        process = subprocess.Popen(  # noqa: ASYNC220
            [str(moto), "-H", "127.0.0.1", "-p", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    endpoint = f"http://127.0.0.1:{port}"

    async def up() -> bool:
        with contextlib.suppress(aiohttp.ClientError):
            async with aiohttp.ClientSession() as http, http.get(endpoint) as resp:
                return resp.status < 500
        return False

    try:
        await eventually(up, timeout_s=30, interval_s=0.1)
        yield S3Server(endpoint, process)
    finally:
        process.terminate()
        await asyncio.to_thread(process.wait, 10)
