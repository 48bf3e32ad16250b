"""The durable job queue: a table in the index database that any number of workers share.

A job is enqueued inside the caller's transaction (so it is written exactly when the event that
caused it is), identified by a ``dedupe_key`` (a second enqueue of the same key is a no-op), and
claimed by one worker at a time under a lease: on PostgreSQL with ``SELECT … FOR UPDATE SKIP
LOCKED`` (many workers on many machines never block each other), on SQLite inside ``BEGIN
IMMEDIATE`` with a conditional ``UPDATE`` (one writer at a time, so a job is claimed once). A worker
extends its lease while it works; a worker that dies stops doing so, the lease expires, and the
job goes back to the queue with its attempt counted. Failures are retried with exponential
backoff and dead-lettered (status ``failed``, error kept) after ``max_attempts``.

The queue knows nothing of what a job does: ``kind``, ``target`` and ``payload`` are the
handler's business (the AI runner uses ``kind="plugin"``).
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    ColumnElement,
    DateTime,
    Engine,
    Float,
    Index,
    Integer,
    String,
    Text,
    and_,
    cast,
    func,
    literal,
    or_,
    select,
    text,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.orm import Mapped, mapped_column

from pacs.errors import Conflict, NotFound
from pacs.index.db import utcnow
from pacs.index.models import Base, BigId

log = logging.getLogger(__name__)


class JobStatus(StrEnum):
    QUEUED = "queued"  # waiting for a worker
    RUNNING = "running"  # claimed; the lease says until when
    RETRYING = "retrying"  # an attempt failed; waits for ``run_after`` (backoff)
    SUCCEEDED = "succeeded"
    FAILED = "failed"  # dead-lettered: no attempts left (``error`` says why)
    CANCELLED = "cancelled"  # not run, and never will be (``error`` says why)


CLAIMABLE = (JobStatus.QUEUED, JobStatus.RETRYING)
ACTIVE = (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.RETRYING)
FINISHED = (JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED)


class Job(Base):
    __tablename__ = "jobs"
    __table_args__ = (
        Index("ix_jobs_claim", "status", "run_after"),
        Index("ix_jobs_lease", "status", "lease_expires_at"),
        Index("ix_jobs_study", "study_uid", "created_at"),
        Index("ix_jobs_target", "target", "target_version", "created_at"),
        Index("ix_jobs_partition", "partition_fk", "created_at"),
    )

    id: Mapped[int] = mapped_column(BigId, primary_key=True)
    dedupe_key: Mapped[str] = mapped_column(String(64), unique=True)
    # The partition (pacs.partitions) whose study the job works on (migration 0020).
    partition_fk: Mapped[int] = mapped_column(Integer, default=1, server_default=text("1"))
    kind: Mapped[str] = mapped_column(String(32))
    target: Mapped[str] = mapped_column(String(64), default="")
    target_version: Mapped[str] = mapped_column(String(64), default="")
    study_uid: Mapped[str] = mapped_column(String(64), default="")
    generation: Mapped[int] = mapped_column(Integer, default=0)
    payload_json: Mapped[str] = mapped_column(Text, default="{}")
    requested_by: Mapped[str] = mapped_column(String(64), default="")
    status: Mapped[str] = mapped_column(String(16), default=JobStatus.QUEUED.value)
    priority: Mapped[int] = mapped_column(Integer, default=0)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=3)
    timeout_s: Mapped[float] = mapped_column(Float, default=600.0)
    run_after: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    lease_owner: Mapped[str] = mapped_column(String(128), default="")
    lease_expires_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    progress: Mapped[float] = mapped_column(Float, default=0.0)
    progress_message: Mapped[str] = mapped_column(String(256), default="")
    error: Mapped[str] = mapped_column(Text, default="")
    result_json: Mapped[str] = mapped_column(Text, default="{}")
    created_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    updated_at: Mapped[datetime] = mapped_column(DateTime(timezone=True))
    started_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)
    finished_at: Mapped[datetime | None] = mapped_column(DateTime(timezone=True), nullable=True)


# --- values crossing the boundary ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class JobSpec:
    """A job to enqueue. ``dedupe_key`` makes enqueueing idempotent (see :func:`dedupe_key`)."""

    kind: str
    dedupe_key: str
    target: str = ""
    target_version: str = ""
    study_uid: str = ""
    generation: int = 0
    payload: dict[str, Any] | None = None
    requested_by: str = ""
    priority: int = 0
    max_attempts: int = 3
    timeout_s: float = 600.0
    run_after: datetime | None = None
    partition: int = 1  # the partition whose study (or configuration) the job works on


@dataclass(frozen=True, slots=True)
class JobView:
    """A job as listed by the API: status, progress, timings and the last error."""

    id: int
    kind: str
    target: str
    target_version: str
    study_uid: str
    generation: int
    status: JobStatus
    attempts: int
    max_attempts: int
    timeout_s: float
    progress: float
    progress_message: str
    error: str
    requested_by: str
    payload: dict[str, Any]
    result: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    run_after: datetime
    started_at: datetime | None
    finished_at: datetime | None
    lease_owner: str
    lease_expires_at: datetime | None
    partition: int = 1

    @property
    def wait_s(self) -> float | None:
        """Seconds from enqueue to the first start (``None`` until started)."""
        return None if self.started_at is None else max(0.0, (self.started_at - self.created_at).total_seconds())

    @property
    def run_s(self) -> float | None:
        """Seconds from the first start to the end (``None`` until finished)."""
        if self.started_at is None or self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


@dataclass(frozen=True, slots=True)
class ClaimedJob:
    """A job a worker holds the lease on; ``attempt`` is this attempt's number (1-based)."""

    id: int
    kind: str
    target: str
    target_version: str
    study_uid: str
    generation: int
    dedupe_key: str
    payload: dict[str, Any]
    attempt: int
    max_attempts: int
    timeout_s: float
    owner: str
    requested_by: str
    partition: int = 1


