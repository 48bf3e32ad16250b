"""The :class:`Notifier` interface and its senders: SMTP for e-mail, an HTTP gateway for texts.

A sender reports one of four outcomes. ``SENT``: the server took the message. ``RETRY``: it did
not, and may later (unreachable, 4xx). ``REFUSED``: it never will (5xx: no such mailbox, policy).
``IN_DOUBT``: the message may have been taken, the answer never came.

Exactly once over SMTP is not something a client can promise alone: a server may accept a message
(after the final ``.`` of DATA) and the connection may drop, or this process die, before the
``250`` is read and recorded. :class:`SmtpNotifier` therefore calls ``committing`` after the
server accepted the sender and the recipient and after the whole message went, just before the
final ``.`` line: the delivery records "sending" there, in a transaction of its own. Anything that
fails before it (server down, recipient refused, a crash) leaves the delivery pending and is
retried. A delivery found "sending" by a later attempt is in doubt, and is never sent again
(at most once for that one window, which is one line and its answer); it is kept as ``unknown``
for an operator. Every attempt carries the same ``Message-ID``, so a duplicate that an operator's
re-send makes is recognisable as such.

An SMS gateway that deduplicates by the request's ``Idempotency-Key`` (the message key, the same on
every attempt) makes a retried request harmless, so :class:`SmsWebhookNotifier` retries what is in
doubt and never calls ``committing``.
"""

from __future__ import annotations

import json
import re
import smtplib
import ssl
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.policy import SMTP
from email.utils import formatdate, parseaddr
from enum import StrEnum
from typing import Protocol

from pacs import __version__
from pacs.notify.messages import Notice
from pacs.settings import Settings


class Outcome(StrEnum):
    SENT = "sent"
    RETRY = "retry"
    REFUSED = "refused"
    IN_DOUBT = "in-doubt"


@dataclass(frozen=True, slots=True)
class SendResult:
    outcome: Outcome
    detail: str = ""  # the server's answer or why none came (one sentence)


class Notifier(Protocol):
    """Sends a :class:`Notice` to one recipient of its ``channel``.

    ``message_key`` identifies the message on every attempt (the ``Message-ID``, the gateway's
    idempotency key). ``committing`` is called at most once, just before the step after which the
    message may have reached the recipient; when it raises, nothing more is sent.
    """

    channel: str

    def send(self, recipient: str, notice: Notice, message_key: str, *,
             committing: Callable[[], None]) -> SendResult: ...  # fmt: skip


_LEADING_DOT = re.compile(rb"(?m)^\.")


def _answer(code: int, message: bytes | str) -> str:
    text = message.decode("utf-8", "replace") if isinstance(message, bytes) else message
    return f"{code} {' '.join(text.split())}"[:300]


def _refusal(step: str, code: int, message: bytes) -> SendResult:
    """A negative reply: 4xx may pass (retry), 5xx will not (RFC 5321 4.2.1)."""
    outcome = Outcome.RETRY if 400 <= code < 500 else Outcome.REFUSED
    return SendResult(outcome, f"the SMTP server refused {step}: {_answer(code, message)}")


