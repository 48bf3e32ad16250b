"""Notifications into deliveries, deliveries into jobs (the worker's housekeeping runs both).

A share link made with an address writes its delivery in the transaction that makes the link
(:func:`share_delivery`), so a link exists exactly when its message is owed. A signed report is a
``report.signed`` change feed event (:mod:`pacs.events`): :func:`collect_reports` reads the feed
after its cursor and writes a delivery for each patient account (with an address) that owns the
event's study, moving the cursor by an update conditional on the one it read, in the same
transaction: two workers collecting at once write each delivery once, and a restart goes on from
the cursor. The delivery log's unique key (notification, recipient) makes a second write of the
same message a no-op whatever the path.

Then every pending delivery without an active job gets one (``kind = "notify"``), and a delivery
left "sending" by a job that is no longer active (its worker died in the one step where the
message may have gone) is set aside as ``unknown``, never sent again (:mod:`pacs.notify.senders`).
"""

from __future__ import annotations

import logging
import uuid
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum

from sqlalchemy import Engine, and_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.accounts.models import PatientLink, User
from pacs.errors import Conflict, NotFound
from pacs.events import Action, latest, read_feed
from pacs.index.db import utcnow
from pacs.index.models import PartitionRow, Study
from pacs.jobs import JobSpec, active_job, aware, dedupe_key, enqueue, enqueue_lane_head, write_transaction
from pacs.notify.messages import NoticeKind, first_name, first_word
from pacs.notify.models import NotificationCursor, NotificationDelivery

log = logging.getLogger(__name__)

JOB_KIND = "notify"
REPORT_CURSOR = "report.signed"
_BATCH = 500


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not sent yet; its job retries with backoff
    SENDING = "sending"  # the step after which it may have gone is under way (or its worker died in it)
    SENT = "sent"  # the server took it
    UNKNOWN = "unknown"  # in doubt (no answer after the message went): never sent again automatically
    DEAD = "dead"  # refused, attempts ran out, or its link was revoked before it went


@dataclass(frozen=True, slots=True)
class DeliveryView:
    """A delivery as the admin's log shows it (the message itself is built when sent, never kept)."""

    id: int
    notification: str
    kind: str
    channel: str
    recipient: str
    study_uid: str
    status: DeliveryStatus
    attempts: int
    last_error: str
    message_id: str
    created_by: str
    created_at: datetime
    last_attempt_at: datetime | None
    sent_at: datetime | None


def _insert(conn: Connection) -> postgresql.Insert | sqlite.Insert:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(NotificationDelivery)


def _row(notification: str, kind: NoticeKind, channel: str, recipient: str, first: str, study_uid: str,
         share_id: int | None, created_by: str, partition: int) -> dict[str, object]:  # fmt: skip
    return {"notification": notification, "kind": kind.value, "channel": channel, "recipient": recipient,
            "first_name": first[:64], "study_uid": study_uid, "share_id": share_id, "partition_fk": partition,
            "message_key": uuid.uuid4().hex, "status": DeliveryStatus.PENDING.value, "attempts": 0,
            "last_error": "", "created_by": created_by[:64], "created_at": utcnow()}  # fmt: skip


def share_delivery(conn: Connection, *, share_id: int, study_uid: str, channel: str, recipient: str,
                   first: str, created_by: str, partition: int = DEFAULT_PARTITION) -> None:  # fmt: skip
    """Owe ``recipient`` the message carrying share link ``share_id`` (of ``partition``'s study), in the
    caller's transaction."""
    conn.execute(_insert(conn).on_conflict_do_nothing(index_elements=["notification", "recipient"]),
                 [_row(f"share:{share_id}", NoticeKind.SHARE, channel, recipient, first, study_uid, share_id,
                       created_by, partition)])  # fmt: skip


def collect_reports(engine: Engine, *, channels: frozenset[str]) -> int:
    """New ``report.signed`` events of every partition into deliveries to the study's patient
    accounts (of that partition); how many."""
    with engine.connect() as conn:
        partitions = list(conn.execute(select(PartitionRow.id).order_by(PartitionRow.id)).scalars())
    return sum(_collect_partition_reports(engine, p, channels) for p in partitions or [DEFAULT_PARTITION])


def _report_cursor(partition: int) -> str:
    # The default partition keeps the cursor name it had before partitions.
    return REPORT_CURSOR if partition == DEFAULT_PARTITION else f"{REPORT_CURSOR}:{partition}"


