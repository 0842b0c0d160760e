"""The `telephony` command: serve, migrate, staff, security-log, purge, audit, keys, account,
export."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import getpass
import json
import logging
import signal
import sys
from collections.abc import AsyncIterator, Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path

import asyncpg
from aiohttp import web
from pydantic import TypeAdapter, ValidationError

from storage import audit, securitylog
from storage.blobs.filesystem import FilesystemBlobStore
from storage.db import create_pool, ensure_database, redact_dsn
from storage.keys import hierarchy as keys
from storage.keys.hierarchy import MasterKeyError
from storage.keys.passwords import PasswordHasher
from storage.migrate import apply_pending
from storage.pgcluster import ClusterError, LocalCluster
from telephony import logs
from telephony.delivery import workers
from telephony.domain.errors import ServiceError
from telephony.domain.roles import StaffRole
from telephony.settings import Settings, SettingsError, master_keys
from telephony.usecases import export, identity, retention
from telephony.web.api.accounts import Email, Password
from telephony.web.app import create_app

log = logging.getLogger("telephony")


class CliError(Exception):
    """A failure the user can act on; printed without a traceback, exit status 1."""


@contextlib.asynccontextmanager
async def database(settings: Settings, *, own_cluster: bool = False) -> AsyncIterator[Settings]:
    """Settings with a database URL: the configured server, or the embedded cluster.

    The embedded cluster is started when not running. It is stopped on exit
    when this call started it, or always with `own_cluster` (the server owns
    it, including one a killed server left running).
    """
    if settings.database_url is not None:
        yield settings
        return
    cluster = LocalCluster(settings.data_dir / "postgres")
    try:
        started = await asyncio.to_thread(cluster.ensure_running)
        await ensure_database(cluster.dsn())
    except ClusterError as exc:
        raise CliError(str(exc)) from exc
    try:
        yield settings.replace(database_url=cluster.dsn())
    finally:
        if started or own_cluster:
            await asyncio.to_thread(cluster.stop)


async def migrate(settings: Settings) -> list[str]:
    assert settings.database_url is not None
    pool = await create_pool(settings.database_url, min_size=1, max_size=1)
    try:
        async with pool.acquire() as conn:
            return await apply_pending(conn)
    finally:
        await pool.close()


# -- commands ----------------------------------------------------------------


async def cmd_serve(settings: Settings, args: argparse.Namespace) -> None:
    host = args.host or settings.host
    port = args.port if args.port is not None else settings.port
    async with database(settings, own_cluster=True) as ready:
        assert ready.database_url is not None
        applied = await migrate(ready)
        log.info(
            "database ready",
            extra={"dsn": redact_dsn(ready.database_url), "migrations_applied": applied},
        )
        runner = web.AppRunner(create_app(ready), access_log=None, handle_signals=False)
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            site = web.TCPSite(runner, host, port)
            await site.start()
            # Start-up's objects (modules, the app, pydantic's schemas) live for ever: take
            # them out of the collector's view, so each full collection under media load
            # walks only what the traffic made.
            gc.freeze()
            log.info("serving", extra={"url": f"http://{host}:{port}"})
            await stop.wait()
            log.info("shutting down")
        finally:
            await runner.cleanup()


async def cmd_migrate(settings: Settings, args: argparse.Namespace) -> None:
    async with database(settings) as ready:
        applied = await migrate(ready)
    print(json.dumps({"applied": applied}))


def _read_password(args: argparse.Namespace) -> str:
    if args.password_stdin:
        password = sys.stdin.readline().rstrip("\n")
    else:
        password = getpass.getpass("Password: ")
        if getpass.getpass("Repeat password: ") != password:
            raise CliError("the passwords differ")
    try:
        return TypeAdapter(Password).validate_python(password)
    except ValidationError:
        raise CliError("the password must have 12 to 1024 characters") from None


async def cmd_staff_create(settings: Settings, args: argparse.Namespace) -> None:
    try:
        email = TypeAdapter(Email).validate_python(args.email)
    except ValidationError:
        raise CliError("not a valid e-mail address") from None
    password = _read_password(args)
    async with database(settings) as ready:
        assert ready.database_url is not None
        await migrate(ready)
        pool = await create_pool(ready.database_url, max_size=2)
        try:
            hasher = PasswordHasher(ready.argon2)
            user = await identity.create_staff(
                pool,
                hasher,
                email=email,
                name=args.name or email.split("@")[0],
                role=args.role,
                password=password,
                now=datetime.now(UTC),
            )
        finally:
            await pool.close()
    print(json.dumps({"id": user.id, "email": user.email, "role": user.role}))


async def cmd_security_log(settings: Settings, args: argparse.Namespace) -> None:
    async with database(settings) as ready:
        assert ready.database_url is not None
        pool = await create_pool(ready.database_url, max_size=1)
        try:
            async with pool.acquire() as conn:
                events = await securitylog.list_events(conn, email=args.email, limit=args.limit)
        finally:
            await pool.close()
    for event in events:
        print(
            json.dumps(
                {
                    "id": event.id,
                    "at": event.at.isoformat(),
                    "event": event.event,
                    "outcome": event.outcome,
                    "user_id": event.user_id,
                    "email": event.email,
                    "source_address": event.source_address,
                    "user_agent": event.user_agent,
                }
            )
        )


async def cmd_purge(settings: Settings, args: argparse.Namespace) -> None:
    if args.days is not None:
        settings = settings.replace(log_retention_days=args.days)
    async with database(settings) as ready:
        assert ready.database_url is not None
        pool = await create_pool(ready.database_url, max_size=1)
        try:
            result = await workers.purge_logs(pool, ready, datetime.now(UTC))
        finally:
            await pool.close()
    print(
        json.dumps(
            {
                "security_log": result.security_log,
                "access_log": result.access_log,
                "staff_notifications": result.staff_notifications,
            }
        )
    )


async def cmd_audit_verify(settings: Settings, args: argparse.Namespace) -> None:
    async with database(settings) as ready:
        assert ready.database_url is not None
        pool = await create_pool(ready.database_url, max_size=1)
        try:
            async with pool.acquire() as conn:
                breaks = await audit.verify(conn, args.account)
        finally:
            await pool.close()
    for b in breaks:
        print(
            json.dumps({"account_id": b.account_id, "first_broken_seq": b.seq, "reason": b.reason})
        )
    if breaks:
        raise CliError(f"audit chain broken in {len(breaks)} account(s)")
    print(json.dumps({"verified": True, "account": args.account}))


async def cmd_keys_rotate(settings: Settings, args: argparse.Namespace) -> None:
    try:
        master = master_keys(settings)
    except MasterKeyError as exc:
        raise CliError(str(exc)) from None
    async with database(settings) as ready:
        assert ready.database_url is not None
        await migrate(ready)
        pool = await create_pool(ready.database_url, max_size=2)
        try:
            result = await keys.rotate(pool, master, datetime.now(UTC))
        finally:
            await pool.close()
    print(
        json.dumps(
            {
                "rewrapped": result.rewrapped,
                "remaining": result.remaining,
                "master_key_id": master.current_id,
            }
        )
    )


@contextlib.asynccontextmanager
async def _pool(settings: Settings, max_size: int = 2) -> AsyncIterator[asyncpg.Pool]:
    """A migrated database's pool, the embedded cluster started when needed."""
    async with database(settings) as ready:
        assert ready.database_url is not None
        await migrate(ready)
        pool = await create_pool(ready.database_url, max_size=max_size)
        try:
            yield pool
        finally:
            await pool.close()


