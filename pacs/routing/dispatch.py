"""Change feed → forwards → jobs, run on the worker's housekeeping thread.

Each rule reads the change feed after its cursor (``arrival``: created and updated instances;
``stable``: stable transitions, each standing for the instances of its study that the rule has not
forwarded since they were last stored) and writes a
pending forward for each instance it matches and each of its destinations, moving its cursor in
the same transaction by an update conditional on the cursor it read: two workers (on two nodes)
dispatching at once write each forward once, and a restart goes on from the cursor. A rule seen
for the first time starts after the newest event then in the feed: adding a rule does not send the
archive's past.

Then every *lane* (a destination and a study) with pending forwards and no active job gets one job
(``kind = "forward"``) that sends the lane's forwards oldest first, while the destination has
fewer than its ``concurrency`` jobs active (queued, running or waiting to retry).
"""

from __future__ import annotations

import io
import logging
import struct
import uuid
import zlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.errors import Conflict, NotFound
from pacs.events import EVENT_INSTANCE_REPLACED, EVENT_INSTANCE_STORED, Action, State, latest, read_feed
from pacs.index.db import utcnow
from pacs.index.models import Instance, OutboxEvent, Series, Study
from pacs.jobs import ACTIVE, Job, JobSpec, active_job, dedupe_key, enqueue, enqueue_lane_head, write_transaction
from pacs.routing.models import RoutingCursor, RoutingForward
from pacs.routing.rules import Candidate, Destination, Rule, matches
from pacs.storage import ObjectStore

log = logging.getLogger(__name__)

JOB_KIND = "forward"
_BATCH = 500
_META_PREFIX = 16 * 1024  # File Meta Information is read from the first bytes of the stored object
_TRIGGERS: dict[str, tuple[Action, ...]] = {"arrival": (Action.CREATE, Action.UPDATE), "stable": (Action.STABLE,)}


class ForwardStatus(StrEnum):
    PENDING = "pending"  # waiting for (or in) its lane's job
    SENT = "sent"  # the peer answered success (or a warning) for it
    DEAD = "dead"  # attempts ran out, or it can no longer be sent (``last_error`` says why)


def lane_job(destination: str, study_uid: str, head_id: int, *, max_attempts: int, timeout_s: float,
             run_after: datetime | None = None, after_job: int = 0) -> JobSpec:  # fmt: skip
    """The job that sends a lane from its oldest pending forward ``head_id`` on."""
    return JobSpec(kind=JOB_KIND, dedupe_key=dedupe_key(JOB_KIND, destination, study_uid, head_id, after_job),
                   target=destination, study_uid=study_uid, payload={"head": head_id},
                   max_attempts=max_attempts, timeout_s=timeout_s, run_after=run_after)  # fmt: skip


def job_timeout(dest: Destination) -> float:
    return max(3600.0, dest.timeout * 10)


def dispatch(engine: Engine, store: ObjectStore, rules: Sequence[Rule], destinations: dict[str, Destination],
             partitions: Mapping[str, int] | None = None) -> bool:  # fmt: skip
    """One round: new feed events into forwards, lanes without a job into jobs; whether a job was queued.

    ``partitions`` gives each partition slug's id: a rule follows its own partition's feed (a rule of a
    partition not configured any more waits)."""
    if not rules and not destinations:
        return False
    ids = {"default": DEFAULT_PARTITION} if partitions is None else partitions
    for rule in rules:
        partition = ids.get(rule.partition)
        if partition is not None:
            _collect(engine, store, rule, partition)
    return _start_lanes(engine, destinations)


def _insert(conn: Connection, table: Any) -> Any:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(table)


