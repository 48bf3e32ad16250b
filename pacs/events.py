"""The change feed: the outbox served in order, as Microsoft's DICOM change feed serves its log.

Every change to the index writes an outbox row in the transaction that makes it (ingest, delete,
a stable transition, an AI job's completion), so the feed holds exactly the changes that
committed. A reader pages with ``since`` (the last ``Sequence`` it saw) and must never miss an
event, even one whose transaction commits after a later event became visible. Row ids cannot
promise that on PostgreSQL: two writers take ids 10 and 11, the one holding 11 commits first, a
reader sees 11 and moves past 10 for good. So the feed's ``Sequence`` is not the row id but a
number given to committed rows afterwards by :func:`sequence_pending`, one sequencer at a time
(an advisory lock on PostgreSQL, ``BEGIN IMMEDIATE`` on SQLite), each run after every earlier
run has committed: numbers become visible in increasing order, and a row committed late simply
gets a later number. Readers sequence what is pending before they read.

Actions and states follow Microsoft's change feed (``create``, ``update``, ``delete``; state
``current``, ``replaced``, ``deleted``), plus the archive's own: ``stable`` (a study's stable
transition, :mod:`pacs.stability`), ``ai-result`` (a plugin job's stored results) and, reserved
for the reporting work, ``report-signed``.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, and_, false, func, insert, literal, or_, select, true, tuple_, update
from sqlalchemy.engine import Connection

from pacs.access import AccessScope
from pacs.index.db import utcnow
from pacs.index.models import Instance, OutboxEvent, Study
from pacs.jobs import aware, write_transaction

#: Outbox event names (what the writers record) and the feed action each stands for.
EVENT_INSTANCE_STORED = "instance.stored"
EVENT_INSTANCE_REPLACED = "instance.replaced"
EVENT_INSTANCE_DELETED = "instance.deleted"
EVENT_STUDY_STABLE = "study.stable"
EVENT_AI_RESULT = "ai.result"
#: Reserved for signed reports (pacs/reports/): write it with :func:`record_event` when a report is signed.
EVENT_REPORT_SIGNED = "report.signed"

#: PostgreSQL advisory lock key of the sequencer (any constant the archive uses for nothing else).
_SEQUENCER_LOCK = 0x6366_6565_64
_SEQUENCE_BATCH = 5000
MAX_LIMIT = 1000


class Action(StrEnum):
    CREATE = "create"
    UPDATE = "update"
    DELETE = "delete"
    STABLE = "stable"
    AI_RESULT = "ai-result"
    REPORT_SIGNED = "report-signed"


class State(StrEnum):
    """What became of the event's object since (Microsoft's change feed states)."""

    CURRENT = "current"
    REPLACED = "replaced"
    DELETED = "deleted"


_ACTIONS: dict[str, Action] = {
    EVENT_INSTANCE_STORED: Action.CREATE,
    EVENT_INSTANCE_REPLACED: Action.UPDATE,
    EVENT_INSTANCE_DELETED: Action.DELETE,
    EVENT_STUDY_STABLE: Action.STABLE,
    EVENT_AI_RESULT: Action.AI_RESULT,
    EVENT_REPORT_SIGNED: Action.REPORT_SIGNED,
}
_EVENTS: dict[Action, str] = {action: event for event, action in _ACTIONS.items()}
_INSTANCE_EVENTS = (EVENT_INSTANCE_STORED, EVENT_INSTANCE_REPLACED, EVENT_INSTANCE_DELETED)


@dataclass(frozen=True, slots=True)
class ChangeFeedEntry:
    """One event of the feed. ``detail`` is what the event says beyond its UIDs (a stable
    transition's generation, an AI result's plugin and objects); ``metadata`` the instance's DICOM
    JSON (PS3.18 F.2), given only when asked for and only while the instance is current."""

    sequence: int
    action: Action
    timestamp: datetime
    study_uid: str
    series_uid: str | None
    sop_uid: str | None
    state: State
    detail: dict[str, Any] | None = None
    metadata: dict[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        """The wire shape of the feed and of webhook bodies: Microsoft's field names, and ``Detail``."""
        body: dict[str, Any] = {
            "Sequence": self.sequence,
            "StudyInstanceUid": self.study_uid,
            "SeriesInstanceUid": self.series_uid,
            "SopInstanceUid": self.sop_uid,
            "Action": self.action.value,
            "Timestamp": self.timestamp.isoformat().replace("+00:00", "Z"),
            "State": self.state.value,
            "Metadata": self.metadata,
        }
        if self.detail is not None:
            body["Detail"] = self.detail
        return body


