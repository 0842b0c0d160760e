"""The blob store for sealed audio: a small protocol and its filesystem implementation.

Keys are built by the service from ids only (`recordings/rec_…/audio`) and
checked strictly, so no user input ever reaches a path. Writes are durable
when they return: `put` writes a temporary file, fsyncs it, renames it into
place and fsyncs the directory; `append` fsyncs the file (and the directory
when it created the file); `append_many` does the same, or, for many files at
once on Linux, one syncfs(2) per filesystem they lie on. File calls run in
worker threads: the event loop never waits for a disk.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import os
import platform
import re
import secrets
import shutil
import weakref
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Protocol, TypeVar

from telephony.domain.errors import IntegrityFailure, NotFound

_SEGMENT = re.compile(r"^[a-z0-9_-]{1,64}$")
_MAX_SEGMENTS = 8
_TMP_MARK = ".tmp-"
# File calls get threads of their own: a password storm or an export on the
# default executor can never hold up a seal turn (issue 10).
FILE_THREADS = 4
T = TypeVar("T")


class BlobStore(Protocol):
    async def put(self, key: str, data: bytes) -> None: ...
    async def append(self, key: str, data: bytes) -> int: ...
    async def append_many(
        self, items: Sequence[tuple[str, bytes]]
    ) -> list[int | BaseException]: ...
    async def get(self, key: str) -> bytes: ...
    async def read_range(self, key: str, offset: int, length: int) -> bytes: ...
    def stream(
        self, key: str, *, chunk_bytes: int = 65536, offset: int = 0
    ) -> AsyncIterator[bytes]: ...
    async def size(self, key: str) -> int: ...
    async def delete(self, key: str) -> None: ...
    async def delete_prefix(self, prefix: str) -> int: ...
    async def list(self, prefix: str) -> list[str]: ...
    async def probe(self) -> int: ...
    def close(self) -> None: ...


def check_key(key: str) -> list[str]:
    """The key's segments; ValueError for anything that is not ids joined by '/'."""
    parts = key.split("/")
    if not 1 <= len(parts) <= _MAX_SEGMENTS or not all(_SEGMENT.match(p) for p in parts):
        raise ValueError(f"not a blob key: {key!r}")
    return parts


# From this many files in one append_many, one syncfs beats an fsync each: 300
# appends of 8 KiB cost the machine 17 ms of CPU that way against 45-55 ms of
# fsyncs (journal work per call), on ext4 here.
SYNCFS_FROM = 16


def _load_syncfs() -> Callable[[int], int] | None:
    """libc's syncfs(2), where it reports writeback errors (Linux 5.8 and later)."""
    release = re.match(r"(\d+)\.(\d+)", platform.release())
    if platform.system() != "Linux" or not release:
        return None
    if (int(release[1]), int(release[2])) < (5, 8):
        return None  # older kernels' syncfs returns 0 even when a write failed
    try:
        function = ctypes.CDLL(None, use_errno=True).syncfs
    except (OSError, AttributeError):
        return None
    function.argtypes, function.restype = [ctypes.c_int], ctypes.c_int
    return function


_SYNCFS = _load_syncfs()


def sync_filesystem(fd: int) -> bool:
    """Flush every file of the filesystem holding `fd`; False when that is not done.

    It flushes other writers' dirty data on the same filesystem too: the
    blob store is best kept on a filesystem of its own.
    """
    return _SYNCFS is not None and _SYNCFS(fd) == 0


