"""A private PostgreSQL cluster started from the machine's own server binaries.

This is the embedded default for a laptop and for the test suite: no TCP, a
Unix socket in a private directory, trust authentication only on that socket.
PostgreSQL refuses to run as root, so under root the cluster runs as an
unprivileged user (`postgres` when the distribution created it, else
`nobody`). The functions here are synchronous: they run before the event loop
starts, or in a worker thread.
"""

from __future__ import annotations

import contextlib
import fcntl
import glob
import hashlib
import logging
import os
import pwd
import shutil
import stat
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

SUPERUSER = "telephony"
DATABASE = "telephony"
PORT = 5432  # only names the socket file; the cluster listens on no TCP port
_MAX_SOCKET_PATH = 100  # sun_path is 108 bytes; PostgreSQL appends "/.s.PGSQL.5432"
# WAL archiving for backups (S8, storage/backups.py): a file of ours in the data directory,
# rewritten at each start and included from postgresql.conf, so the command follows the
# configuration (the backup location) and a cluster restored elsewhere archives to its own.
ARCHIVE_CONF = "telephony-archive.conf"
_INCLUDE_ARCHIVE = f"include_if_exists = '{ARCHIVE_CONF}'"
# A segment is archived at least this often when anything was written: the granularity of
# a point-in-time restore, and the most a lost machine can take along with it.
ARCHIVE_TIMEOUT_S = 60


class ClusterError(RuntimeError):
    """The private cluster could not be created or started."""


def find_bindir() -> Path:
    """Locate initdb/pg_ctl: `pg_config --bindir`, then Debian's versioned folders, then PATH."""
    candidates: list[Path] = []
    pg_config = shutil.which("pg_config")
    if pg_config:
        with contextlib.suppress(OSError, subprocess.CalledProcessError):
            out = subprocess.run(
                [pg_config, "--bindir"], check=True, capture_output=True, text=True
            )
            candidates.append(Path(out.stdout.strip()))
    versioned = sorted(
        glob.glob("/usr/lib/postgresql/*/bin"),
        key=lambda p: int(Path(p).parent.name) if Path(p).parent.name.isdigit() else 0,
        reverse=True,
    )
    candidates.extend(Path(p) for p in versioned)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(initdb).resolve().parent)
    for path in candidates:
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file():
            return path
    raise ClusterError(
        "PostgreSQL server binaries not found (install postgresql, or set TELEPHONY_DATABASE_URL)"
    )


