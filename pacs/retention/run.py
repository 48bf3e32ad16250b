"""Doing what :func:`pacs.retention.plan.plan` lists (``cloudfilm retention run``, the nightly job).

Each step is audited: moves and (un)marks as ``retention``, deletions as ``delete`` through the one
deletion path (:func:`pacs.delete.delete_instances`: index rows, the change feed's
``instance.deleted`` events and the objects stay consistent), which takes a last look at the
study's legal hold and report drafts with the study's row locked. A step that fails is logged and
counted; the run goes on with the next study, and the next run tries it again.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import Connection, Engine, delete, select
from sqlalchemy.dialects import postgresql, sqlite

from pacs.access import AccessScope
from pacs.accounts.audit import Action, AuditEvent, record
from pacs.delete import delete_instances
from pacs.errors import CloudfilmError, Conflict, NotFound
from pacs.jobs import write_transaction
from pacs.retention.models import DeletionMark
from pacs.retention.plan import Step, StepKind, plan, protection
from pacs.retention.tiering import move_study
from pacs.settings import Settings
from pacs.storage import ObjectStore

log = logging.getLogger(__name__)

#: Who the audit trail names for what the rules do.
ACTOR = "retention"


@dataclass
class RunReport:
    """What a run did: studies per step kind, objects and bytes moved, and the failures."""

    counts: dict[str, int] = field(default_factory=dict)
    moved_objects: int = 0
    moved_bytes: int = 0
    errors: list[str] = field(default_factory=list)
    stopped: bool = False

    def as_dict(self) -> dict[str, object]:
        return {"counts": dict(sorted(self.counts.items())), "moved_objects": self.moved_objects,
                "moved_bytes": self.moved_bytes, "errors": self.errors[:50], "stopped": self.stopped}  # fmt: skip


def _audit(engine: Engine, action: Action, step: Step, detail: str, *, source: str) -> None:
    record(engine, AuditEvent(action=action, username=ACTOR, study_uid=step.study_uid, partition=step.partition,
                              patient_id=step.patient_id, source=source, detail=detail))  # fmt: skip


def run(engine: Engine, store: ObjectStore, settings: Settings, now: datetime, *, source: str = "worker",
        stopping: Callable[[], bool] = lambda: False, progress: Callable[[float, str], None] | None = None,
        partitions: Mapping[str, int] | None = None) -> RunReport:  # fmt: skip
    """Take every step of the plan at ``now`` (every partition's rules on its own studies, ``partitions``
    giving each slug's id); ``source`` is recorded in the audit trail (``cli``, ``worker``)."""
    steps = [s for s in plan(engine, settings.retention_rules, now, partitions) if s.kind is not StepKind.PROTECTED]
    report = RunReport()
    for i, step in enumerate(steps):
        if stopping():
            report.stopped = True
            break
        if progress is not None:
            progress(i / max(1, len(steps)), f"{step.kind.value} {step.study_uid}")
        try:
            done = _take(engine, store, step, now, source=source, stopping=stopping, report=report)
        except CloudfilmError as exc:
            log.warning("retention: %s of study %s failed: %s", step.kind.value, step.study_uid, exc)
            report.errors.append(f"{step.kind.value} {step.study_uid}: {exc}")
            continue
        if done:
            report.counts[step.kind.value] = report.counts.get(step.kind.value, 0) + 1
    return report


def _take(engine: Engine, store: ObjectStore, step: Step, now: datetime, *, source: str,
          stopping: Callable[[], bool], report: RunReport) -> bool:  # fmt: skip
    """Take one step; whether it changed anything."""
    if step.kind is StepKind.MOVE and step.tier is not None:
        moved = move_study(engine, store, step.study_uid, step.tier, stopping=stopping, partition=step.partition)
        report.moved_objects += moved.objects
        report.moved_bytes += moved.size_bytes
        report.stopped = report.stopped or moved.stopped
        if moved.objects:
            _audit(engine, Action.RETENTION, step, f"rule {step.rule!r}: moved {moved.objects} object(s), "
                   f"{moved.size_bytes} bytes, to tier {step.tier!r}", source=source)  # fmt: skip
        return moved.objects > 0
    if step.kind is StepKind.MARK and step.delete_after is not None:
        with write_transaction(engine) as conn:
            insert = postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert
            added = conn.execute(insert(DeletionMark).values(
                study_uid=step.study_uid, rule=step.rule, marked_at=now, delete_after=step.delete_after,
                partition_fk=step.partition,
            ).on_conflict_do_nothing(index_elements=["partition_fk", "study_uid"])).rowcount  # fmt: skip
        if added:
            _audit(engine, Action.RETENTION, step, f"rule {step.rule!r}: marked for deletion, {step.detail}",
                   source=source)  # fmt: skip
        return bool(added)
    if step.kind is StepKind.UNMARK:
        with write_transaction(engine) as conn:
            gone = conn.execute(delete(DeletionMark).where(DeletionMark.study_uid == step.study_uid,
                                                           DeletionMark.partition_fk == step.partition)).rowcount
        if gone:
            _audit(engine, Action.RETENTION, step, f"deletion mark dropped: {step.detail}", source=source)
        return bool(gone)
    if step.kind is StepKind.DELETE:
        return _delete(engine, store, step, now, source=source)
    return False  # WAIT


def _delete(engine: Engine, store: ObjectStore, step: Step, now: datetime, *, source: str) -> bool:
    def refuse(conn: Connection) -> str | None:
        mark = conn.execute(select(DeletionMark.delete_after).where(
            DeletionMark.study_uid == step.study_uid, DeletionMark.partition_fk == step.partition)).first()
        if mark is None:
            return "its deletion mark was dropped meanwhile"
        why = protection(conn, [step.study_uid], step.partition).get(step.study_uid)
        return f"it is protected by a {why}" if why else None

    try:
        result = delete_instances(engine, store, AccessScope.everything(step.partition), study_uid=step.study_uid,
                                  refuse=refuse)  # fmt: skip
    except Conflict as exc:  # held or drafted since the plan: the next run drops the mark
        log.info("retention: study %s not deleted: %s", step.study_uid, exc)
        return False
    except NotFound:
        result = None  # deleted by somebody else meanwhile: only the mark is left to drop
    with write_transaction(engine) as conn:
        conn.execute(delete(DeletionMark).where(DeletionMark.study_uid == step.study_uid,
                                                DeletionMark.partition_fk == step.partition))
    if result is None:
        return False
    _audit(engine, Action.DELETE, step, f"retention rule {step.rule!r} ({step.detail}): {result.instances} "
           f"instance(s) deleted", source=source)  # fmt: skip
    return True