def _free_bytes(root: Path) -> int:
    path = root
    while not path.exists():  # before the first recording the store's folder may not exist
        path = path.parent
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


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
        # Weak: a lock lives while someone holds or awaits it, not for every key ever seen.
        self._locks: weakref.WeakValueDictionary[str, asyncio.Lock] = weakref.WeakValueDictionary()
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=FILE_THREADS, thread_name_prefix="blobs"
        )

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run a file call on the store's own threads."""
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    async def probe(self) -> int:
        """Free bytes of the store's filesystem, read on the store's threads (/readyz).

        A store whose threads are all stuck (a hung disk, a wedged NFS mount)
        never answers: the caller bounds the wait.
        """
        return await self.run(_free_bytes, self.root)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

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
            await self.run(self._put, path, data)

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
            return await self.run(self._append, path, data)

    def _append(self, path: Path, data: bytes) -> int:
        fd, offset, created = self._append_unsynced(path, data)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
        if created:
            _fsync_dir(path.parent)
        return offset

    async def append_many(self, items: Sequence[tuple[str, bytes]]) -> list[int | BaseException]:
        """Append to many blobs in one worker-thread hop; each item's offset, or its error.

        Why: every live recording appends a chunk a second. One hop for all of
        them, writing first and syncing after (one syncfs for SYNCFS_FROM
        files or more; if it fails, an fsync each, so each item learns its
        own error), costs a fraction of a hop and a journal commit per chunk.
        Items for the same key land in order.
        """
        paths = [self._path(key) for key, _ in items]
        async with contextlib.AsyncExitStack() as held:
            for key in sorted({key for key, _ in items}):  # one order: no deadlock
                await held.enter_async_context(self._lock(key))
            return await self.run(self._append_all, paths, [data for _, data in items])

    def _append_all(self, paths: list[Path], datas: list[bytes]) -> list[int | BaseException]:
        results: list[int | BaseException] = []
        opened: list[tuple[int, int, Path, bool]] = []  # (fd, result index, path, created)
        for path, data in zip(paths, datas, strict=True):
            try:
                fd, offset, created = self._append_unsynced(path, data)
            except OSError as exc:
                results.append(exc)
                continue
            opened.append((fd, len(results), path, created))
            results.append(offset)
        synced = len(opened) >= SYNCFS_FROM and all(
            # One syncfs per filesystem: a mount inside the store has its own.
            sync_filesystem(fd)
            for fd in {os.fstat(fd).st_dev: fd for fd, *_ in opened}.values()
        )
        for fd, index, path, created in opened:
            try:
                if not synced:
                    os.fsync(fd)
                    if created:
                        _fsync_dir(path.parent)
            except OSError as exc:
                results[index] = exc
            finally:
                os.close(fd)
        return results

    def _append_unsynced(self, path: Path, data: bytes) -> tuple[int, int, bool]:
        """(open fd, offset the data starts at, whether the file was created); not yet synced."""
        created = False
        try:  # the usual case, once a second per recording: the file exists
            fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        except FileNotFoundError:
            self._make_parents(path)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            created = True
        try:
            offset = os.fstat(fd).st_size
        except BaseException:
            os.close(fd)
            raise
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
        except BaseException:
            # A half-written record (a full disk) would shift every later one: cut it off.
            with contextlib.suppress(OSError):
                os.ftruncate(fd, offset)
            os.close(fd)
            raise
        return fd, offset, created

    # -- reads ---------------------------------------------------------------

    async def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return await self.run(path.read_bytes)
        except FileNotFoundError:
            raise NotFound("no such blob") from None

    async def read_range(self, key: str, offset: int, length: int) -> bytes:
        path = self._path(key)
        data = await self.run(self._read_range, path, offset, length)
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
            piece = await self.run(self._read_range, path, position, chunk_bytes)
            if not piece:
                return
            position += len(piece)
            yield piece

    async def size(self, key: str) -> int:
        path = self._path(key)
        try:
            return (await self.run(path.stat)).st_size
        except FileNotFoundError:
            raise NotFound("no such blob") from None

    async def list(self, prefix: str) -> list[str]:
        base = self._path(prefix)
        return await self.run(self._list, base)

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
            await self.run(self._delete, path)

    @staticmethod
    def _delete(path: Path) -> None:
        try:
            path.unlink()
        except FileNotFoundError:
            return
        _fsync_dir(path.parent)

    async def delete_prefix(self, prefix: str) -> int:
        base = self._path(prefix)
        return await self.run(self._delete_tree, base)

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
        return await self.run(self._cleanup)

    def _cleanup(self) -> int:
        if not self.root.exists():
            return 0
        stale = [p for p in self.root.rglob(f"*{_TMP_MARK}*") if p.is_file()]
        for path in stale:
            path.unlink(missing_ok=True)
        return len(stale)