async def cmd_account_terminate(settings: Settings, args: argparse.Namespace) -> None:
    grace = settings.termination_grace_days if args.grace_days is None else args.grace_days
    if grace < 0:
        raise CliError("--grace-days must be 0 or more")
    async with _pool(settings) as pool:
        done = await retention.terminate_account(
            pool, args.account_id, datetime.now(UTC), grace_days=grace
        )
    print(
        json.dumps(
            {
                "account_id": done.account_id,
                "terminated_at": done.terminated_at.isoformat(),
                "recordings_purge_after": done.recordings_purge_after.isoformat()
                if done.recordings_purge_after
                else None,
            }
        )
    )


async def cmd_export(settings: Settings, args: argparse.Namespace) -> None:
    try:
        master = master_keys(settings)
    except MasterKeyError as exc:
        raise CliError(str(exc)) from None
    out = Path(args.out)
    if await asyncio.to_thread(out.exists):
        raise CliError(f"{out} exists; choose a new file")
    async with _pool(settings) as pool:
        result = await export.export_account(
            pool,
            FilesystemBlobStore(settings.data_dir / "blobs"),
            master,
            args.account,
            out,
            datetime.now(UTC),
            export.text_progress(sys.stderr),
        )
    print(
        json.dumps(
            {
                "out": str(result.path),
                "recordings": result.recordings,
                "damaged": result.damaged,
                "calls": result.calls,
                "audit_events": result.audit_events,
            }
        )
    )
    if result.damaged:
        raise CliError(f"{len(result.damaged)} recording(s) failed their integrity check")


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="telephony", description=__doc__)
    sub = p.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="listen address (TELEPHONY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (TELEPHONY_PORT, default 8080)")
    serve.set_defaults(run=cmd_serve)

    sub.add_parser("migrate", help="apply pending database migrations").set_defaults(
        run=cmd_migrate
    )

    staff = sub.add_parser("staff", help="manage staff users").add_subparsers(
        dest="staff_command", required=True
    )
    create = staff.add_parser("create", help="create a staff user (password from a prompt)")
    create.add_argument("--email", required=True)
    create.add_argument("--role", required=True, choices=[r.value for r in StaffRole])
    create.add_argument("--name")
    create.add_argument(
        "--password-stdin", action="store_true", help="read the password from standard input"
    )
    create.set_defaults(run=cmd_staff_create)

    seclog = sub.add_parser("security-log", help="print login attempts, newest first (S2)")
    seclog.add_argument("--email")
    seclog.add_argument("--limit", type=int, default=100)
    seclog.set_defaults(run=cmd_security_log)

    audit_cmd = sub.add_parser("audit", help="the audit trail").add_subparsers(
        dest="audit_command", required=True
    )
    verify = audit_cmd.add_parser("verify", help="recompute the hash chains; exit 1 when broken")
    verify.add_argument("--account", help="only this account")
    verify.set_defaults(run=cmd_audit_verify)

    keys_cmd = sub.add_parser("keys", help="the key hierarchy").add_subparsers(
        dest="keys_command", required=True
    )
    keys_cmd.add_parser(
        "rotate",
        help="re-wrap account keys under TELEPHONY_MASTER_KEY; keep the old key in "
        "TELEPHONY_MASTER_KEY_PREVIOUS until it reports remaining: 0",
    ).set_defaults(run=cmd_keys_rotate)

    account_cmd = sub.add_parser("account", help="customer accounts").add_subparsers(
        dest="account_command", required=True
    )
    terminate = account_cmd.add_parser(
        "terminate",
        help="end the contract: calls end, API keys stop, recordings go after the grace period, "
        "personal data five years later (D4)",
    )
    terminate.add_argument("account_id")
    terminate.add_argument(
        "--grace-days", type=int, help="days to export before recordings go (default 30)"
    )
    terminate.set_defaults(run=cmd_account_terminate)

    export_cmd = sub.add_parser(
        "export", help="write an account's recordings (WAV) and a JSON manifest to a ZIP"
    )
    export_cmd.add_argument("--account", required=True)
    export_cmd.add_argument("--out", required=True, help="the archive to create")
    export_cmd.set_defaults(run=cmd_export)

    purge = sub.add_parser("purge", help="delete log rows past retention (S3)")
    purge.add_argument("--days", type=int, help="retention in days (default 60)")
    purge.set_defaults(run=cmd_purge)
    return p


def loop_factory(
    settings: Settings, command: str
) -> Callable[[], asyncio.AbstractEventLoop] | None:
    """uvloop for the server, the default loop elsewhere.

    The ingest issue measured about twice the bare legs per core on uvloop; on
    our 2-core CI machine the two loops came out within noise of each other
    (`bench/ingest.py --loop asyncio` compares). TELEPHONY_EVENT_LOOP=asyncio
    switches.
    """
    if command != "serve" or settings.event_loop != "uvloop":
        return None
    try:
        import uvloop
    except ImportError:
        log.warning("uvloop is not installed; serving on asyncio's default loop")
        return None
    return uvloop.new_event_loop


def main(argv: Sequence[str] | None = None) -> int:
    args = parser().parse_args(argv)
    logs.configure(stream=sys.stdout if args.command == "serve" else sys.stderr)
    try:
        settings = Settings.from_env()
        with asyncio.Runner(loop_factory=loop_factory(settings, args.command)) as runner:
            runner.run(args.run(settings, args))
    except (CliError, SettingsError, ServiceError, MasterKeyError) as exc:
        print(f"telephony: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