class LeaseLost(Conflict):
    """The worker's lease on a job expired and the job was given to another attempt."""


def dedupe_key(*parts: object) -> str:
    """A fixed-length idempotency key from the parts that identify a job."""
    return hashlib.sha256("\x1f".join(str(p) for p in parts).encode()).hexdigest()


def aware(value: datetime) -> datetime:
    """SQLite hands timestamps back naive; every stored timestamp is UTC."""
    return value if value.tzinfo is not None else value.replace(tzinfo=UTC)


def _aware_or_none(value: datetime | None) -> datetime | None:
    return None if value is None else aware(value)


# --- transactions ------------------------------------------------------------------------------


@contextmanager
def write_transaction(engine: Engine) -> Iterator[Connection]:
    """A transaction that writes: ``BEGIN IMMEDIATE`` on SQLite, so it takes the lock up front."""
    with engine.connect() as conn:
        conn.info["write"] = True
        try:
            with conn.begin():
                yield conn
        finally:
            conn.info.pop("write", None)


def _insert(conn: Connection, table: Any) -> Any:
    return postgresql.insert(table) if conn.dialect.name == "postgresql" else sqlite.insert(table)


def enqueue(conn: Connection, spec: JobSpec, *, now: datetime | None = None) -> int | None:
    """Add a job in the caller's transaction; ``None`` when one with the same key already exists."""
    now = now or utcnow()
    values = {
        "dedupe_key": spec.dedupe_key,
        "partition_fk": spec.partition,
        "kind": spec.kind,
        "target": spec.target,
        "target_version": spec.target_version,
        "study_uid": spec.study_uid,
        "generation": spec.generation,
        "payload_json": json.dumps(spec.payload or {}, sort_keys=True),
        "requested_by": spec.requested_by,
        "status": JobStatus.QUEUED.value,
        "priority": spec.priority,
        "attempts": 0,
        "max_attempts": max(1, spec.max_attempts),
        "timeout_s": spec.timeout_s,
        "run_after": spec.run_after or now,
        "lease_owner": "",
        "progress": 0.0,
        "progress_message": "",
        "error": "",
        "result_json": "{}",
        "created_at": now,
        "updated_at": now,
    }
    stmt = _insert(conn, Job).values(**values).on_conflict_do_nothing(index_elements=["dedupe_key"])
    new_id = conn.execute(stmt.returning(Job.id)).scalar_one_or_none()
    return None if new_id is None else int(new_id)


