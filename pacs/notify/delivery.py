"""One notify job: build a delivery's message and send it at most once (the guarantee and its
one window of doubt are described in :mod:`pacs.notify.senders`).

The message is built when it is sent, never stored: a share link's token is derived again from
the archive's key (the database keeps only its salt and digest), and a link revoked or expired
before its message went is not sent at all.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, select, update

from pacs.accounts.hashing import derive_token
from pacs.accounts.models import Share
from pacs.errors import Conflict
from pacs.index.db import utcnow
from pacs.jobs import aware, write_transaction
from pacs.notify.messages import Notice, NoticeKind, report_notice, share_notice
from pacs.notify.models import NotificationDelivery
from pacs.notify.outbox import DeliveryStatus, set_in_doubt
from pacs.notify.senders import Notifier, Outcome
from pacs.settings import Settings

log = logging.getLogger(__name__)

#: Where a report notice sends the patient: the account's home page lists their studies and reports
#: (sign-in first), so the message needs no identifier of the study.
REPORT_PATH = "/viewer/home"


@dataclass(frozen=True, slots=True)
class Attempt:
    """What one attempt left: the delivery's status, whether another attempt may help, and why."""

    status: DeliveryStatus
    retry: bool = False
    error: str = ""


def _notice(engine: Engine, settings: Settings, key: bytes, row: Any) -> Notice | str:
    """The message of ``row``, or why there is none to send any more."""
    base = settings.base_url
    if row.kind == NoticeKind.REPORT.value:
        return report_notice(link=base + REPORT_PATH, first=row.first_name, institution=settings.institution_name)
    with engine.connect() as conn:
        share = conn.execute(select(Share).where(Share.id == row.share_id)).first()
    if share is None:
        return "the share link was deleted before its message went"
    if share.revoked_at is not None:
        return "the share link was revoked before its message went"
    expires = aware(share.expires_at)
    if expires <= utcnow():
        return "the share link expired before its message went"
    return share_notice(link=f"{base}/s/{derive_token(key, share.token_salt)}", first=row.first_name,
                        institution=settings.institution_name, expires_at=expires,
                        has_pin=share.pin_hash is not None)  # fmt: skip


def deliver(engine: Engine, settings: Settings, key: bytes, delivery_id: int,
            senders: Mapping[str, Notifier]) -> Attempt:  # fmt: skip
    """Send delivery ``delivery_id`` once; a delivery already sent, dead or in doubt is left as it is."""
    with engine.connect() as conn:
        row = conn.execute(select(NotificationDelivery).where(NotificationDelivery.id == delivery_id)).first()
    if row is None:
        return Attempt(DeliveryStatus.DEAD, error="the delivery no longer exists")
    if row.status == DeliveryStatus.SENDING.value:  # an earlier attempt died where the message may have gone
        with write_transaction(engine) as conn:
            set_in_doubt(conn, delivery_id, "an earlier attempt stopped after the message went, before the "
                                            "server's answer was recorded")
        return Attempt(DeliveryStatus.UNKNOWN, error="in doubt: not sent again")
    if row.status != DeliveryStatus.PENDING.value:
        return Attempt(DeliveryStatus(row.status))
    attempt = row.attempts + 1
    now = utcnow()
    notice = _notice(engine, settings, key, row)
    if isinstance(notice, str):
        _record(engine, delivery_id, DeliveryStatus.DEAD, attempt, notice)
        return Attempt(DeliveryStatus.DEAD, error=notice)
    sender = senders.get(row.channel)
    if sender is None:
        error = ("e-mail is not configured (CLOUDFILM_SMTP_HOST)" if row.channel == "email"
                 else f"no sender is configured for {row.channel} (CLOUDFILM_SMS_WEBHOOK_URL)")
        _record(engine, delivery_id, DeliveryStatus.PENDING, attempt, error)
        return Attempt(DeliveryStatus.PENDING, retry=True, error=error)

    def committing() -> None:
        with write_transaction(engine) as conn:
            taken = conn.execute(update(NotificationDelivery).where(
                NotificationDelivery.id == delivery_id, NotificationDelivery.status == DeliveryStatus.PENDING.value,
            ).values(status=DeliveryStatus.SENDING.value, attempts=attempt, last_attempt_at=now)).rowcount  # fmt: skip
        if not taken:
            raise Conflict(f"notification delivery {delivery_id} is being sent by another attempt")

    result = sender.send(row.recipient, notice, row.message_key, committing=committing)
    if result.outcome is Outcome.SENT:
        _record(engine, delivery_id, DeliveryStatus.SENT, attempt, "")
        log.info("notification delivery %d (%s) sent by %s", delivery_id, row.notification, row.channel)
        return Attempt(DeliveryStatus.SENT)
    if result.outcome is Outcome.IN_DOUBT:
        with write_transaction(engine) as conn:
            set_in_doubt(conn, delivery_id, result.detail)
        return Attempt(DeliveryStatus.UNKNOWN, error=result.detail)
    status = DeliveryStatus.PENDING if result.outcome is Outcome.RETRY else DeliveryStatus.DEAD
    _record(engine, delivery_id, status, attempt, result.detail)
    log.warning("notification delivery %d not sent (attempt %d): %s", delivery_id, attempt, result.detail)
    return Attempt(status, retry=status is DeliveryStatus.PENDING, error=result.detail)


def _record(engine: Engine, delivery_id: int, status: DeliveryStatus, attempt: int, error: str) -> None:
    now = utcnow()
    values: dict[str, object] = {"status": status.value, "attempts": attempt, "last_attempt_at": now,
                                 "last_error": error[:2000]}
    if status is DeliveryStatus.SENT:
        values["sent_at"] = now
    with write_transaction(engine) as conn:
        conn.execute(update(NotificationDelivery).where(
            NotificationDelivery.id == delivery_id,
            NotificationDelivery.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]),
        ).values(**values))  # fmt: skip
