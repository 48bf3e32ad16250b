"""What ``GET /api/routing`` shows: each destination's queue (forwards by status, jobs active) and
its newest failure, and the forwards themselves, newest first."""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, func, select, true

from pacs.jobs import aware
from pacs.routing.dispatch import ForwardStatus, active_jobs
from pacs.routing.models import RoutingCursor, RoutingForward
from pacs.routing.rules import Destination


@dataclass(frozen=True, slots=True)
class DestinationState:
    """A destination's queue: forwards by status, jobs active, and the newest failure."""

    name: str
    kind: str
    peer: str
    configured: bool
    concurrency: int
    pending: int
    sent: int
    dead: int
    active_jobs: int
    last_error: str
    last_error_at: datetime | None
    last_status_code: int | None
    last_sent_at: datetime | None


@dataclass(frozen=True, slots=True)
class ForwardView:
    id: int
    rule: str
    destination: str
    sequence: int
    study_uid: str
    series_uid: str
    sop_uid: str
    status: ForwardStatus
    attempts: int
    status_code: int | None
    last_error: str
    created_at: datetime
    last_attempt_at: datetime | None
    sent_at: datetime | None


def destination_states(engine: Engine, destinations: dict[str, Destination],
                       partition: int | None = None) -> list[DestinationState]:  # fmt: skip
    """Every configured destination, and any other that still has forwards (``configured`` false); with
    ``partition``, its queue and last error are those of that partition's forwards only (the active job
    count is the destination's, whoever's forwards they send)."""
    mine: Any = true() if partition is None else RoutingForward.partition_fk == partition
    with engine.connect() as conn:
        counts: dict[tuple[str, str], int] = {
            (row[0], row[1]): int(row[2]) for row in conn.execute(
                select(RoutingForward.destination, RoutingForward.status, func.count()).where(mine)
                .group_by(RoutingForward.destination, RoutingForward.status))
        }  # fmt: skip
        out: list[DestinationState] = []
        for name in sorted(set(destinations) | {name for name, _ in counts}):
            failed = conn.execute(
                select(RoutingForward.last_error, RoutingForward.last_attempt_at, RoutingForward.status_code)
                .where(RoutingForward.destination == name, RoutingForward.last_error != "", mine)
                .order_by(RoutingForward.last_attempt_at.desc(), RoutingForward.id.desc())
                .limit(1)).first()  # fmt: skip
            sent_at = conn.execute(select(func.max(RoutingForward.sent_at))
                                   .where(RoutingForward.destination == name, mine)).scalar_one_or_none()  # fmt: skip
            dest = destinations.get(name)
            out.append(DestinationState(
                name=name, kind=dest.kind if dest else "", peer=dest.label() if dest else "",
                configured=dest is not None, concurrency=dest.concurrency if dest else 0,
                pending=counts.get((name, ForwardStatus.PENDING.value), 0),
                sent=counts.get((name, ForwardStatus.SENT.value), 0),
                dead=counts.get((name, ForwardStatus.DEAD.value), 0),
                active_jobs=active_jobs(conn, name), last_error=failed.last_error if failed else "",
                last_error_at=aware(failed.last_attempt_at) if failed and failed.last_attempt_at else None,
                last_status_code=failed.status_code if failed else None,
                last_sent_at=aware(sent_at) if sent_at else None,
            ))  # fmt: skip
    return out


def rule_cursors(engine: Engine) -> dict[str, int]:
    """How far each rule has read the change feed (a rule not yet seen by a worker has none)."""
    with engine.connect() as conn:
        return {row[0]: int(row[1]) for row in conn.execute(select(RoutingCursor.rule, RoutingCursor.last_seq))}


def list_forwards(engine: Engine, *, destination: str | None = None, statuses: Collection[ForwardStatus] = (),
                  study_uid: str | None = None, limit: int = 100, offset: int = 0,
                  partition: int | None = None) -> list[ForwardView]:  # fmt: skip
    """Forwards newest first, filtered by destination, status, study and partition."""
    stmt = select(RoutingForward).order_by(RoutingForward.id.desc()).limit(max(1, min(limit, 1000))).offset(offset)
    if partition is not None:
        stmt = stmt.where(RoutingForward.partition_fk == partition)
    if destination is not None:
        stmt = stmt.where(RoutingForward.destination == destination)
    if statuses:
        stmt = stmt.where(RoutingForward.status.in_(sorted(s.value for s in statuses)))
    if study_uid is not None:
        stmt = stmt.where(RoutingForward.study_uid == study_uid)
    with engine.connect() as conn:
        rows = conn.execute(stmt).all()
    return [ForwardView(
        id=r.id, rule=r.rule, destination=r.destination, sequence=r.seq, study_uid=r.study_uid,
        series_uid=r.series_uid, sop_uid=r.sop_uid, status=ForwardStatus(r.status), attempts=r.attempts,
        status_code=r.status_code, last_error=r.last_error, created_at=aware(r.created_at),
        last_attempt_at=aware(r.last_attempt_at) if r.last_attempt_at else None,
        sent_at=aware(r.sent_at) if r.sent_at else None,
    ) for r in rows]  # fmt: skip