class SmtpNotifier:
    """E-mail through an SMTP submission server (``CLOUDFILM_SMTP_*``)."""

    channel = "email"

    def __init__(self, *, host: str, port: int, sender: str, user: str | None = None, password: str | None = None,
                 starttls: bool = True, timeout_s: float = 30.0) -> None:  # fmt: skip
        self.host, self.port, self.sender = host, port, sender
        self.user, self.password = user, password
        self.starttls, self.timeout_s = starttls, timeout_s
        self.envelope_from = parseaddr(sender)[1]
        self.domain = self.envelope_from.rpartition("@")[2] or "cloudfilm.invalid"

    @classmethod
    def from_settings(cls, settings: Settings) -> SmtpNotifier | None:
        if not settings.smtp_host:
            return None
        return cls(host=settings.smtp_host, port=settings.smtp_port, sender=settings.smtp_from,
                   user=settings.smtp_user or None,
                   password=settings.smtp_password.get_secret_value() if settings.smtp_password else None,
                   starttls=settings.smtp_starttls, timeout_s=settings.smtp_timeout)  # fmt: skip

    def message(self, recipient: str, notice: Notice, message_key: str) -> bytes:
        """The message as it goes on the wire (CRLF lines, 7-bit: non-ASCII text is encoded)."""
        msg = EmailMessage()
        msg["From"] = self.sender
        msg["To"] = recipient
        msg["Subject"] = notice.subject
        msg["Date"] = formatdate(usegmt=True)
        msg["Message-ID"] = f"<{message_key}@{self.domain}>"
        msg["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies
        msg["X-Mailer"] = f"cloudfilm/{__version__}"
        msg.set_content(notice.text, cte="quoted-printable")
        return msg.as_bytes(policy=SMTP)

    def send(self, recipient: str, notice: Notice, message_key: str, *,
             committing: Callable[[], None]) -> SendResult:  # fmt: skip
        raw = self.message(recipient, notice, message_key)
        where = f"{self.host}:{self.port}"
        try:
            smtp = smtplib.SMTP(self.host, self.port, timeout=self.timeout_s)
        except (OSError, smtplib.SMTPException) as exc:
            return SendResult(Outcome.RETRY, f"the SMTP server {where} could not be reached: {exc}")
        finished = [False]  # a conversation cut off inside DATA is closed without QUIT: the server drops it
        try:
            return self._converse(smtp, recipient, raw, committing, finished)
        except smtplib.SMTPNotSupportedError:
            return SendResult(Outcome.RETRY, f"the SMTP server {where} offers no STARTTLS "
                                             "(set CLOUDFILM_SMTP_STARTTLS=false only for a server on this machine)")
        except smtplib.SMTPAuthenticationError as exc:
            return SendResult(Outcome.RETRY, f"the SMTP server {where} refused the login: "
                                             f"{_answer(exc.smtp_code, exc.smtp_error)}")
        except (OSError, smtplib.SMTPException) as exc:
            return SendResult(Outcome.RETRY, f"the SMTP conversation with {where} failed: {exc}")
        finally:
            if not finished[0]:
                smtp.close()
            else:
                try:
                    smtp.quit()
                except (OSError, smtplib.SMTPException):
                    smtp.close()

    def _converse(self, smtp: smtplib.SMTP, recipient: str, raw: bytes, committing: Callable[[], None],
                  finished: list[bool]) -> SendResult:  # fmt: skip
        smtp.ehlo()
        if self.starttls:
            smtp.starttls(context=ssl.create_default_context())
            smtp.ehlo()
        if self.user:
            smtp.login(self.user, self.password or "")
        finished[0] = True
        code, answer = smtp.mail(self.envelope_from)
        if code != 250:
            return _refusal("the sender", code, answer)
        code, answer = smtp.rcpt(recipient)
        if code not in (250, 251):
            return _refusal("the recipient", code, answer)
        code, answer = smtp.docmd("DATA")
        if code != 354:
            return _refusal("DATA", code, answer)
        finished[0] = False
        body = _LEADING_DOT.sub(b"..", raw)  # RFC 5321 4.5.2 transparency
        smtp.send(body if body.endswith(b"\r\n") else body + b"\r\n")
        committing()  # a failure here closes the connection before the final line: the server drops it
        try:
            smtp.send(b".\r\n")
            code, answer = smtp.getreply()
            finished[0] = True
        except (OSError, smtplib.SMTPException) as exc:
            return SendResult(Outcome.IN_DOUBT, f"no answer after the message went to {self.host}:{self.port}: {exc}")
        if code == 250:
            return SendResult(Outcome.SENT, _answer(code, answer))
        return _refusal("the message", code, answer)


class SmsWebhookNotifier:
    """Texts through an HTTP SMS gateway: ``POST {"id", "to", "text"}`` with ``Idempotency-Key``."""

    channel = "sms"

    def __init__(self, *, url: str, token: str | None = None, timeout_s: float = 30.0) -> None:
        self.url, self.token, self.timeout_s = url, token, timeout_s

    @classmethod
    def from_settings(cls, settings: Settings) -> SmsWebhookNotifier | None:
        if not settings.sms_webhook_url:
            return None
        token = settings.sms_webhook_token.get_secret_value() if settings.sms_webhook_token else None
        return cls(url=settings.sms_webhook_url, token=token, timeout_s=settings.smtp_timeout)

    def send(self, recipient: str, notice: Notice, message_key: str, *,
             committing: Callable[[], None]) -> SendResult:  # fmt: skip
        body = json.dumps({"id": message_key, "to": recipient, "text": notice.short}).encode()
        headers = {"Content-Type": "application/json", "Idempotency-Key": message_key,
                   "User-Agent": f"cloudfilm/{__version__}"}  # fmt: skip
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        try:
            with urllib.request.urlopen(request, timeout=self.timeout_s) as response:
                code = int(response.status)
        except urllib.error.HTTPError as exc:
            detail = f"the SMS gateway answered {exc.code}"
            retry = exc.code >= 500 or exc.code in (408, 429)
            return SendResult(Outcome.RETRY if retry else Outcome.REFUSED, detail)
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return SendResult(Outcome.RETRY, f"the SMS gateway could not be reached: {getattr(exc, 'reason', exc)}")
        if 200 <= code < 300:
            return SendResult(Outcome.SENT, f"the SMS gateway answered {code}")
        return SendResult(Outcome.RETRY, f"the SMS gateway answered {code}")


def notifiers(settings: Settings) -> dict[str, Notifier]:
    """The configured senders by channel."""
    found: list[Notifier | None] = [SmtpNotifier.from_settings(settings), SmsWebhookNotifier.from_settings(settings)]
    return {n.channel: n for n in found if n is not None}
