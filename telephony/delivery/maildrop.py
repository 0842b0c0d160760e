"""The local mail drop: an SMTP server on 127.0.0.1 that keeps what it receives.

`telephony serve` starts one when no TELEPHONY_SMTP_URL is set (the embedded
default, as the private PostgreSQL is), writing each message to
`<data_dir>/mail/` as an `.eml` file a newcomer can open in any mail reader
or a text editor. The tests run the same server and read its messages from
memory. It is aiosmtpd, a real SMTP implementation, so the client side is
exercised exactly as against a production relay.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import ssl
from collections.abc import Callable
from datetime import UTC, datetime
from email import policy
from email.message import EmailMessage
from email.parser import BytesParser
from pathlib import Path
from typing import Any

from aiosmtpd.smtp import SMTP, Envelope, Session

_ACCEPTED = "250 Message accepted for delivery"


class MailDrop:
    """`tls` (tests of the client's TLS): offered by STARTTLS, or from the first byte with
    `implicit=True` (smtps)."""

    def __init__(
        self,
        folder: Path | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        tls: ssl.SSLContext | None = None,
        implicit: bool = False,
    ):
        self.folder = folder
        self.host = host
        self.port = port
        self.tls = tls
        self.implicit = implicit
        self.messages: list[EmailMessage] = []
        self.over_tls: list[bool] = []  # per message: did it arrive encrypted
        self._arrived = asyncio.Condition()
        self._server: asyncio.Server | None = None
        self._written = 0

    @property
    def url(self) -> str:
        return f"{'smtps' if self.implicit else 'smtp'}://{self.host}:{self.port}"

    async def start(self) -> MailDrop:
        if self.folder is not None:
            await asyncio.to_thread(self.folder.mkdir, parents=True, exist_ok=True)
        loop = asyncio.get_running_loop()
        starttls = None if self.implicit else self.tls
        self._server = await loop.create_server(
            lambda: SMTP(self, hostname="maildrop.localhost", loop=loop, tls_context=starttls),
            self.host,
            self.port,
            ssl=self.tls if self.implicit else None,
        )
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        raw = envelope.original_content or envelope.content
        assert isinstance(raw, bytes)
        message = BytesParser(policy=policy.default).parsebytes(raw)
        assert isinstance(message, EmailMessage)
        if self.folder is not None:
            # Numbered before the first await: messages that arrive together (several
            # nodes' workers at once) must not share a file name.
            number, self._written = self._written, self._written + 1
            await asyncio.to_thread(self._write, raw, number)
        async with self._arrived:
            self.over_tls.append(self.implicit or session.ssl is not None)
            self.messages.append(message)
            self._arrived.notify_all()
        return _ACCEPTED

    def _write(self, raw: bytes, number: int) -> None:
        assert self.folder is not None
        stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
        path = self.folder / f"{stamp}-{os.getpid()}-{number:05d}.eml"
        # Messages carry one-time links: readable by this user only.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "wb") as out:
            out.write(raw)

    async def wait_for(
        self, matches: Callable[[EmailMessage], bool], timeout_s: float = 10.0
    ) -> EmailMessage:
        """The first message (already here or still to come) that `matches`."""

        def found() -> EmailMessage | None:
            return next((m for m in self.messages if matches(m)), None)

        async with self._arrived:
            await asyncio.wait_for(self._arrived.wait_for(lambda: found() is not None), timeout_s)
        message = found()
        assert message is not None
        return message

    def to(self, address: str) -> list[EmailMessage]:
        return [m for m in self.messages if address.lower() in str(m["To"]).lower()]


def text_of(message: EmailMessage, subtype: str = "plain") -> str:
    part: Any = message.get_body(preferencelist=(subtype,))
    assert part is not None, f"no text/{subtype} part"
    return str(part.get_content())
