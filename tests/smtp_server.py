"""A real SMTP server for the notification tests (aiosmtpd on a free loopback port): it keeps each
message it accepted, parsed, and can be told to refuse, or to hold a message after its final
``.`` line before answering (the window in which a sender cannot know whether it was taken)."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from email import message_from_bytes, policy
from email.message import EmailMessage
from typing import Any

from aiosmtpd.controller import Controller

from tests.net import free_port


@dataclass(frozen=True)
class Mail:
    mail_from: str
    rcpt_tos: list[str]
    message: EmailMessage

    @property
    def text(self) -> str:
        body = self.message.get_body(preferencelist=("plain",))
        assert body is not None
        return str(body.get_content())


@dataclass
class Mailbox:
    port: int = 0
    received: list[Mail] = field(default_factory=list)
    answer: str = "250 OK"  # what the final "." gets ("451 …" a temporary, "550 …" a permanent refusal)
    hold: threading.Event | None = None  # set: each message waits for it to be set before the answer
    arrived: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def mails(self) -> list[Mail]:
        with self.lock:
            return list(self.received)

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        if self.answer.startswith("250"):
            mail = Mail(envelope.mail_from, list(envelope.rcpt_tos),
                        message_from_bytes(envelope.original_content, policy=policy.default))  # type: ignore[arg-type]
            with self.lock:
                self.received.append(mail)
            self.arrived.set()
        while self.hold is not None and not self.hold.is_set():
            await asyncio.sleep(0.05)
        return self.answer


@contextmanager
def mailbox(port: int | None = None) -> Iterator[Mailbox]:
    """The server, listening on ``port`` (a free one when not given) until the block ends."""
    box = Mailbox(port=port or free_port())
    controller = Controller(box, hostname="127.0.0.1", port=box.port)
    controller.start()
    try:
        yield box
    finally:
        if box.hold is not None:
            box.hold.set()
        controller.stop()