def parse_actions(values: Collection[str]) -> frozenset[Action]:
    """Feed actions named by a client; ``ValueError`` names the first unknown one."""
    known = {a.value for a in Action}
    for value in values:
        if value not in known:
            raise ValueError(f"unknown change feed action {value!r} (known: {', '.join(sorted(known))})")
    return frozenset(Action(v) for v in values)


# --- writing -------------------------------------------------------------------------------------


def record_event(conn: Connection, event: str, study_uid: str, series_uid: str = "", sop_uid: str = "",
                 detail: dict[str, Any] | None = None, partition: int = 1) -> None:  # fmt: skip
    """Append an event of ``partition``'s study in the caller's transaction (it commits exactly when the
    change does)."""
    if event not in _ACTIONS:
        raise ValueError(f"unknown outbox event {event!r}")
    conn.execute(insert(OutboxEvent).values(
        event=event, study_uid=study_uid, series_uid=series_uid, sop_uid=sop_uid, created_at=utcnow(),
        partition_fk=partition,
        detail_json=None if detail is None else json.dumps(detail, sort_keys=True),
    ))  # fmt: skip


def sequence_pending(engine: Engine) -> int:
    """Number the committed events that have none yet, in row order; how many were numbered."""
    with engine.connect() as conn:  # a cheap look, without the write lock, when nothing waits
        if conn.execute(select(OutboxEvent.id).where(OutboxEvent.seq.is_(None)).limit(1)).first() is None:
            return 0
    total = 0
    while True:
        with write_transaction(engine) as conn:
            if conn.dialect.name == "postgresql":
                # Held to the commit: the next run reads max(seq) only once this run's numbers are visible.
                conn.execute(select(func.pg_advisory_xact_lock(_SEQUENCER_LOCK)))
            top = int(conn.execute(select(func.coalesce(func.max(OutboxEvent.seq), 0))).scalar_one() or 0)
            pending = (
                select(OutboxEvent.id.label("id"),
                       (literal(top) + func.row_number().over(order_by=OutboxEvent.id)).label("n"))
                .where(OutboxEvent.seq.is_(None))
                .order_by(OutboxEvent.id)
                .limit(_SEQUENCE_BATCH)
                .subquery()
            )  # fmt: skip
            done = int(conn.execute(
                update(OutboxEvent).where(OutboxEvent.id == pending.c.id).values(seq=pending.c.n)
            ).rowcount)  # fmt: skip
        total += done
        if done < _SEQUENCE_BATCH:
            return total


# --- reading -------------------------------------------------------------------------------------


def _scope_condition(scope: AccessScope) -> Any:
    """The events of the studies ``scope`` sees, in its partition (those of deleted studies too, for scopes
    of all studies)."""
    cond: Any
    if scope.all_studies:
        cond = true()
    else:
        parts: list[Any] = []
        if scope.study_uids:
            parts.append(OutboxEvent.study_uid.in_(sorted(scope.study_uids)))
        if scope.patient_keys:
            parts.append(OutboxEvent.study_uid.in_(
                select(Study.study_uid).where(Study.partition_fk == scope.partition,
                                              tuple_(Study.patient_id, Study.issuer).in_(sorted(scope.patient_keys)))
            ))  # fmt: skip
        cond = or_(*parts) if parts else false()
    if scope.hidden_study_uids:
        cond = and_(cond, OutboxEvent.study_uid.not_in(sorted(scope.hidden_study_uids)))
    return and_(OutboxEvent.partition_fk == scope.partition, cond)


