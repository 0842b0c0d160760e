"""The blob store for sealed audio: a small protocol and its filesystem implementation.

Keys are built by the service from ids only (`recordings/rec_…/audio`) and
checked strictly, so no user input ever reaches a path. Writes are durable
when they return: `put` writes a temporary file, fsyncs it, renames it into
place and fsyncs the directory; `append` fsyncs the file (and the directory
when it created the file). File calls run in worker threads: the event loop
never waits for a disk.
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Protocol

from storage.errors import IntegrityFailure, NotFound

_SEGMENT = re.compile(r"^[a-z0-9_-]{1,64}$")
_MAX_SEGMENTS = 8
_TMP_MARK = ".tmp-"


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes) -> None: ...
    async def append(self, key: str, data: bytes) -> int: ...
    async def get(self, key: str) -> bytes: ...
    async def read_range(self, key: str, offset: int, length: int) -> bytes: ...
    def stream(
        self, key: str, *, chunk_bytes: int = 65536, offset: int = 0
    ) -> AsyncIterator[bytes]: ...
    async def size(self, key: str) -> int: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def list(self, prefix: str) -> list[str]: ...


def check_key(key: str) -> list[str]:
    """The key's segments; ValueError for anything that is not ids joined by '/'."""
    parts = key.split("/")
    if not 1 <= len(parts) <= _MAX_SEGMENTS or not all(_SEGMENT.match(p) for p in parts):
        raise ValueError(f"not a blob key: {key!r}")
    return parts


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class FilesystemBlobStore:
    """Blobs as files under `root` (mode 0700 directories, 0600 files)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self._locks: dict[str, asyncio.Lock] = {}

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key))
        if not path.is_relative_to(self.root):  # belt and braces: the check above forbids ".."
            raise ValueError(f"not a blob key: {key!r}")
        return path

    def _lock(self, key: str) -> asyncio.Lock:
        return self._locks.setdefault(key, asyncio.Lock())

    def _make_parents(self, path: Path) -> None:
        missing = []
        parent = path.parent
        while not parent.exists():
            missing.append(parent)
            parent = parent.parent
        for directory in reversed(missing):
            directory.mkdir(mode=0o700, exist_ok=True)
            _fsync_dir(directory.parent)

    # -- writes --------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        path = self._path(key)
        async with self._lock(key):
            await asyncio.to_thread(self._put, path, data)

    def _put(self, path: Path, data: bytes) -> None:
        self._make_parents(path)
        tmp = path.with_name(f"{path.name}{_TMP_MARK}{secrets.token_hex(6)}")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        os.replace(tmp, path)
        _fsync_dir(path.parent)

    async def append(self, key: str, data: bytes) -> int:
        path = self._path(key)
        async with self._lock(key):
            return await asyncio.to_thread(self._append, path, data)

    def _append(self, path: Path, data: bytes) -> int:
        created = False
        try:  # the usual case, once a second per recording: the file exists
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            self._make_parents(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            created = True
        try:
            offset = os.fstat(fd).st_size
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path.parent)
        return offset

    # -- reads ---------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await asyncio.to_thread(path.read_bytes)
        except FileNotFoundError:
            raise NotFound("no such blob") from None

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        path = self._path(key)
        data = await asyncio.to_thread(self._read_range, path, offset, length)
        if len(data) != length:
            raise IntegrityFailure("a blob is shorter than its records say")
        return data

    @staticmethod
    def _read_range(path: Path, offset: int, length: int) -> bytes:
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                return fh.read(length)
        except FileNotFoundError:
            raise NotFound("no such blob") from None

    async def stream(
        self, key: str, *, chunk_bytes: int = 65536, offset: int = 0
    ) -> AsyncIterator[bytes]:
        path = self._path(key)
        position = offset
        while True:
            piece = await asyncio.to_thread(self._read_range, path, position, chunk_bytes)
            if not piece:
                return
            position += len(piece)
            yield piece

    async def size(self, key: str) -> int:
        path = self._path(key)
        try:
            return (await asyncio.to_thread(path.stat)).st_size
        except FileNotFoundError:
            raise NotFound("no such blob") from None

    async def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        return await asyncio.to_thread(self._list, base)

    def _list(self, base: Path) -> list[str]:
        if base.is_file():
            return [base.relative_to(self.root).as_posix()]
        if not base.is_dir():
            return []
        return sorted(
            p.relative_to(self.root).as_posix()
            for p in base.rglob("*")
            if p.is_file() and _TMP_MARK not in p.name
        )

    # -- deletion --------------------------------------------------------------

    async def delete(self, key: str) -> None:
        path = self._path(key)
        async with self._lock(key):
            await asyncio.to_thread(self._delete, path)

    @staticmethod
    def _delete(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    async def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix)
        return await asyncio.to_thread(self._delete_tree, base)

    def _delete_tree(self, base: Path) -> int:
        if base.is_file():
            self._delete(base)
            return 1
        if not base.is_dir():
            return 0
        count = sum(1 for p in base.rglob("*") if p.is_file())
        shutil.rmtree(base)
        _fsync_dir(base.parent)
        return count

    async def cleanup_temporary(self) -> int:
        """Remove temporary files a crash left behind; they were never visible as blobs."""
        return await asyncio.to_thread(self._cleanup)

    def _cleanup(self) -> int:
        if not self.root.exists():
            return 0
        stale = [p for p in self.root.rglob(f"*{_TMP_MARK}*") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)
