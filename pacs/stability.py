"""Stable-study detection: a study is stable once no instance has arrived for ``stable_age`` seconds.

Detection reads only the index (``studies.last_instance_at``, set by every ingest commit), so any
number of archive processes on one database agree. Each stable transition is one row update in
``study_stability`` made under a condition (the study's ``last_instance_at`` is newer than the one
recorded at the previous transition); whoever's update affects the row records a ``study.stable``
event for the change feed (:mod:`pacs.events`) and runs ``on_stable`` in the same transaction,
which is where the jobs for the study are enqueued. So a transition happens once,
its jobs are written exactly when it is, and an instance arriving later makes the study unstable
again (its ``last_instance_at`` moves past the recorded one) until the next transition.

A persisted cursor keeps each poll to an index range scan of recent studies instead of the whole
archive. Studies whose last instance arrived before this table existed are not picked up (an
archive that gains AI plugins does not rerun them on its history); they join as soon as an
instance arrives in them.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import DateTime, Engine, ForeignKey, Integer, and_, insert, or_, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from pacs.access import DEFAULT_PARTITION
from pacs.errors import NotFound
from pacs.events import EVENT_STUDY_STABLE, record_event
from pacs.index.db import utcnow
from pacs.index.models import Base, BigId, Study
from pacs.jobs import aware, write_transaction

log = logging.getLogger(__name__)

#: How far behind the cursor each poll looks again: covers commits whose timestamp was taken well
#: before they became visible and clocks of several machines that disagree a little.
DEFAULT_MARGIN_S = 300.0
_CURSOR_STEP = timedelta(seconds=10)


class StudyStability(Base):
    """The last stable transition of a study: its number and the arrival time it covered."""

    __tablename__ = "study_stability"

    study_fk: Mapped[int] = mapped_column(ForeignKey("studies.id", ondelete="CASCADE"), primary_key=True)
    generation: Mapped[int] = mapped_column(Integer, default=0)
    last_instance_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    stable_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))


class StabilityCursor(Base):
    """One row: studies that last changed at or before ``scanned_to`` have all been considered."""

    __tablename__ = "stability_cursor"

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    floor_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))  # when detection began
    scanned_to: Mapped[datetime] = mapped_column(DateTime(timezone=True))


@dataclass(frozen=True, slots=True)
class StableStudy:
    """A study that has just become stable; ``generation`` counts its stable transitions (1, 2, …)."""

    study_uid: str
    study_id: int
    generation: int
    last_instance_at: datetime
    stable_at: datetime
    partition: int = DEFAULT_PARTITION  # the partition (pacs.partitions) the study lies in


@dataclass(frozen=True, slots=True)
class StabilityState:
    """Where a study stands: stable now or not, and its last transition."""

    study_uid: str
    stable: bool
    generation: int
    last_instance_at: datetime
    stable_at: datetime | None


#: Called inside the transition's transaction; whatever it writes commits with the transition.
OnStable = Callable[[Connection, StableStudy], None]


class StabilityDetector:
    """Finds studies that became stable and runs ``on_stable`` once per transition, across processes."""

    def __init__(
        self,
        engine: Engine,
        stable_age_s: float,
        on_stable: OnStable,
        *,
        batch: int = 200,
        margin_s: float = DEFAULT_MARGIN_S,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.stable_age = timedelta(seconds=stable_age_s)
        self.on_stable = on_stable
        self.batch = batch
        self.margin = timedelta(seconds=margin_s)
        self._clock = clock
        self._advanced_to: datetime | None = None

    def poll(self) -> list[StableStudy]:
        """One pass: make every study stable that is due; return those this call transitioned."""
        now = self._clock()
        cutoff = now - self.stable_age
        floor, scanned_to = self._cursor()
        since = None if scanned_to is None else scanned_to - self.margin
        if floor is not None and (since is None or since < floor):
            since = floor
        done: list[StableStudy] = []
        failed_at: datetime | None = None
        after: tuple[datetime, int] | None = None
        while True:
            candidates = self._candidates(since, cutoff, after)
            for last_at, study_id in candidates:
                try:
                    stable = self._transition(study_id, cutoff, now)
                except Exception:  # one study's routing failure must not stop the others
                    log.exception("stable transition of study #%d failed; will retry", study_id)
                    failed_at = aware(last_at) if failed_at is None else min(failed_at, aware(last_at))
                    continue
                if stable is not None:
                    done.append(stable)
            if len(candidates) < self.batch:
                break
            after = candidates[-1]
        self._advance(cutoff if failed_at is None else min(cutoff, failed_at - timedelta(microseconds=1)))
        return done

    def _cursor(self) -> tuple[datetime | None, datetime | None]:
        with self.engine.connect() as conn:
            row = conn.execute(select(StabilityCursor.floor_at, StabilityCursor.scanned_to).limit(1)).first()
        return (None, None) if row is None else (aware(row.floor_at), aware(row.scanned_to))

    def _advance(self, to: datetime) -> None:
        # The cursor need not follow every poll: lagging a few seconds only rescans a little more.
        if self._advanced_to is not None and timedelta(0) <= to - self._advanced_to < _CURSOR_STEP:
            return
        self._advanced_to = to
        with write_transaction(self.engine) as conn:
            moved = conn.execute(
                update(StabilityCursor).where(StabilityCursor.scanned_to < to).values(scanned_to=to)
            ).rowcount
            if not moved and conn.execute(select(StabilityCursor.id).limit(1)).first() is None:
                conn.execute(insert(StabilityCursor).values(id=1, floor_at=_EPOCH, scanned_to=to))

    def _candidates(
        self, since: datetime | None, cutoff: datetime, after: tuple[datetime, int] | None
    ) -> list[tuple[datetime, int]]:
        stmt = (
            select(Study.id, Study.last_instance_at)
            .outerjoin(StudyStability, StudyStability.study_fk == Study.id)
            .where(
                Study.last_instance_at <= cutoff,
                or_(StudyStability.study_fk.is_(None), StudyStability.last_instance_at < Study.last_instance_at),
            )
        )
        if since is not None:
            stmt = stmt.where(Study.last_instance_at > since)
        if after is not None:
            stmt = stmt.where(
                or_(Study.last_instance_at > after[0], and_(Study.last_instance_at == after[0], Study.id > after[1]))
            )
        stmt = stmt.order_by(Study.last_instance_at, Study.id).limit(self.batch)
        with self.engine.connect() as conn:
            return [(r.last_instance_at, r.id) for r in conn.execute(stmt)]

    def _transition(self, study_id: int, cutoff: datetime, now: datetime) -> StableStudy | None:
        with write_transaction(self.engine) as conn:
            stmt = select(Study.id, Study.study_uid, Study.last_instance_at, Study.partition_fk).where(
                Study.id == study_id)
            if conn.dialect.name == "postgresql":
                stmt = stmt.with_for_update()  # no ingest commits into the study while its jobs are routed
            row = conn.execute(stmt).first()
            if row is None or aware(row.last_instance_at) > cutoff:
                return None  # deleted, or an instance arrived since the candidate query
            last_at = row.last_instance_at
            previous = conn.execute(
                select(StudyStability.generation).where(StudyStability.study_fk == study_id)
            ).scalar_one_or_none()
            if previous is None:
                ins = _insert_ignore(conn).values(
                    study_fk=study_id, generation=1, last_instance_at=last_at, stable_at=now
                )
                won = conn.execute(ins).rowcount == 1
                generation = 1
            else:
                won = (
                    conn.execute(
                        update(StudyStability)
                        .where(StudyStability.study_fk == study_id, StudyStability.last_instance_at < last_at)
                        .values(generation=StudyStability.generation + 1, last_instance_at=last_at, stable_at=now)
                    ).rowcount
                    == 1
                )
                generation = previous + 1
            if not won:
                return None  # another process made this transition
            stable = StableStudy(row.study_uid, study_id, generation, aware(last_at), now, row.partition_fk)
            record_event(conn, EVENT_STUDY_STABLE, row.study_uid, detail={"Generation": generation},
                         partition=row.partition_fk)
            self.on_stable(conn, stable)  # its jobs carry the study's partition
        log.info("study %s is stable (generation %d)", stable.study_uid, generation)
        return stable


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def _insert_ignore(conn: Connection) -> Any:
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    return dialect.insert(StudyStability).on_conflict_do_nothing(index_elements=["study_fk"])


def stability_of(engine: Engine, study_uid: str) -> StabilityState:
    """Whether ``study_uid`` is stable: its last stable transition covers its last arrival."""
    stmt = (
        select(
            Study.study_uid,
            Study.last_instance_at,
            StudyStability.generation,
            StudyStability.last_instance_at,
            StudyStability.stable_at,
        )
        .outerjoin(StudyStability, StudyStability.study_fk == Study.id)
        .where(Study.study_uid == study_uid)
    )
    with engine.connect() as conn:
        row = conn.execute(stmt).first()
    if row is None:
        raise NotFound("no such study")
    last_at = aware(row[1])
    covered = row[3] is not None and aware(row[3]) >= last_at
    return StabilityState(
        study_uid=study_uid,
        stable=covered,
        generation=int(row[2] or 0),
        last_instance_at=last_at,
        stable_at=None if row[4] is None else aware(row[4]),
    )
