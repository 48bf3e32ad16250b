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

from pacs.access import DEFAULT_PARTITION
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


def set_hold(engine: Engine, principal: Principal, study_uid: str, reason: str = "", *, source: str = "",
             partition: int = DEFAULT_PARTITION) -> Hold:  # fmt: skip
    """Put ``partition``'s study ``study_uid`` under a legal hold (again: the first hold's time is kept, its
    reason replaced). Holds are keyed by (partition, Study Instance UID): another partition's hold on
    a study with the same UID is its own."""
    study_uid = require_uid(study_uid, "StudyInstanceUID")
    reason = reason.strip()[:256]
    now = utcnow()
    with write_transaction(engine) as conn:
        insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
        stmt = insert(LegalHold).values(study_uid=study_uid, reason=reason, held_by=principal.username[:64],
                                         created_at=now, partition_fk=partition)  # fmt: skip
        conn.execute(stmt.on_conflict_do_update(index_elements=["partition_fk", "study_uid"],
                                                set_={"reason": reason}))  # fmt: skip
        row = conn.execute(select(*LegalHold.__table__.c).where(LegalHold.study_uid == study_uid,
                                                                LegalHold.partition_fk == partition)).one()  # fmt: skip
    record(engine, AuditEvent.by(principal, Action.LEGAL_HOLD, study_uid=study_uid, source=source,
                                 detail=f"hold set{': ' + reason if reason else ''}", partition=partition))  # fmt: skip
    return _hold(row)


def clear_hold(engine: Engine, principal: Principal, study_uid: str, *, source: str = "",
               partition: int = DEFAULT_PARTITION) -> None:  # fmt: skip
    """Lift the legal hold on ``partition``'s ``study_uid``; NotFound when there is none."""
    with write_transaction(engine) as conn:
        gone = conn.execute(delete(LegalHold).where(LegalHold.study_uid == study_uid,
                                                    LegalHold.partition_fk == partition)).rowcount  # fmt: skip
    if not gone:
        raise NotFound("this study is not under a legal hold")
    record(engine, AuditEvent.by(principal, Action.LEGAL_HOLD, study_uid=study_uid, source=source,
                                 detail="hold cleared", partition=partition))  # fmt: skip


def list_holds(engine: Engine, partition: int = DEFAULT_PARTITION) -> list[Hold]:
    """The legal holds of ``partition``."""
    with engine.connect() as conn:
        return [_hold(r) for r in conn.execute(select(*LegalHold.__table__.c).where(LegalHold.partition_fk == partition)
                                               .order_by(LegalHold.created_at))]  # fmt: skip


def held(conn: Connection, study_uids: Collection[str], partition: int = DEFAULT_PARTITION) -> set[str]:
    """Which of ``partition``'s studies ``study_uids`` are under a legal hold."""
    uids, found = list(study_uids), set[str]()
    for start in range(0, len(uids), 500):
        chunk = uids[start : start + 500]
        found.update(conn.execute(select(LegalHold.study_uid).where(LegalHold.study_uid.in_(chunk),
                                                                    LegalHold.partition_fk == partition)).scalars())
    return found