def _cursor(engine: Engine, rule: Rule, partition: int) -> int:
    with engine.connect() as conn:
        seq = conn.execute(select(RoutingCursor.last_seq).where(RoutingCursor.rule == rule.name)).scalar_one_or_none()
    if seq is not None:
        return int(seq)
    newest = latest(engine, AccessScope.everything(partition))
    with write_transaction(engine) as conn:
        conn.execute(_insert(conn, RoutingCursor).values(
            rule=rule.name, last_seq=newest.sequence if newest else 0, created_at=utcnow(), partition_fk=partition,
        ).on_conflict_do_nothing(index_elements=["rule"]))  # fmt: skip
        return int(conn.execute(select(RoutingCursor.last_seq).where(RoutingCursor.rule == rule.name)).scalar_one())


@dataclass(frozen=True, slots=True)
class _Indexed:
    sop_uid: str
    series_uid: str
    study_uid: str
    metadata_json: str
    object_key: str


def _instances(conn: Connection, partition: int, *, sop_uid: str | None = None,
               study_uid: str | None = None) -> list[_Indexed]:  # fmt: skip
    stmt = (select(Instance.sop_uid, Series.series_uid, Study.study_uid, Instance.metadata_json, Instance.object_key)
            .join(Series, Series.id == Instance.series_fk).join(Study, Study.id == Instance.study_fk))  # fmt: skip
    stmt = stmt.where(Instance.sop_uid == sop_uid) if sop_uid else stmt.where(Study.study_uid == study_uid)
    stmt = stmt.where(Study.partition_fk == partition)  # the rule's partition: never a twin UID in another
    return [_Indexed(*row) for row in conn.execute(stmt.order_by(Series.series_number, Instance.instance_number,
                                                                 Instance.id))]  # fmt: skip


def _forwarded_as_stored(conn: Connection, rule: str, study_uid: str, partition: int) -> set[str]:
    """Instances of the study this rule has forwarded since they were last stored or replaced: a study
    that becomes stable again (more instances arrived) sends only what is new or changed."""
    stored = (
        select(OutboxEvent.sop_uid, func.max(OutboxEvent.seq).label("seq"))
        .where(OutboxEvent.study_uid == study_uid, OutboxEvent.sop_uid != "", OutboxEvent.seq.is_not(None),
               OutboxEvent.event.in_([EVENT_INSTANCE_STORED, EVENT_INSTANCE_REPLACED]),
               OutboxEvent.partition_fk == partition)
        .group_by(OutboxEvent.sop_uid)
        .subquery()
    )  # fmt: skip
    forwarded = (
        select(RoutingForward.sop_uid, func.max(RoutingForward.seq).label("seq"))
        .where(RoutingForward.rule == rule, RoutingForward.study_uid == study_uid,
               RoutingForward.partition_fk == partition)
        .group_by(RoutingForward.sop_uid)
        .subquery()
    )
    return set(conn.execute(
        select(forwarded.c.sop_uid).join(stored, stored.c.sop_uid == forwarded.c.sop_uid)
        .where(forwarded.c.seq >= stored.c.seq)
    ).scalars())  # fmt: skip


def calling_ae(store: ObjectStore, object_key: str) -> str:
    """Source Application Entity Title (0002,0016) of a stored object: the AE that sent it by C-STORE."""
    try:
        head = store.get_range(object_key, 0, _META_PREFIX)
    except Exception as exc:  # an unreadable object matches no calling_ae rule; its send reports the failure
        log.warning("cannot read the File Meta Information of %s: %s", object_key, exc)
        return ""
    return source_ae_title(head)


def source_ae_title(head: bytes) -> str:
    """Source Application Entity Title from the first bytes of a Part 10 file ("" when absent)."""
    if len(head) < 132 or head[128:132] != b"DICM":
        return ""
    fp = io.BytesIO(head[132:])
    while True:  # group 0002 is always Explicit VR Little Endian (PS3.10 7.1)
        raw = fp.read(8)
        if len(raw) < 8:
            return ""
        group, element, vr = struct.unpack("<HH2s", raw[:6])
        if group != 0x0002:
            return ""
        if vr in (b"OB", b"OW", b"UN", b"UT", b"SQ", b"UC", b"UR"):
            more = fp.read(4)
            if len(more) < 4:
                return ""
            length = struct.unpack("<I", more)[0]
        else:
            length = struct.unpack("<H", raw[6:8])[0]
        value = fp.read(length)
        if element == 0x0016:
            return value.decode("ascii", "replace").strip(" \x00")