def read_feed(engine: Engine, *, since: int = 0, limit: int = 100, scope: AccessScope | None = None,
              actions: Collection[Action] = (), include_metadata: bool = False) -> list[ChangeFeedEntry]:  # fmt: skip
    """Events with a sequence above ``since``, in sequence order, at most ``limit`` (1..1000)."""
    scope = scope or AccessScope.everything()
    sequence_pending(engine)
    stmt = (
        select(OutboxEvent)
        .where(OutboxEvent.seq > max(0, since), _scope_condition(scope))
        .order_by(OutboxEvent.seq)
        .limit(max(1, min(limit, MAX_LIMIT)))
    )
    if actions:
        stmt = stmt.where(OutboxEvent.event.in_(sorted(_EVENTS[a] for a in actions)))
    with engine.connect() as conn:
        rows = list(conn.execute(stmt))
        return _entries(conn, rows, include_metadata, scope.partition)


def latest(engine: Engine, scope: AccessScope | None = None) -> ChangeFeedEntry | None:
    """The newest event (what a new reader starts after), ``None`` while the feed is empty."""
    scope = scope or AccessScope.everything()
    sequence_pending(engine)
    stmt = (
        select(OutboxEvent)
        .where(OutboxEvent.seq.is_not(None), _scope_condition(scope))
        .order_by(OutboxEvent.seq.desc())
        .limit(1)
    )
    with engine.connect() as conn:
        rows = list(conn.execute(stmt))
        return _entries(conn, rows, False, scope.partition)[0] if rows else None


def _entries(conn: Connection, rows: Sequence[Any], include_metadata: bool, partition: int) -> list[ChangeFeedEntry]:
    sops = sorted({r.sop_uid for r in rows if r.sop_uid})
    newest: dict[str, tuple[int, str]] = {}  # SOP Instance UID -> (seq, event) of its newest instance event
    present: dict[str, str] = {}  # SOP Instance UID -> metadata JSON of the instance stored now
    for start in range(0, len(sops), 500):
        chunk = sops[start : start + 500]
        last = (
            select(OutboxEvent.sop_uid, func.max(OutboxEvent.seq).label("seq"))
            .where(OutboxEvent.sop_uid.in_(chunk), OutboxEvent.event.in_(_INSTANCE_EVENTS),
                   OutboxEvent.seq.is_not(None), OutboxEvent.partition_fk == partition)
            .group_by(OutboxEvent.sop_uid)
            .subquery()
        )  # fmt: skip
        for row in conn.execute(
            select(OutboxEvent.sop_uid, OutboxEvent.seq, OutboxEvent.event)
            .join(last, and_(last.c.sop_uid == OutboxEvent.sop_uid, last.c.seq == OutboxEvent.seq))
            .where(OutboxEvent.partition_fk == partition)
        ):
            newest[row.sop_uid] = (int(row.seq or 0), row.event)
        columns = [Instance.sop_uid, Instance.metadata_json if include_metadata else literal("")]
        present.update({row[0]: row[1] for row in conn.execute(select(*columns).where(
            Instance.sop_uid.in_(chunk), Instance.partition_fk == partition))})
    studies = sorted({r.study_uid for r in rows if not r.sop_uid})
    existing_studies = set(conn.execute(select(Study.study_uid).where(
        Study.study_uid.in_(studies), Study.partition_fk == partition)).scalars()) \
        if studies else set()  # fmt: skip

    out: list[ChangeFeedEntry] = []
    for r in rows:
        assert r.seq is not None
        action = _ACTIONS.get(r.event)
        if action is None:  # an event a newer version wrote: skipped, not misreported
            continue
        if r.sop_uid:
            last_seq, last_event = newest.get(r.sop_uid, (r.seq, r.event))
            if last_event == EVENT_INSTANCE_DELETED or r.sop_uid not in present:
                state = State.DELETED
            else:
                state = State.CURRENT if last_seq <= r.seq or action is Action.AI_RESULT else State.REPLACED
        else:
            state = State.CURRENT if r.study_uid in existing_studies else State.DELETED
        metadata = None
        if include_metadata and state is State.CURRENT and action in (Action.CREATE, Action.UPDATE):
            metadata = json.loads(present[r.sop_uid])
        out.append(ChangeFeedEntry(
            sequence=r.seq, action=action, timestamp=aware(r.created_at), study_uid=r.study_uid,
            series_uid=r.series_uid or None, sop_uid=r.sop_uid or None, state=state,
            detail=json.loads(r.detail_json) if r.detail_json else None, metadata=metadata,
        ))  # fmt: skip
    return out
