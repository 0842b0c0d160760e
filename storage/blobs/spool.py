"""The media node's spool: sealed chunks appended to local files and synced every seal turn.

Why a spool: object stores have no append, yet the crash bound (a process
killed mid-call loses under a second) needs each seal turn's records on a
disk before the next. So each live recording appends to a local *part*
file here, synced once per turn, and whole parts move to the blob store
(`put`) every few seconds and when the recording ends; a restarted node
ships what its spool still holds before it reports ready.

A part is named like the blob it becomes (`recordings/<id>/audio-<offset>`,
the offset of its first byte in the recording's byte stream), under the
node's own folder, so two nodes sharing a disk never touch each other's.

Durability: `append_many` writes every item first and syncs after: an
fsync each for a few files, or, for SYNCFS_FROM files or more on Linux,
one syncfs(2) per filesystem they lie on (if that fails, an fsync each, so
each item still learns its own error).
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import platform
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from storage.blobs.filesystem import FileThreads, free_bytes, fsync_dir, make_parents
from storage.blobs.names import audio_part, check_key, part_offset

# From this many files in one append_many, one syncfs beats an fsync each: 300
# appends of 8 KiB cost the machine 17 ms of CPU that way against 45-55 ms of
# fsyncs (journal work per call), on ext4 here.
SYNCFS_FROM = 16
SPOOL_THREADS = 2


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
    spool is best kept on a filesystem of its own.
    """
    return _SYNCFS is not None and _SYNCFS(fd) == 0


@dataclass(frozen=True, order=True)
class Part:
    """One spooled part of a recording's byte stream."""

    recording_id: str
    offset: int  # of its first byte in the recording's stream

    @property
    def key(self) -> str:
        """Its name in the spool, and in the blob store once shipped."""
        return audio_part(self.recording_id, self.offset)


@dataclass(frozen=True)
class SpooledPart:
    part: Part
    size_bytes: int
    modified_at: float = 0.0  # seconds since the epoch: when it was last written


class Spool:
    """Append-and-sync files under `root` (mode 0700 folders, 0600 files)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).absolute()
        self.threads = FileThreads("spool", SPOOL_THREADS)

    def _path(self, part: Part) -> Path:
        return self.root.joinpath(*check_key(part.key))

    async def probe(self) -> int:
        return await self.threads.run(free_bytes, self.root)

    def close(self) -> None:
        self.threads.close()

    # -- appends ---------------------------------------------------------------

    async def append_many(self, items: Sequence[tuple[Part, bytes]]) -> list[int | BaseException]:
        """Append to many parts in one worker-thread hop; each item's offset in its part file,
        or its error. Items for the same part land in the order given.

        Why one hop: every live recording appends a chunk a second; a hop and a
        journal commit per chunk cost several times one hop and one syncfs.
        The seal turn is the only appender, so no lock is needed.
        """
        paths = [self._path(part) for part, _ in items]
        return await self.threads.run(_append_all, paths, [data for _, data in items])

    # -- shipping and recovery ---------------------------------------------------

    def file_of(self, part: Part) -> Path:
        """Where the part's bytes are (a whole part goes to the store by `put_file`)."""
        return self._path(part)

    async def read(self, part: Part) -> bytes:
        return await self.threads.run(self._path(part).read_bytes)

    async def remove(self, part: Part) -> None:
        await self.threads.run(_remove, self._path(part))

    async def parts(self) -> list[SpooledPart]:
        """Every part the spool holds, oldest offset first per recording."""
        return await self.threads.run(self._scan)

    def _scan(self) -> list[SpooledPart]:
        found: list[SpooledPart] = []
        base = self.root / "recordings"
        if not base.is_dir():
            return found
        for folder in sorted(base.iterdir()):
            if folder.is_dir() and not any(folder.iterdir()):
                with contextlib.suppress(OSError):
                    folder.rmdir()  # a finished recording's, its last part shipped
                continue
            for file in sorted(folder.iterdir()) if folder.is_dir() else ():
                offset = part_offset(file.name)
                if offset is None or not file.is_file():
                    continue
                info = file.stat()
                found.append(SpooledPart(Part(folder.name, offset), info.st_size, info.st_mtime))
        return found


def _remove(path: Path) -> None:
    """A shipped part goes. Not synced, and its folder kept: an unlink a power cut undoes
    only ships the part again (a put of the same bytes), and a folder removed with each
    part was made again, synced, for the next one, a fifth of the spool's work at
    hundreds of legs (py-spy, bench/ingest.py). Empty folders go at the next start."""
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


def _append_all(paths: list[Path], datas: list[bytes]) -> list[int | BaseException]:
    results: list[int | BaseException] = []
    opened: list[tuple[int, int, Path, int, bool]] = []  # (fd, result index, path, offset, created)
    for path, data in zip(paths, datas, strict=True):
        try:
            fd, offset, created = _append_unsynced(path, data)
        except OSError as exc:
            results.append(exc)
            continue
        opened.append((fd, len(results), path, offset, created))
        results.append(offset)
    synced = len(opened) >= SYNCFS_FROM and all(
        # One syncfs per filesystem: a mount inside the spool has its own.
        sync_filesystem(fd)
        for fd in {os.fstat(fd).st_dev: fd for fd, *_ in opened}.values()
    )
    for fd, index, path, offset, created in opened:
        try:
            if not synced:
                os.fsync(fd)
                if created:
                    fsync_dir(path.parent)
        except OSError as exc:
            # Not on disk (a full disk, late): its caller is told so and will not count it,
            # so the bytes must not stay either, or the next record lands after them.
            _cut_back(fd, path, offset, created)
            results[index] = exc
        finally:
            os.close(fd)
    return results


def _cut_back(fd: int, path: Path, offset: int, created: bool) -> None:
    """Undo an append that failed: the file ends where it did, and a file the append
    created goes (an empty part would linger in the spool until a restart)."""
    with contextlib.suppress(OSError):
        if created:
            path.unlink()
        else:
            os.ftruncate(fd, offset)


def _append_unsynced(path: Path, data: bytes) -> tuple[int, int, bool]:
    """(open fd, offset the data starts at, whether the file was created); not yet synced."""
    created = False
    try:  # the usual case, once a second per recording: the file exists
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
    except FileNotFoundError:
        make_parents(path)
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
        _cut_back(fd, path, offset, created)
        os.close(fd)
        raise
    return fd, offset, created