def _collect_partition_reports(engine: Engine, partition: int, channels: frozenset[str]) -> int:
    """One partition's feed (each has its own cursor, as each reads only its own events)."""
    name, scope = _report_cursor(partition), replace(AccessScope.everything(), partition=partition)
    written = 0
    while True:
        with engine.connect() as conn:
            cursor = conn.execute(select(NotificationCursor.last_seq)
                                  .where(NotificationCursor.name == name)).scalar_one_or_none()  # fmt: skip
        since = int(cursor or 0)
        newest = latest(engine, scope)
        if newest is None or newest.sequence <= since:
            return written
        # With no channel a report notice could go by, the cursor only moves: configuring one later
        # does not mail patients about reports signed before.
        entries = (read_feed(engine, since=since, limit=_BATCH, scope=scope, actions=[Action.REPORT_SIGNED])
                   if channels else [])  # fmt: skip
        # Events past ``newest`` wait for the next round (the cursor moves to ``upto`` only).
        upto = min(entries[-1].sequence, newest.sequence) if len(entries) == _BATCH else newest.sequence
        events = [e for e in entries if e.sequence <= upto]
        rows: list[dict[str, object]] = []
        with engine.connect() as conn:
            for event in events:
                rows += _report_rows(conn, event.sequence, event.study_uid, channels, partition)
        with write_transaction(engine) as conn:
            if cursor is None:
                moved = conn.execute(_cursor_insert(conn).values(name=name, last_seq=upto)
                                     .on_conflict_do_nothing(index_elements=["name"])).rowcount  # fmt: skip
            else:
                moved = conn.execute(update(NotificationCursor).where(
                    NotificationCursor.name == name, NotificationCursor.last_seq == since,
                ).values(last_seq=upto)).rowcount  # fmt: skip
            if not moved:
                return written  # another worker collected these
            if rows:
                conn.execute(_insert(conn).on_conflict_do_nothing(index_elements=["notification", "recipient"]), rows)
        written += len(rows)
        if upto >= newest.sequence:
            return written


def _cursor_insert(conn: Connection) -> postgresql.Insert | sqlite.Insert:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(NotificationCursor)


def _report_rows(conn: Connection, seq: int, study_uid: str, channels: frozenset[str],
                 partition: int) -> list[dict[str, object]]:  # fmt: skip
    """The deliveries a signed report of ``partition``'s ``study_uid`` owes: each enabled patient
    account of that partition that owns the study's patient and has an address (e-mail only: accounts
    hold no phone number)."""
    if "email" not in channels:
        return []
    study = conn.execute(select(Study.patient_id, Study.issuer, Study.patient_name)
                         .where(Study.study_uid == study_uid, Study.partition_fk == partition)).first()  # fmt: skip
    if study is None:
        return []  # deleted since
    accounts = conn.execute(
        select(User.email, User.full_name)
        .join(PatientLink, PatientLink.user_fk == User.id)
        .where(and_(PatientLink.patient_id == study.patient_id, PatientLink.issuer == study.issuer,
                    User.role == "patient", User.disabled.is_(False), User.email.is_not(None),
                    User.partition_fk == partition))
    ).all()  # fmt: skip
    return [_row(f"report:{seq}", NoticeKind.REPORT, "email", str(a.email),
                 first_word(a.full_name) or first_name(study.patient_name), study_uid, None, "", partition)
            for a in accounts if a.email]  # fmt: skip


def delivery_job(delivery_id: int, study_uid: str, *, max_attempts: int, timeout_s: float,
                 after_job: int = 0) -> JobSpec:  # fmt: skip
    return JobSpec(kind=JOB_KIND, dedupe_key=dedupe_key(JOB_KIND, delivery_id, after_job), target=str(delivery_id),
                   study_uid=study_uid, payload={"delivery": delivery_id}, max_attempts=max_attempts,
                   timeout_s=timeout_s)  # fmt: skip


