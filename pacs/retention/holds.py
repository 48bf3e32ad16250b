"""Legal holds: a study under one is never moved or deleted by a retention rule.

Setting and clearing are audited (``legal-hold``). A hold names a Study Instance UID whether or not
the study is in the archive yet, so a hold placed before the study arrives protects it too.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from pacs.accounts.audit import Action, AuditEvent, record
from pacs.accounts.principal import Principal
from pacs.accounts.tx import aware
from pacs.errors import NotFound
from pacs.index.db import utcnow
from pacs.jobs import write_transaction
from pacs.retention.models import LegalHold
from pacs.uids import require_uid


@dataclass(frozen=True, slots=True)
class Hold:
    study_uid: str
    reason: str
    held_by: str
    created_at: datetime


def _hold(row: Any) -> Hold:
    return Hold(row.study_uid, row.reason, row.held_by, aware(row.created_at))


def set_hold(engine: Engine, principal: Principal, study_uid: str, reason: str = "", *, source: str = "") -> Hold:
    """Put ``study_uid`` under a legal hold (again: the first hold's time is kept, its reason replaced)."""
    study_uid = require_uid(study_uid, "StudyInstanceUID")
    reason = reason.strip()[:256]
    now = utcnow()
    with write_transaction(engine) as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(LegalHold).values(study_uid=study_uid, reason=reason, held_by=principal.username[:64],
                                         created_at=now)  # fmt: skip
        conn.execute(stmt.on_conflict_do_update(index_elements=["study_uid"], set_={"reason": reason}))
        row = conn.execute(select(*LegalHold.__table__.c).where(LegalHold.study_uid == study_uid)).one()
    record(engine, AuditEvent.by(principal, Action.LEGAL_HOLD, study_uid=study_uid, source=source,
                                 detail=f"hold set{': ' + reason if reason else ''}"))  # fmt: skip
    return _hold(row)


def clear_hold(engine: Engine, principal: Principal, study_uid: str, *, source: str = "") -> None:
    """Lift the legal hold on ``study_uid``; NotFound when there is none."""
    with write_transaction(engine) as conn:
        gone = conn.execute(delete(LegalHold).where(LegalHold.study_uid == study_uid)).rowcount
    if not gone:
        raise NotFound("this study is not under a legal hold")
    record(engine, AuditEvent.by(principal, Action.LEGAL_HOLD, study_uid=study_uid, source=source,
                                 detail="hold cleared"))  # fmt: skip


def list_holds(engine: Engine) -> list[Hold]:
    with engine.connect() as conn:
        return [_hold(r) for r in conn.execute(select(*LegalHold.__table__.c).order_by(LegalHold.created_at))]


def held(conn: Connection, study_uids: Collection[str]) -> set[str]:
    """Which of ``study_uids`` are under a legal hold."""
    uids, found = list(study_uids), set[str]()
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        found.update(conn.execute(select(LegalHold.study_uid).where(LegalHold.study_uid.in_(chunk))).scalars())
    return found