def enqueue_lane_head(conn: Connection, spec: JobSpec, *, again: Callable[[int], JobSpec],
                      dead: Callable[[str], None]) -> bool:  # fmt: skip
    """Queue the job that works a *lane* (webhook deliveries, routing forwards) from its oldest pending
    item, in the caller's transaction; whether a job was queued.

    ``spec``'s key names the lane and its head. When a job of that key already ended with the head
    still pending, it was dead-lettered by the queue (its worker died on every attempt): the head is
    set aside with ``dead(error)`` and the lane goes on next round; a job that ended otherwise gets
    one more, ``again(ended_job_id)``, keyed apart.
    """
    if enqueue(conn, spec) is not None:
        return True
    ended = conn.execute(select(Job.id, Job.status, Job.error).where(Job.dedupe_key == spec.dedupe_key)).first()
    if ended is None:
        return False
    if ended.status == JobStatus.FAILED:
        dead(ended.error or "its attempts ran out")
        return False
    enqueue(conn, again(int(ended.id)))
    return True


def _view(job: Any) -> JobView:
    return JobView(
        id=job.id, kind=job.kind, target=job.target, target_version=job.target_version, study_uid=job.study_uid,
        generation=job.generation, status=JobStatus(job.status), attempts=job.attempts,
        max_attempts=job.max_attempts, timeout_s=job.timeout_s, progress=job.progress,
        progress_message=job.progress_message, error=job.error, requested_by=job.requested_by,
        payload=json.loads(job.payload_json or "{}"), result=json.loads(job.result_json or "{}"),
        created_at=aware(job.created_at), updated_at=aware(job.updated_at), run_after=aware(job.run_after),
        started_at=_aware_or_none(job.started_at), finished_at=_aware_or_none(job.finished_at),
        lease_owner=job.lease_owner, lease_expires_at=_aware_or_none(job.lease_expires_at),
        partition=job.partition_fk,
    )  # fmt: skip