def _run_as() -> pwd.struct_passwd | None:
    """The unprivileged account the cluster runs as when we are root; None otherwise."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        with contextlib.suppress(KeyError):
            return pwd.getpwnam(name)
    raise ClusterError("running as root but no unprivileged user (postgres, nobody) exists")


@dataclass(frozen=True)
class LocalCluster:
    """A cluster in `root` (data in root/data, socket in root/run or a short /tmp path).

    `archive_command` turns WAL archiving on (archive_mode, archive_timeout); the cluster's
    user must be able to write `archive_dirs`, local folders the command writes into, and
    to reach `archive_reads`, the program and modules the command runs.
    """

    root: Path
    archive_command: str | None = None
    archive_dirs: tuple[Path, ...] = ()
    archive_reads: tuple[Path, ...] = ()

    def __post_init__(self) -> None:
        # The tools run with cwd "/" (the database user may not read ours): absolute paths only.
        object.__setattr__(self, "root", Path(self.root).absolute())
        folders = tuple(Path(d).absolute() for d in self.archive_dirs)
        object.__setattr__(self, "archive_dirs", folders)

    @property
    def data_dir(self) -> Path:
        return self.root / "data"

    @property
    def socket_dir(self) -> Path:
        preferred = self.root / "run"
        if len(str(preferred.resolve())) + 15 <= _MAX_SOCKET_PATH:
            return preferred
        digest = hashlib.sha256(str(self.root.resolve()).encode()).hexdigest()[:12]
        return Path("/tmp") / f"telephony-pg-{digest}"  # noqa: S108 - short path for sun_path

    def dsn(self, database: str = DATABASE) -> str:
        return f"postgresql://{SUPERUSER}@/{database}?host={self.socket_dir.resolve()}&port={PORT}"

    # -- lifecycle -------------------------------------------------------

    def ensure_running(self) -> bool:
        """Start the cluster unless it already runs; True when this call started it.

        A file lock serialises concurrent starters (two processes, or the CLI
        beside a running server). A `postmaster.pid` whose process is gone or
        is not a postmaster is removed, so a SIGKILLed service recovers.
        """
        self.root.mkdir(parents=True, exist_ok=True)
        with self._lock():
            bindir = find_bindir()
            if not (self.data_dir / "PG_VERSION").exists():
                self._initdb(bindir)
            self._prepare_dirs()
            changed = self._configure_archive()
            if self._postmaster_alive():
                log.info("reusing running PostgreSQL cluster", extra={"dir": str(self.root)})
                if changed:  # a new command or location; archive_mode itself needs a restart
                    self._pg(bindir, "pg_ctl", "reload", "-D", str(self.data_dir))
                return False
            self._remove_stale_pid()
            self._start(bindir)
            return True

    def stop(self) -> None:
        """Stop the cluster quickly (fast shutdown: sessions are ended, data is safe)."""
        with self._lock():
            if not self._postmaster_alive():
                return
            bindir = find_bindir()
            self._pg(bindir, "pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w")

    def is_running(self) -> bool:
        return self._postmaster_alive()

    def give(self, path: Path) -> None:
        """Hand `path` (a folder or file, and everything under it) to the cluster's user, and
        let that user reach it: what a restore extracts, what restore_command reads."""
        user = _run_as()
        if user is None:
            return
        self._grant_traverse(path, user)
        targets = [path, *path.rglob("*")] if path.is_dir() else [path]
        for target in targets:
            os.chown(target, user.pw_uid, user.pw_gid, follow_symlinks=False)

    # -- internals -------------------------------------------------------

    @contextlib.contextmanager
    def _lock(self) -> Iterator[None]:
        with open(self.root / ".cluster.lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _pg(self, bindir: Path, tool: str, *args: str) -> subprocess.CompletedProcess[str]:
        user = _run_as()
        try:
            return subprocess.run(
                [str(bindir / tool), *args],
                check=True,
                capture_output=True,
                text=True,
                user=user.pw_uid if user else None,
                group=user.pw_gid if user else None,
                extra_groups=[] if user else None,
                cwd="/",
                env={**os.environ, "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"},
            )
        except subprocess.CalledProcessError as exc:
            raise ClusterError(f"{tool} failed: {exc.stderr.strip()[-2000:]}") from exc

    def _grant_traverse(self, path: Path, user: pwd.struct_passwd) -> None:
        """Let the cluster's user reach `path` through root-only parents (o+x, no listing)."""
        for parent in reversed(path.resolve().parents):
            mode = parent.stat().st_mode
            if parent.stat().st_uid != user.pw_uid and not mode & stat.S_IXOTH:
                log.warning("granting traverse permission for the database user on %s", parent)
                parent.chmod(mode | stat.S_IXOTH)

    def _prepare_dirs(self) -> None:
        user = _run_as()
        for d in (self.data_dir, self.socket_dir):
            d.mkdir(parents=True, exist_ok=True, mode=0o700)
            if user:
                self._grant_traverse(d, user)
                if d.stat().st_uid != user.pw_uid:
                    os.chown(d, user.pw_uid, user.pw_gid)
            d.chmod(0o700)

    def _configure_archive(self) -> bool:
        """Write the archive settings (or remove them); True when they changed."""
        conf = self.data_dir / ARCHIVE_CONF
        if self.archive_command is None:
            if not conf.exists():
                return False
            conf.unlink()
            return True
        user = _run_as()
        for path in self.archive_reads:
            if user:
                self._grant_traverse(path, user)
        for folder in self.archive_dirs:  # the folder only: what it holds is the user's own
            folder.mkdir(parents=True, exist_ok=True, mode=0o700)
            if user:
                self._grant_traverse(folder, user)
                os.chown(folder, user.pw_uid, user.pw_gid)
        main = self.data_dir / "postgresql.conf"
        if _INCLUDE_ARCHIVE not in main.read_text(encoding="utf-8").splitlines():
            with open(main, "a", encoding="utf-8") as fh:
                fh.write(
                    f"\n# WAL archiving for backups, written by telephony\n{_INCLUDE_ARCHIVE}\n"
                )
        quoted = self.archive_command.replace("'", "''")
        text = (
            "# Written by telephony at each start (storage/pgcluster.py): WAL archiving for\n"
            "# backups (storage/backups.py). Edits are overwritten.\n"
            "archive_mode = on\n"
            f"archive_command = '{quoted}'\n"
            f"archive_timeout = {ARCHIVE_TIMEOUT_S}\n"
        )
        if conf.exists() and conf.read_text(encoding="utf-8") == text:
            return False
        conf.write_text(text, encoding="utf-8")
        if user:
            os.chown(conf, user.pw_uid, user.pw_gid)
        conf.chmod(0o600)
        return True

    def _initdb(self, bindir: Path) -> None:
        log.info("creating PostgreSQL cluster", extra={"dir": str(self.root)})
        if self.data_dir.exists():
            shutil.rmtree(self.data_dir)  # a half-made cluster from an interrupted initdb
        self._prepare_dirs()
        self._pg(
            bindir,
            "initdb",
            "-D",
            str(self.data_dir),
            "-U",
            SUPERUSER,
            "--auth=trust",  # only the private socket listens; see postgresql.conf below
            "--encoding=UTF8",
            "--no-instructions",
        )
        conf = self.data_dir / "postgresql.auto.conf"
        with open(conf, "a", encoding="utf-8") as fh:
            fh.write("listen_addresses = ''\nunix_socket_permissions = 0700\nfsync = on\n")

    def _pid(self) -> int | None:
        try:
            first = (self.data_dir / "postmaster.pid").read_text().splitlines()[0]
            return int(first)
        except (OSError, ValueError, IndexError):
            return None

    def _postmaster_alive(self) -> bool:
        pid = self._pid()
        if pid is None:
            return False
        try:
            comm = Path(f"/proc/{pid}/comm").read_text().strip()
        except OSError:
            return False
        return comm in ("postgres", "postmaster")

    def _remove_stale_pid(self) -> None:
        pid_file = self.data_dir / "postmaster.pid"
        if pid_file.exists():
            log.warning("removing stale postmaster.pid", extra={"dir": str(self.root)})
            pid_file.unlink()

    def _start(self, bindir: Path) -> None:
        opts = f"-k {self.socket_dir.resolve()} -p {PORT} -c listen_addresses=''"
        self._pg(
            bindir,
            "pg_ctl",
            "start",
            "-D",
            str(self.data_dir),
            "-w",
            "-t",
            "60",
            "-l",
            str(self.data_dir / "server.log"),
            "-o",
            opts,
        )
        deadline = time.monotonic() + 30
        while not self._postmaster_alive():
            if time.monotonic() > deadline:
                raise ClusterError("PostgreSQL did not start; see server.log in the cluster")
            time.sleep(0.05)