def _collect(engine: Engine, store: ObjectStore, rule: Rule, partition: int) -> None:
    last_seq = _cursor(engine, rule, partition)
    scope = AccessScope.everything(partition)
    while True:
        entries = read_feed(engine, since=last_seq, limit=_BATCH, actions=_TRIGGERS[rule.on], scope=scope)
        if not entries:
            return
        now = utcnow()
        rows: list[dict[str, Any]] = []
        with engine.connect() as conn:
            for entry in entries:
                if entry.state is not State.CURRENT:
                    continue  # deleted since, or replaced (its update event forwards the replacement)
                if entry.sop_uid:
                    found = _instances(conn, partition, sop_uid=entry.sop_uid)
                else:
                    found = _instances(conn, partition, study_uid=entry.study_uid)
                    sent = _forwarded_as_stored(conn, rule.name, entry.study_uid, partition)
                    found = [i for i in found if i.sop_uid not in sent]
                for inst in found:
                    ae = calling_ae(store, inst.object_key) if rule.needs_calling_ae else ""
                    if not matches(rule, Candidate(inst.metadata_json, ae)):
                        continue
                    rows += [{"rule": rule.name, "destination": dest, "seq": entry.sequence,
                              "study_uid": inst.study_uid, "series_uid": inst.series_uid, "sop_uid": inst.sop_uid,
                              "status": ForwardStatus.PENDING.value, "attempts": 0, "last_error": "",
                              "created_at": now, "partition_fk": partition} for dest in rule.to]  # fmt: skip
        upto = entries[-1].sequence
        with write_transaction(engine) as conn:
            moved = conn.execute(update(RoutingCursor).where(RoutingCursor.rule == rule.name,
                                                             RoutingCursor.last_seq == last_seq)
                                 .values(last_seq=upto)).rowcount  # fmt: skip
            if not moved:
                return  # another worker dispatched these
            if rows:
                conn.execute(_insert(conn, RoutingForward).on_conflict_do_nothing(
                    index_elements=["rule", "destination", "seq", "sop_uid"]), rows)  # fmt: skip
        if rows:
            log.info("routing rule %s: %d forward(s) from events %d..%d", rule.name, len(rows), last_seq + 1, upto)
        last_seq = upto
        if len(entries) < _BATCH:
            return


def _lock_destination(conn: Connection, name: str) -> None:
    """One lane starter per destination at a time (SQLite's write transaction already is one)."""
    if conn.dialect.name == "postgresql":
        conn.execute(select(func.pg_advisory_xact_lock((0x726F7574 << 32) | zlib.crc32(name.encode()))))


def active_jobs(conn: Connection, destination: str) -> int:
    return int(conn.execute(select(func.count()).select_from(Job).where(
        Job.kind == JOB_KIND, Job.target == destination, Job.status.in_([s.value for s in ACTIVE]))).scalar_one())


def _start_lanes(engine: Engine, destinations: dict[str, Destination]) -> bool:
    with engine.connect() as conn:
        lanes = conn.execute(
            select(RoutingForward.destination, RoutingForward.study_uid, func.min(RoutingForward.id).label("head"))
            .where(RoutingForward.status == ForwardStatus.PENDING.value)
            .group_by(RoutingForward.destination, RoutingForward.study_uid)
            .order_by(func.min(RoutingForward.id))
        ).all()  # fmt: skip
    by_destination: dict[str, list[str]] = {}
    for name, study_uid, _head in lanes:
        by_destination.setdefault(name, []).append(study_uid)
    queued = False
    for name, studies in by_destination.items():
        dest = destinations.get(name)
        if dest is None:
            continue  # no longer configured: its forwards wait (GET /api/routing lists them)
        with write_transaction(engine) as conn:
            _lock_destination(conn, name)
            room = dest.concurrency - active_jobs(conn, name)
            for study_uid in studies:
                if room <= 0:
                    break
                if active_job(conn, kind=JOB_KIND, target=name, target_version="", study_uid=study_uid):
                    continue
                started = _start_lane(conn, name, dest, study_uid)
                room -= started
                queued = queued or bool(started)
    return queued