def backoff_delay(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds to wait after failed attempt number ``attempt``: ``base * 2**(attempt-1)``, capped."""
    return float(min(max_s, base_s * (2 ** max(0, attempt - 1))))


class JobQueue:
    """Claim, heartbeat, complete and fail jobs; safe for many threads and processes at once."""

    def __init__(
        self,
        engine: Engine,
        *,
        lease_s: float = 60.0,
        backoff_base_s: float = 30.0,
        backoff_max_s: float = 3600.0,
        clock: Callable[[], datetime] = utcnow,
    ) -> None:
        self.engine = engine
        self.lease_s = lease_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self._clock = clock

    # --- enqueue and read ----------------------------------------------------------------------

    def enqueue(self, spec: JobSpec) -> int | None:
        """Add one job in a transaction of its own (see :func:`enqueue`)."""
        with write_transaction(self.engine) as conn:
            return enqueue(conn, spec, now=self._clock())

    def get(self, job_id: int) -> JobView:
        with self.engine.connect() as conn:
            row = conn.execute(select(Job).where(Job.id == job_id)).first()
        if row is None:
            raise NotFound("no such job")
        return _view(row)

    def list_jobs(
        self,
        *,
        statuses: Sequence[JobStatus] = (),
        study_uid: str | None = None,
        target: str | None = None,
        kind: str | None = None,
        limit: int = 100,
        offset: int = 0,
        partition: int | None = None,
    ) -> list[JobView]:
        """Jobs, newest first, filtered by status, study, target, kind or partition."""
        stmt = select(Job)
        if partition is not None:
            stmt = stmt.where(Job.partition_fk == partition)
        if statuses:
            stmt = stmt.where(Job.status.in_([s.value for s in statuses]))
        if study_uid is not None:
            stmt = stmt.where(Job.study_uid == study_uid)
        if target is not None:
            stmt = stmt.where(Job.target == target)
        if kind is not None:
            stmt = stmt.where(Job.kind == kind)
        stmt = stmt.order_by(Job.id.desc()).limit(max(1, min(limit, 1000))).offset(max(0, offset))
        with self.engine.connect() as conn:
            return [_view(r) for r in conn.execute(stmt)]

    def counts(self) -> dict[JobStatus, int]:
        """How many jobs are in each status."""
        with self.engine.connect() as conn:
            rows = conn.execute(select(Job.status, func.count()).group_by(Job.status)).all()
        out = dict.fromkeys(JobStatus, 0)
        for status, n in rows:
            out[JobStatus(status)] = int(n)
        return out

    # --- the worker side -----------------------------------------------------------------------

    def claim(self, owner: str, kinds: Sequence[str], limit: int = 1, *,
              where: ColumnElement[bool] | None = None) -> list[ClaimedJob]:  # fmt: skip
        """Take up to ``limit`` due jobs of ``kinds`` (and ``where``, when given) under a lease held by ``owner``.

        PostgreSQL: the candidate rows are locked with ``FOR UPDATE SKIP LOCKED``, so concurrent
        claimers each get other rows without waiting. SQLite: the transaction is ``BEGIN
        IMMEDIATE`` (one writer at a time) and the ``UPDATE`` re-checks the status, so a row is
        claimed once even by many processes.
        """
        now = self._clock()
        candidates = (
            select(Job.id)
            .where(Job.status.in_([s.value for s in CLAIMABLE]), Job.run_after <= now, Job.kind.in_(list(kinds)))
            .order_by(Job.priority.desc(), Job.run_after, Job.id)
            .limit(limit)
        )
        if where is not None:
            candidates = candidates.where(where)
        if not self._any(candidates):
            return []  # idle workers poll without taking the write lock
        with write_transaction(self.engine) as conn:
            if conn.dialect.name == "postgresql":
                ids = list(conn.execute(candidates.with_for_update(skip_locked=True)).scalars())
            else:
                ids = list(conn.execute(candidates).scalars())
            if not ids:
                return []
            rows = conn.execute(
                update(Job)
                .where(Job.id.in_(ids), Job.status.in_([s.value for s in CLAIMABLE]))
                .values(
                    status=JobStatus.RUNNING.value,
                    attempts=Job.attempts + 1,
                    lease_owner=owner,
                    lease_expires_at=now + timedelta(seconds=self.lease_s),
                    started_at=func.coalesce(Job.started_at, now),
                    progress=0.0,
                    progress_message="started",
                    updated_at=now,
                )
                .returning(Job.id, Job.kind, Job.target, Job.target_version, Job.study_uid, Job.generation,
                           Job.dedupe_key, Job.payload_json, Job.attempts, Job.max_attempts, Job.timeout_s,
                           Job.requested_by, Job.partition_fk)  # fmt: skip
            ).all()
        claimed = [
            ClaimedJob(
                id=r.id, kind=r.kind, target=r.target, target_version=r.target_version, study_uid=r.study_uid,
                generation=r.generation, dedupe_key=r.dedupe_key, payload=json.loads(r.payload_json or "{}"),
                attempt=r.attempts, max_attempts=r.max_attempts, timeout_s=float(r.timeout_s), owner=owner,
                requested_by=r.requested_by, partition=r.partition_fk,
            )
            for r in rows
        ]  # fmt: skip
        claimed.sort(key=lambda j: ids.index(j.id))
        return claimed

    def _any(self, stmt: Any) -> bool:
        """Whether a read-only query finds a row (a cheap look before a write transaction)."""
        with self.engine.connect() as conn:
            return conn.execute(stmt).first() is not None

    def _owned(self, job: ClaimedJob) -> Any:
        return and_(
            Job.id == job.id,
            Job.status == JobStatus.RUNNING.value,
            Job.lease_owner == job.owner,
            Job.attempts == job.attempt,
        )

    def held(self, job_id: int, owner: str, attempt: int) -> ClaimedJob:
        """The job ``owner`` holds the lease of for attempt ``attempt`` (an edge worker's, named in its
        request); :class:`LeaseLost` when it holds none (it expired and the job went to another attempt,
        or the job ended)."""
        with self.engine.connect() as conn:
            row = conn.execute(select(Job).where(Job.id == job_id)).first()
        if (row is None or row.status != JobStatus.RUNNING.value or row.lease_owner != owner
                or row.attempts != attempt):  # fmt: skip
            raise LeaseLost(f"job {job_id} is not held by {owner}")
        return ClaimedJob(
            id=row.id, kind=row.kind, target=row.target, target_version=row.target_version, study_uid=row.study_uid,
            generation=row.generation, dedupe_key=row.dedupe_key, payload=json.loads(row.payload_json or "{}"),
            attempt=row.attempts, max_attempts=row.max_attempts, timeout_s=float(row.timeout_s), owner=owner,
            requested_by=row.requested_by, partition=row.partition_fk,
        )  # fmt: skip

    def heartbeat(self, job: ClaimedJob, *, progress: float | None = None, message: str | None = None) -> bool:
        """Extend the lease (and record progress); ``False`` when the lease was lost."""
        now = self._clock()
        values: dict[str, Any] = {"lease_expires_at": now + timedelta(seconds=self.lease_s), "updated_at": now}
        if progress is not None:
            values["progress"] = max(0.0, min(1.0, progress))
        if message is not None:
            values["progress_message"] = message[:256]
        with write_transaction(self.engine) as conn:
            return bool(conn.execute(update(Job).where(self._owned(job)).values(**values)).rowcount)

    def complete(
        self,
        job: ClaimedJob,
        result: dict[str, Any] | None = None,
        *,
        also: Callable[[Connection], None] | None = None,
    ) -> None:
        """Mark the job succeeded; ``also`` writes the job's own records in the same transaction.

        Raises :class:`LeaseLost` (and writes nothing) when the lease is no longer this worker's.
        """
        now = self._clock()
        with write_transaction(self.engine) as conn:
            done = conn.execute(
                update(Job)
                .where(self._owned(job))
                .values(status=JobStatus.SUCCEEDED.value, finished_at=now, updated_at=now, progress=1.0,
                        progress_message="done", error="", result_json=json.dumps(result or {}, sort_keys=True),
                        lease_owner="", lease_expires_at=None)  # fmt: skip
            ).rowcount
            if not done:
                raise LeaseLost(f"job {job.id} is no longer held by {job.owner}")
            if also is not None:
                also(conn)

    def fail(self, job: ClaimedJob, error: str, *, retry: bool = True) -> JobStatus:
        """Record a failed attempt: retry after a backoff, or dead-letter when no attempts are left."""
        now = self._clock()
        error = error.strip() or "failed without a message"
        if retry and job.attempt < job.max_attempts:
            delay = backoff_delay(job.attempt, self.backoff_base_s, self.backoff_max_s)
            status = JobStatus.RETRYING
            values: dict[str, Any] = {"run_after": now + timedelta(seconds=delay)}
        else:
            status = JobStatus.FAILED
            values = {"finished_at": now}
        with write_transaction(self.engine) as conn:
            done = conn.execute(
                update(Job)
                .where(self._owned(job))
                .values(
                    status=status.value,
                    error=error[:8000],
                    updated_at=now,
                    lease_owner="",
                    lease_expires_at=None,
                    progress_message=f"attempt {job.attempt} failed",
                    **values,
                )
            ).rowcount
        if not done:
            raise LeaseLost(f"job {job.id} is no longer held by {job.owner}")
        return status

    def release(self, job: ClaimedJob, reason: str) -> None:
        """Give a claimed job back without counting the attempt (the worker is shutting down)."""
        now = self._clock()
        with write_transaction(self.engine) as conn:
            done = conn.execute(
                update(Job)
                .where(self._owned(job))
                .values(
                    status=JobStatus.RETRYING.value,
                    attempts=Job.attempts - 1,
                    run_after=now,
                    updated_at=now,
                    lease_owner="",
                    lease_expires_at=None,
                    progress_message=reason[:256],
                )
            ).rowcount
        if not done:
            raise LeaseLost(f"job {job.id} is no longer held by {job.owner}")

    def cancel_claimed(self, job: ClaimedJob, reason: str) -> None:
        """Give up a claimed job without running it (e.g. its plugin was disabled meanwhile)."""
        now = self._clock()
        with write_transaction(self.engine) as conn:
            conn.execute(
                update(Job)
                .where(self._owned(job))
                .values(
                    status=JobStatus.CANCELLED.value,
                    error=reason,
                    finished_at=now,
                    updated_at=now,
                    lease_owner="",
                    lease_expires_at=None,
                    progress_message="cancelled",
                )
            )

    def reap_expired(self) -> int:
        """Return jobs whose lease expired (their worker died) to the queue, or dead-letter them.

        The attempt is counted: a job that kills its worker every time fails after ``max_attempts``.
        """
        now = self._clock()
        expired = and_(Job.status == JobStatus.RUNNING.value, Job.lease_expires_at < now)
        lost = literal("the worker stopped during attempt ") + cast(Job.attempts, String) + literal(" (lease expired)")
        if not self._any(select(Job.id).where(expired).limit(1)):
            return 0
        n = 0
        with write_transaction(self.engine) as conn:
            n += conn.execute(
                update(Job)
                .where(expired, Job.attempts >= Job.max_attempts)
                .values(
                    status=JobStatus.FAILED.value,
                    error=lost,
                    finished_at=now,
                    updated_at=now,
                    lease_owner="",
                    lease_expires_at=None,
                )
            ).rowcount
            n += conn.execute(
                update(Job)
                .where(expired, Job.attempts < Job.max_attempts)
                .values(
                    status=JobStatus.RETRYING.value,
                    error=lost,
                    run_after=now,
                    updated_at=now,
                    lease_owner="",
                    lease_expires_at=None,
                )
            ).rowcount
        if n:
            log.warning("%d job lease(s) expired; requeued or dead-lettered", n)
        return n

    def cancel_pending(self, *, kind: str, target: str, target_version: str | None, reason: str,
                       partition: int | None = None) -> int:  # fmt: skip
        """Cancel queued and retrying jobs of one target (a disabled plugin never runs), in ``partition``
        only when given."""
        now = self._clock()
        cond = [Job.kind == kind, Job.target == target, Job.status.in_([s.value for s in CLAIMABLE])]
        if partition is not None:
            cond.append(Job.partition_fk == partition)
        if target_version is not None:
            cond.append(Job.target_version == target_version)
        with write_transaction(self.engine) as conn:
            return int(
                conn.execute(
                    update(Job)
                    .where(*cond)
                    .values(status=JobStatus.CANCELLED.value, error=reason, finished_at=now, updated_at=now)
                ).rowcount
            )

    def active_job(self, *, kind: str, target: str, target_version: str, study_uid: str,
                   partition: int = 1) -> JobView | None:  # fmt: skip
        """The queued, running or retrying job for this target and ``partition``'s study, if any."""
        with self.engine.connect() as conn:
            return active_job(conn, kind=kind, target=target, target_version=target_version, study_uid=study_uid,
                              partition=partition)  # fmt: skip


def active_job(conn: Connection, *, kind: str, target: str, target_version: str, study_uid: str,
               partition: int = 1) -> JobView | None:  # fmt: skip
    """The queued, running or retrying job for this target and ``partition``'s study, read in the caller's
    transaction."""
    stmt = (
        select(Job)
        .where(
            Job.kind == kind,
            Job.target == target,
            Job.target_version == target_version,
            Job.study_uid == study_uid,
            Job.partition_fk == partition,
            Job.status.in_([s.value for s in ACTIVE]),
        )
        .order_by(Job.id.desc())
        .limit(1)
    )
    row = conn.execute(stmt).first()
    return None if row is None else _view(row)


def next_due(engine: Engine, kinds: Sequence[str]) -> datetime | None:
    """When the next claimable job of ``kinds`` becomes due (lets an idle worker sleep precisely)."""
    with engine.connect() as conn:
        value = conn.execute(
            select(func.min(Job.run_after)).where(
                Job.kind.in_(list(kinds)),
                or_(*(Job.status == s.value for s in CLAIMABLE)),
            )
        ).scalar_one_or_none()
    return None if value is None else aware(value)