def start_jobs(engine: Engine, *, max_attempts: int, timeout_s: float) -> bool:
    """A job for every pending delivery that has none; in-doubt deliveries set aside. Whether a job was queued."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(NotificationDelivery.id, NotificationDelivery.study_uid, NotificationDelivery.status)
            .where(NotificationDelivery.status.in_([DeliveryStatus.PENDING.value, DeliveryStatus.SENDING.value]))
            .order_by(NotificationDelivery.id)
        ).all()  # fmt: skip
    queued = False
    for delivery_id, study_uid, status in rows:
        with write_transaction(engine) as conn:
            if active_job(conn, kind=JOB_KIND, target=str(delivery_id), target_version="", study_uid=study_uid):
                continue
            if status == DeliveryStatus.SENDING.value:
                set_in_doubt(conn, int(delivery_id), "its worker stopped after the message went, before the "
                                                     "server's answer was recorded")
                continue

            def job(after_job: int = 0, delivery: int = int(delivery_id), study: str = study_uid) -> JobSpec:
                return delivery_job(delivery, study, max_attempts=max_attempts, timeout_s=timeout_s,
                                    after_job=after_job)

            def dead(error: str, conn: Connection = conn, delivery: int = int(delivery_id)) -> None:
                mark_dead(conn, delivery, error)

            queued = enqueue_lane_head(conn, job(), again=job, dead=dead) or queued
    return queued


def mark_dead(conn: Connection, delivery_id: int, error: str) -> None:
    """Set a pending delivery aside for good (refused, attempts ran out, nothing left to send)."""
    conn.execute(update(NotificationDelivery).where(
        NotificationDelivery.id == delivery_id, NotificationDelivery.status == DeliveryStatus.PENDING.value,
    ).values(status=DeliveryStatus.DEAD.value, last_error=error[:2000]))  # fmt: skip


def set_in_doubt(conn: Connection, delivery_id: int, error: str) -> None:
    conn.execute(update(NotificationDelivery).where(
        NotificationDelivery.id == delivery_id, NotificationDelivery.status == DeliveryStatus.SENDING.value,
    ).values(status=DeliveryStatus.UNKNOWN.value, last_error=error[:2000]))  # fmt: skip
    log.warning("notification delivery %d is in doubt (not sent again): %s", delivery_id, error)


def resend(engine: Engine, delivery_id: int, *, max_attempts: int, timeout_s: float,
           partition: int = DEFAULT_PARTITION) -> None:  # fmt: skip
    """An operator's re-send of a delivery that is dead or in doubt: pending again, with a job of its
    own and fresh attempts, the same ``Message-ID`` (a receiver sees a duplicate for what it is)."""
    with write_transaction(engine) as conn:
        row = conn.execute(select(NotificationDelivery.status, NotificationDelivery.study_uid)
                           .where(NotificationDelivery.id == delivery_id,
                                  NotificationDelivery.partition_fk == partition)).first()  # fmt: skip
        if row is None:
            raise NotFound("no such notification delivery")
        if row.status not in (DeliveryStatus.DEAD.value, DeliveryStatus.UNKNOWN.value):
            raise Conflict(f"the message is {row.status}: only dead or unknown ones are sent again")
        conn.execute(update(NotificationDelivery).where(NotificationDelivery.id == delivery_id)
                     .values(status=DeliveryStatus.PENDING.value))  # fmt: skip
        spec = delivery_job(delivery_id, row.study_uid, max_attempts=max_attempts, timeout_s=timeout_s)
        enqueue(conn, replace(spec, dedupe_key=dedupe_key(JOB_KIND, "resend", uuid.uuid4().hex)))


def deliveries(engine: Engine, *, status: DeliveryStatus | None = None, study_uid: str | None = None, limit: int = 100,
               offset: int = 0, partition: int = DEFAULT_PARTITION) -> list[DeliveryView]:  # fmt: skip
    """``partition``'s delivery log, newest first."""
    stmt = select(NotificationDelivery).where(NotificationDelivery.partition_fk == partition)
    if status is not None:
        stmt = stmt.where(NotificationDelivery.status == status.value)
    if study_uid:
        stmt = stmt.where(NotificationDelivery.study_uid == study_uid)
    stmt = stmt.order_by(NotificationDelivery.id.desc()).limit(max(1, min(limit, 1000))).offset(max(0, offset))
    with engine.connect() as conn:
        rows = list(conn.execute(stmt))
    return [DeliveryView(
        id=r.id, notification=r.notification, kind=r.kind, channel=r.channel, recipient=r.recipient,
        study_uid=r.study_uid, status=DeliveryStatus(r.status), attempts=r.attempts, last_error=r.last_error,
        message_id=r.message_key, created_by=r.created_by, created_at=aware(r.created_at),
        last_attempt_at=None if r.last_attempt_at is None else aware(r.last_attempt_at),
        sent_at=None if r.sent_at is None else aware(r.sent_at),
    ) for r in rows]  # fmt: skip

