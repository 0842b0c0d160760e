"""The HTTP server's own edge, below the application: what aiohttp answers before any handler.

Two things aiohttp's request handler does not do, added here:

- Its own errors (a request line it cannot parse, a header too long) are
  text/plain; here they are problem+json like every other error (API.md
  "Errors"), with no version in `Server`.
- It waits for a request's head for as long as a client trickles it (the
  keep-alive timer only closes *idle* connections): one byte every few
  seconds keeps a connection, and a few hundred of those keep them all
  (slowloris). Here a head must arrive whole within HEADER_TIMEOUT_S of its
  first byte, or the connection is closed.

`ServiceRunner` is aiohttp's AppRunner with this handler; the CLI serves
with it and the tests' servers use it too.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest
from aiohttp.web_server import Server

from telephony.web.problems import PROBLEM_TYPE, SERVER_NAME, http_problem_body

HEADER_TIMEOUT_S = 10.0


class ProtectedRequestHandler(RequestHandler):
    """aiohttp's request handler with problem+json errors and a header-read timeout."""

    __slots__ = ("_head_timer", "header_timeout_s")

    def __init__(self, manager: Server, *, header_timeout_s: float = HEADER_TIMEOUT_S, **kw: Any):
        super().__init__(manager, **kw)
        self.header_timeout_s = header_timeout_s
        self._head_timer: asyncio.TimerHandle | None = None

    def data_received(self, data: bytes) -> None:
        if self._upgraded:
            # A WebSocket's frames, fifty a second a leg: no head is awaited any more, and
            # the checks below were a twentieth of the ingest CPU (py-spy, bench/ingest.py).
            RequestHandler.data_received(self, data)
            return
        # A head is awaited when the handler waits for a message and none is queued.
        awaiting_head = not self._upgraded and not self._messages and not self._request_in_progress
        super().data_received(data)
        if self._messages or self._upgraded or self._request_in_progress:
            self._disarm()
        elif awaiting_head and self._head_timer is None and data:
            self._head_timer = self._loop.call_later(self.header_timeout_s, self._head_too_slow)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_too_slow(self) -> None:
        self._head_timer = None
        if self.transport is not None and not self._messages and not self._request_in_progress:
            self.transport.close()

    def connection_lost(self, exc: BaseException | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def handle_error(
        self,
        request: BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        if status >= 500:
            self.log_exception("Error handling request", exc_info=exc)
        else:
            # A client's malformed request is the client's business: a line, no traceback.
            self.logger.info(
                "malformed request refused", extra={"status": status, "reason": str(message)[:200]}
            )
        if request.writer.output_size > 0:
            raise ConnectionError("the answer has started; no problem document can follow")
        body = json.dumps(http_problem_body(status)).encode()
        response = web.Response(
            status=status,
            body=body,
            content_type=PROBLEM_TYPE,
            headers={"Server": SERVER_NAME, "X-Content-Type-Options": "nosniff"},
        )
        response.force_close()
        return response


class ProtectedServer(Server):
    """A Server whose connections get ProtectedRequestHandler."""

    def __call__(self) -> RequestHandler:
        return ProtectedRequestHandler(self, loop=self._loop, **self._kwargs)


class ServiceRunner(web.AppRunner):
    """aiohttp's AppRunner, serving with ProtectedServer."""

    async def serve_tcp(self, host: str, port: int) -> None:
        """Listen on `host:port` (after `setup()`); the CLI needs no aiohttp of its own."""
        await web.TCPSite(self, host, port).start()

    async def _make_server(self) -> Server:
        server = await super()._make_server()
        server.__class__ = ProtectedServer  # the same object, one method different
        return server
