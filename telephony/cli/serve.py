"""`telephony serve`: the service, on the embedded cluster unless a database is configured."""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import signal

from storage.db import redact_dsn
from telephony.cli.common import database, migrate
from telephony.delivery.maildrop import MailDrop
from telephony.settings import Settings
from telephony.web.app import create_app
from telephony.web.server import ServiceRunner

log = logging.getLogger("telephony")

GC_YOUNG_THRESHOLD = 20_000  # CPython's default is 700: see cmd_serve


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
        drop = None
        if ready.smtp_url is None:
            # The embedded default, like the private cluster: mail lands in data_dir/mail.
            drop = await MailDrop(ready.data_dir / "mail").start()
            ready = ready.replace(smtp_url=drop.url)
            log.info("mail drop", extra={"folder": str(ready.data_dir / "mail"), "url": drop.url})
        runner = ServiceRunner(create_app(ready), access_log=None, handle_signals=False)
        await runner.setup()
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, stop.set)
        try:
            await runner.serve_tcp(host, port)
            # Start-up's objects (modules, the app, pydantic's schemas) live for ever: take
            # them out of the collector's view, so each full collection under media load
            # walks only what the traffic made.
            gc.freeze()
            # Live calls keep thousands of frames in flight for a second each, and at the
            # default of 700 net allocations the young generation was collected dozens of
            # times a second: a twentieth of the ingest CPU at 200 legs (gc.callbacks,
            # bench/ingest.py). Nearly all of it dies by reference counting; cycles
            # still go once 20,000 objects more are alive, a few MiB at most.
            gc.set_threshold(GC_YOUNG_THRESHOLD, *gc.get_threshold()[1:])
            log.info("serving", extra={"url": f"http://{host}:{port}"})
            await stop.wait()
            log.info("shutting down")
        finally:
            await runner.cleanup()
            if drop is not None:
                await drop.close()


def add(sub: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    serve = sub.add_parser("serve", help="run the HTTP service")
    serve.add_argument("--host", help="listen address (TELEPHONY_HOST, default 127.0.0.1)")
    serve.add_argument("--port", type=int, help="listen port (TELEPHONY_PORT, default 8080)")
    serve.set_defaults(run=cmd_serve)
