"""The audit trail: an append-only record of who did what to which study, when, from where.

Entry points call :func:`record` for every login (success and failure), view, search, download,
share create / revoke / open / PIN failure, delete, STOW-RS and C-STORE. Recording never raises:
a database failure is logged and reported as ``False``, so the clinical operation it describes is
not lost because the trail could not be written.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, Select, func, insert, select
from sqlalchemy.exc import SQLAlchemyError

from pacs.access import DEFAULT_PARTITION
from pacs.accounts.models import AuditRow
from pacs.accounts.principal import Principal
from pacs.accounts.tx import aware, reading
from pacs.index.db import utcnow
from pacs.retention.last_access import STAMPS, stamp

log = logging.getLogger(__name__)


class Action(StrEnum):
    LOGIN = "login"
    LOGOUT = "logout"
    VIEW = "view"
    SEARCH = "search"
    DOWNLOAD = "download"
    SHARE_CREATE = "share-create"
    SHARE_REVOKE = "share-revoke"
    SHARE_OPEN = "share-open"
    SHARE_PIN_FAILURE = "share-pin-failure"
    SHARE_CLAIM = "share-claim"
    SHARE_TOKEN = "share-token"  # a request with a clinician share's DICOMweb token (every one, refusals too)
    DELETE = "delete"
    STOW = "stow"
    C_STORE = "c-store"
    C_FIND = "c-find"
    C_MOVE = "c-move"
    C_GET = "c-get"
    USER_CHANGE = "user-change"
    API_KEY = "api-key"
    CHANGEFEED = "changefeed"  # a read of the change feed
    WEBHOOK = "webhook"  # a webhook registered, read or deleted
    AI_REVIEW = "ai-review"
    ROUTING = "routing"  # routing destinations read, a forward re-sent
    WORKLIST = "worklist"  # a modality worklist entry scheduled, listed or cancelled
    REPORT_DRAFT = "report-draft"  # a report draft saved (or an amendment started)
    REPORT_SIGN = "report-sign"  # a report's first version signed
    REPORT_AMEND = "report-amend"  # a version signed that supersedes an earlier one
    NOTIFICATIONS = "notifications"  # the patient message log read, a message re-sent
    RETENTION = "retention"  # a retention rule moved or marked a study, a mark dropped (deletions are DELETE)
    LEGAL_HOLD = "legal-hold"  # a study's legal hold set or cleared
    CORRECTION = "correction"  # patient or study attributes corrected (detail: before and after), or reverted
    REJECTION = "rejection"  # instances rejected by an IOCM rejection note, listed, or deleted after the grace
    PACKAGE_DOWNLOAD = "package-download"  # an edge worker fetched an algorithm package's file (or was refused)


class Outcome(StrEnum):
    SUCCESS = "success"
    FAILURE = "failure"  # the caller's mistake (wrong password, wrong PIN, bad data)
    DENIED = "denied"  # refused by access rules
    ERROR = "error"  # the archive failed


#: Actions that count as "someone opened this study" for the patient's access log.
ACCESS_ACTIONS: frozenset[str] = frozenset(
    {Action.VIEW, Action.DOWNLOAD, Action.SHARE_OPEN, Action.C_MOVE, Action.C_GET}
)


@dataclass(frozen=True, slots=True)
class AuditEvent:
    """One event to record. ``source`` is the client IP address or the calling AE title."""

    action: Action | str
    outcome: Outcome | str = Outcome.SUCCESS
    username: str = ""
    role: str = ""
    user_id: int | None = None
    share_id: int | None = None
    study_uid: str = ""
    patient_id: str = ""
    source: str = ""
    detail: str = ""
    at: datetime | None = None
    id: int | None = None  # set on events read back from the trail
    partition: int = DEFAULT_PARTITION  # where it happened: that partition's admins read it

    @classmethod
    def by(cls, principal: Principal | None, action: Action | str, **fields: object) -> AuditEvent:
        """An event whose "who" is ``principal`` (user, share visitor, or nobody)."""
        event = cls(action=action, **fields)  # type: ignore[arg-type]
        if principal is None:
            return event
        who = principal.username if principal.is_user else principal.label if principal.edge else event.username
        return replace(
            event,
            partition=event.partition if "partition" in fields else principal.home_partition,
            username=who,
            role=principal.role or "",
            user_id=principal.user_id,
            share_id=(principal.share.share_id if principal.share
                      else principal.dicomweb.share_id if principal.dicomweb else None),
        )


def record(engine: Engine, event: AuditEvent) -> bool:
    """Append ``event`` to the trail in its own transaction; ``False`` (and a log line) on failure."""
    at = event.at or utcnow()
    values = {
        "at": at,
        "action": str(event.action)[:32],
        "outcome": str(event.outcome)[:16],
        "user_id": event.user_id,
        "username": event.username[:64],
        "role": event.role[:16],
        "share_id": event.share_id,
        "study_uid": event.study_uid[:64],
        "patient_id": event.patient_id[:64],
        "source": event.source[:128],
        "detail": event.detail[:2000],
        "partition_fk": event.partition,
    }
    # An access also stamps the study's last access (retention's ``idle_days``), about hourly.
    opened = (event.study_uid if event.action in ACCESS_ACTIONS and event.outcome == Outcome.SUCCESS
              and event.study_uid and STAMPS.due(event.study_uid, at, event.partition) else "")  # fmt: skip
    try:
        with engine.connect() as conn:
            conn.info["write"] = True
            try:
                with conn.begin():
                    conn.execute(insert(AuditRow).values(**values))
                    if opened:
                        stamp(conn, opened, at, event.partition)
            finally:
                conn.info.pop("write", None)
    except SQLAlchemyError:
        if opened:
            STAMPS.forget(opened, event.partition)
        log.exception("could not write the audit event %s (%s)", values["action"], values["outcome"])
        return False
    return True


@dataclass(frozen=True, slots=True)
class AuditQuery:
    """Filters for reading the trail; ``study_uids`` restricts to those studies (a patient's own)."""

    study_uid: str | None = None
    username: str | None = None
    action: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    study_uids: Collection[str] | None = None
    actions: Collection[str] | None = None
    limit: int = 200
    offset: int = 0
    newest_first: bool = True
    exclude_user_id: int | None = None
    partition: int | None = None  # only this partition's events (None: every partition's)


def _where(stmt: Select[Any], q: AuditQuery) -> Select[Any]:
    if q.partition is not None:
        stmt = stmt.where(AuditRow.partition_fk == q.partition)
    if q.study_uid:
        stmt = stmt.where(AuditRow.study_uid == q.study_uid)
    if q.username:
        stmt = stmt.where(AuditRow.username == q.username)
    if q.action:
        stmt = stmt.where(AuditRow.action == q.action)
    if q.actions is not None:
        stmt = stmt.where(AuditRow.action.in_(sorted(q.actions)))
    if q.since:
        stmt = stmt.where(AuditRow.at >= q.since)
    if q.until:
        stmt = stmt.where(AuditRow.at < q.until)
    if q.study_uids is not None:
        stmt = stmt.where(AuditRow.study_uid.in_(sorted(q.study_uids)))
    if q.exclude_user_id is not None:
        stmt = stmt.where((AuditRow.user_id.is_(None)) | (AuditRow.user_id != q.exclude_user_id))
    return stmt


def query(engine: Engine, q: AuditQuery) -> list[AuditEvent]:
    """Events matching ``q``, newest first unless told otherwise."""
    order = (AuditRow.at.desc(), AuditRow.id.desc()) if q.newest_first else (AuditRow.at, AuditRow.id)
    stmt = _where(select(AuditRow), q).order_by(*order).limit(max(1, min(q.limit, 10_000))).offset(max(0, q.offset))
    with reading(engine) as session:
        return [_event(row) for row in session.scalars(stmt)]


def _event(row: AuditRow) -> AuditEvent:
    return AuditEvent(
        action=row.action, outcome=row.outcome, username=row.username, role=row.role, user_id=row.user_id,
        share_id=row.share_id, study_uid=row.study_uid, patient_id=row.patient_id, source=row.source,
        detail=row.detail, at=aware(row.at), id=row.id, partition=row.partition_fk,
    )


def count_failures(engine: Engine, action: str, since: datetime, *, username: str | None = None,
                   source: str | None = None) -> int:
    """Failed ``action`` events since ``since`` for a username or a source (login rate limiting)."""
    stmt = select(func.count()).select_from(AuditRow).where(
        AuditRow.action == action, AuditRow.outcome == Outcome.FAILURE, AuditRow.at >= since
    )
    if username is not None:
        stmt = stmt.where(AuditRow.username == username)
    if source is not None:
        stmt = stmt.where(AuditRow.source == source)
    with reading(engine) as session:
        return int(session.scalar(stmt) or 0)
