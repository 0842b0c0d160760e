"""The blob store on a local filesystem: one file per blob under `root`.

Writes are durable when they return: `put` writes a temporary file, fsyncs
it, renames it into place and fsyncs the directory. Mode 0700 directories,
0600 files. File calls run on the store's own threads: the event loop never
waits for a disk, and nothing else queued on the default executor (an
export, a password hash) can hold a blob call up.
"""

from __future__ import annotations

import asyncio
import builtins
import concurrent.futures
import contextlib
import os
import secrets
import shutil
from collections.abc import AsyncIterable, AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TypeVar

from storage.blobs.names import check_key
from storage.blobs.protocol import BlobInfo, BlobRange
from telephony.domain.errors import IntegrityFailure, NotFound

_TMP_MARK = ".tmp-"
STREAM_PIECE = 1 << 20  # a sequential read hops to the store's threads once per MiB
FILE_THREADS = 4
T = TypeVar("T")


def fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_parents(path: Path) -> None:
    """Create the missing folders above `path` (0700), each made durable in its parent."""
    missing = []
    parent = path.parent
    while not parent.exists():
        missing.append(parent)
        parent = parent.parent
    for directory in reversed(missing):
        directory.mkdir(mode=0o700, exist_ok=True)
        fsync_dir(directory.parent)


def free_bytes(root: Path) -> int:
    path = root
    while not path.exists():  # before the first blob the folder may not exist yet
        path = path.parent
    stat = os.statvfs(path)
    return stat.f_bavail * stat.f_frsize


class FileThreads:
    """A few threads of one store's own (see the module docstring)."""

    def __init__(self, name: str, count: int = FILE_THREADS) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=count, thread_name_prefix=name
        )

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)

    def close(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)


class FilesystemBlobStore:
    """Blobs as files under `root`."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.threads = FileThreads("blobs")

    async def run(self, fn: Callable[..., T], *args: object) -> T:
        """Run a file call on the store's own threads."""
        return await self.threads.run(fn, *args)

    def _path(self, key: str) -> Path:
        path = self.root.joinpath(*check_key(key))
        if not path.is_relative_to(self.root):  # belt and braces: the check above forbids ".."
            raise ValueError(f"not a blob key: {key!r}")
        return path

    async def probe(self) -> int:
        """Free bytes of the store's filesystem, read on the store's threads (/readyz)."""
        return await self.run(free_bytes, self.root)

    async def close(self) -> None:
        self.threads.close()

    # -- writes --------------------------------------------------------------

    async def put(self, key: str, data: bytes) -> None:
        await self.run(self._put, self._path(key), data)

    @staticmethod
    def _put(path: Path, data: bytes) -> None:
        make_parents(path)
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
        fsync_dir(path.parent)

    async def put_file(self, key: str, path: Path) -> None:
        await self.run(self._put_file, self._path(key), path)

    @classmethod
    def _put_file(cls, path: Path, source: Path) -> None:
        """A second name for the file's bytes where the store is on the spool's filesystem
        (the usual: both under the data directory), a copy elsewhere. The link spares a
        copy, a second write of every byte to the disk, and freeing them again when the
        spool's name goes: a tenth of the RTP path's CPU at 300 legs (bench/rtp.py)."""
        make_parents(path)
        tmp = path.with_name(f"{path.name}{_TMP_MARK}{secrets.token_hex(6)}")
        try:
            os.link(source, tmp)
        except OSError:  # another filesystem (EXDEV), or one without hard links
            cls._put(path, source.read_bytes())
            return
        try:
            fd = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(fd)  # the spool synced it already: nothing to write, as a rule
            finally:
                os.close(fd)
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        os.replace(tmp, path)
        fsync_dir(path.parent)

    async def put_stream(self, key: str, pieces: AsyncIterable[bytes]) -> int:
        path = self._path(key)
        tmp = path.with_name(f"{path.name}{_TMP_MARK}{secrets.token_hex(6)}")
        fd = await self.run(self._open_new, tmp)
        size = 0
        try:
            async for piece in pieces:
                await self.run(self._write_all, fd, piece)
                size += len(piece)
            await self.run(os.fsync, fd)
        except BaseException:
            await self.run(os.close, fd)
            await self.run(tmp.unlink, True)
            raise
        await self.run(os.close, fd)
        await self.run(self._publish, tmp, path)
        return size

    @staticmethod
    def _open_new(tmp: Path) -> int:
        make_parents(tmp)
        return os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)

    @staticmethod
    def _write_all(fd: int, data: bytes) -> None:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]

    @staticmethod
    def _publish(tmp: Path, path: Path) -> None:
        os.replace(tmp, path)
        fsync_dir(path.parent)

    # -- reads ---------------------------------------------------------------

    async def read_ranges(self, ranges: Sequence[BlobRange]) -> list[bytes]:
        located = [(self._path(r.key), r.offset, r.length) for r in ranges]
        return await self.run(self._read_ranges, located)

    @staticmethod
    def _read_ranges(ranges: builtins.list[tuple[Path, int, int]]) -> builtins.list[bytes]:
        out = []
        for path, offset, length in ranges:
            try:
                with open(path, "rb") as fh:
                    fh.seek(offset)
                    data = fh.read(length)
            except (FileNotFoundError, IsADirectoryError):
                raise NotFound("no such blob") from None
            if len(data) != length:
                raise IntegrityFailure("a blob is shorter than its records say")
            out.append(data)
        return out

    async def stream(self, key: str, offset: int, length: int) -> AsyncIterator[bytes]:
        path, end = self._path(key), offset + length
        while offset < end:
            take = min(STREAM_PIECE, end - offset)
            [piece] = await self.run(self._read_ranges, [(path, offset, take)])
            yield piece
            offset += take

    async def list(self, prefix: str) -> list[BlobInfo]:
        return await self.run(self._list, self._path(prefix))

    # `list` in this class body is the method above; the return type is the builtin.
    def _list(self, base: Path) -> builtins.list[BlobInfo]:
        if base.is_file():
            return [BlobInfo(base.relative_to(self.root).as_posix(), base.stat().st_size)]
        if not base.is_dir():
            return []
        return sorted(
            (
                BlobInfo(p.relative_to(self.root).as_posix(), p.stat().st_size)
                for p in base.rglob("*")
                if p.is_file() and _TMP_MARK not in p.name
            ),
            key=lambda info: info.key,
        )

    # -- deletion ------------------------------------------------------------

    async def delete_prefix(self, prefix: str) -> int:
        return await self.run(self._delete_tree, self._path(prefix))

    async def delete_keys(self, keys: Sequence[str]) -> int:
        return await self.run(self._delete_files, [self._path(k) for k in keys])

    @staticmethod
    def _delete_files(paths: builtins.list[Path]) -> int:
        gone = 0
        for path in paths:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                gone += 1
        for folder in {p.parent for p in paths}:
            with contextlib.suppress(FileNotFoundError):
                fsync_dir(folder)
        return gone

    @staticmethod
    def _delete_tree(base: Path) -> int:
        if base.is_file():
            base.unlink()
            fsync_dir(base.parent)
            return 1
        if not base.is_dir():
            return 0
        count = sum(1 for p in base.rglob("*") if p.is_file())
        shutil.rmtree(base)
        fsync_dir(base.parent)
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