def _start_lane(conn: Connection, name: str, dest: Destination, study_uid: str) -> int:
    """Queue the lane's job (1) or set its dead head aside (0)."""
    head = conn.execute(select(func.min(RoutingForward.id)).where(
        RoutingForward.destination == name, RoutingForward.study_uid == study_uid,
        RoutingForward.status == ForwardStatus.PENDING.value)).scalar_one_or_none()  # fmt: skip
    if head is None:
        return 0
    def job(after_job: int = 0) -> JobSpec:
        return lane_job(name, study_uid, int(head), max_attempts=dest.max_attempts, timeout_s=job_timeout(dest),
                        after_job=after_job)  # fmt: skip

    return int(enqueue_lane_head(conn, job(), again=job, dead=lambda error: mark_dead(conn, int(head), error)))


def mark_dead(conn: Connection, forward_id: int, error: str, status_code: int | None = None) -> None:
    """Set a pending forward aside (dead letter); the lane's later forwards go on."""
    values: dict[str, Any] = {"status": ForwardStatus.DEAD.value, "last_error": error[:2000]}
    if status_code is not None:
        values["status_code"] = status_code
    conn.execute(update(RoutingForward).where(RoutingForward.id == forward_id,
                                              RoutingForward.status == ForwardStatus.PENDING.value).values(**values))


def resend(engine: Engine, destinations: dict[str, Destination], *, forward_id: int | None = None,
           destination: str | None = None, partition: int | None = None) -> int:  # fmt: skip
    """An admin's re-send: one sent or dead forward (``forward_id``), or every dead forward of
    ``destination`` (of ``partition``'s forwards only, when given), becomes pending again with fresh
    attempts; how many did."""
    mine: Any = RoutingForward.id.is_not(None) if partition is None else RoutingForward.partition_fk == partition
    with write_transaction(engine) as conn:
        if forward_id is not None:
            row = conn.execute(select(RoutingForward.status, RoutingForward.destination)
                               .where(RoutingForward.id == forward_id, mine)).first()  # fmt: skip
            if row is None:
                raise NotFound("no such forward")
            if row.status == ForwardStatus.PENDING.value:
                raise Conflict("the forward is still pending: it is being sent")
            if row.destination not in destinations:
                raise Conflict(f"destination {row.destination!r} is no longer configured")
            cond: Any = RoutingForward.id == forward_id
        else:
            if destination not in destinations:
                raise NotFound(f"no destination {destination!r}")
            cond = (RoutingForward.destination == destination) & (RoutingForward.status == ForwardStatus.DEAD.value) \
                & mine
        lanes = conn.execute(select(RoutingForward.destination, RoutingForward.study_uid, func.min(RoutingForward.id))
                             .where(cond).group_by(RoutingForward.destination, RoutingForward.study_uid)).all()
        count = int(conn.execute(update(RoutingForward).where(cond).values(
            status=ForwardStatus.PENDING.value, attempts=0, sent_at=None)).rowcount)  # fmt: skip
        for name, study_uid, head in lanes:
            if active_job(conn, kind=JOB_KIND, target=name, target_version="", study_uid=study_uid):
                continue  # the lane's job reads its oldest pending forward before each send
            dest = destinations[name]
            # A key of its own: the jobs that sent (or dead-lettered) these forwards keep theirs.
            enqueue(conn, JobSpec(kind=JOB_KIND, dedupe_key=dedupe_key(JOB_KIND, "resend", uuid.uuid4().hex),
                                  target=name, study_uid=study_uid, payload={"head": int(head)},
                                  max_attempts=dest.max_attempts, timeout_s=job_timeout(dest)))  # fmt: skip
    return count
