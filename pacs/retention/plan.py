"""What a retention run would do now, changing nothing (``cloudfilm retention plan``).

Each study is matched against the rules in order (:func:`pacs.retention.rules.first_match`); a study
under a legal hold or with an unsigned report draft is listed as protected and nothing happens to
it. A delete rule marks a study first and deletes it on the first run after its grace period, if
it is still eligible then; a mark whose study no longer is (it was opened, held, the rule changed)
is dropped.
"""

from __future__ import annotations

from collections.abc import Collection, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from functools import partial

from sqlalchemy import ColumnElement, Connection, Engine, and_, exists, func, select

from pacs.access import DEFAULT_PARTITION, REJECTED
from pacs.accounts.tx import aware, aware_or_none
from pacs.index.models import Instance, Study, WithheldInstance
from pacs.rejection import KEY_OBJECT_SELECTION
from pacs.reports.models import ReportRow
from pacs.retention.holds import held
from pacs.retention.models import DeletionMark
from pacs.retention.rules import RetentionRule, StudyFacts, first_match
from pacs.storage.tiers import tier_key

_CHUNK = 500


class StepKind(StrEnum):
    MOVE = "move"  # the study's objects go to a tier
    MARK = "mark"  # a delete rule matched: deleted once its grace period is over
    WAIT = "wait"  # marked, the grace period is not over yet
    DELETE = "delete"  # marked and the grace period is over
    UNMARK = "unmark"  # marked, but no longer eligible: the mark is dropped
    PROTECTED = "protected"  # a rule matched, but a legal hold or a report draft protects the study


@dataclass(frozen=True, slots=True)
class Step:
    """One thing a run does (or would do) to one study."""

    kind: StepKind
    study_uid: str
    rule: str  # "" for an unmark whose study matches no rule now
    detail: str
    patient_id: str = ""
    study_date: str = ""
    instances: int = 0  # for a move: the objects not in the tier yet; else the study's
    size_bytes: int = 0
    tier: str | None = None
    delete_after: datetime | None = None
    partition: int = DEFAULT_PARTITION  # the partition the study (and the rule) belongs to


@dataclass(frozen=True, slots=True)
class _Study:
    id: int
    facts: StudyFacts
    patient_id: str
    instances: int
    size_bytes: int


def _rejected() -> ColumnElement[bool]:
    """The study (the outer query's row) holds rejected images and no image that is not: an IOCM
    rejection note withdrew all of it (the notes themselves, Key Object Selection documents, aside)."""
    rejected = select(WithheldInstance.sop_uid).where(WithheldInstance.reason == REJECTED,
                                                      WithheldInstance.study_uid == Study.study_uid,
                                                      WithheldInstance.partition_fk == Study.partition_fk)
    kept = select(Instance.id).where(Instance.study_fk == Study.id, Instance.sop_class_uid != KEY_OBJECT_SELECTION,
                                     Instance.sop_uid.not_in(rejected))  # fmt: skip
    return and_(exists(rejected), ~exists(kept))


def _studies(conn: Connection, partition: int) -> Iterator[_Study]:
    stmt = select(Study.id, Study.study_uid, Study.study_date, Study.created_at, Study.last_accessed_at,
                  Study.modalities, Study.patient_id, Study.instance_count, Study.size_bytes,
                  _rejected().label("rejected")).order_by(Study.id)
    # A partition's rules plan its own studies: another hospital's are never planned away.
    stmt = stmt.where(Study.partition_fk == partition)
    for row in conn.execute(stmt).yield_per(1000):
        facts = StudyFacts(row.study_uid, row.study_date or "", aware(row.created_at),
                           aware_or_none(row.last_accessed_at),
                           frozenset(m.upper() for m in (row.modalities or "").split("\\") if m),
                           rejected=bool(row.rejected))  # fmt: skip
        yield _Study(row.id, facts, row.patient_id or "", row.instance_count or 0, row.size_bytes or 0)


def drafted(conn: Connection, study_uids: Collection[str]) -> set[str]:
    """Which of ``study_uids`` have an unsigned report draft."""
    uids, found = list(study_uids), set[str]()
    for start in range(0, len(uids), _CHUNK):
        chunk = uids[start : start + _CHUNK]
        found.update(conn.execute(select(ReportRow.study_uid).where(ReportRow.status == "draft",
                                                                    ReportRow.study_uid.in_(chunk))).scalars())
    return found


def protection(conn: Connection, study_uids: Collection[str], partition: int = DEFAULT_PARTITION) -> dict[str, str]:
    """Why each protected study of ``study_uids`` (``partition``'s) is: ``"legal hold"`` or ``"unsigned
    report draft"`` (a draft on the same Study Instance UID in any partition protects it)."""
    reasons = dict.fromkeys(drafted(conn, study_uids), "unsigned report draft")
    reasons.update(dict.fromkeys(held(conn, study_uids, partition), "legal hold"))
    return reasons


def _left_to_move(conn: Connection, study_ids: Collection[int], tier: str) -> dict[int, tuple[int, int]]:
    """Per study: (objects, bytes) not in ``tier`` yet."""
    prefix = tier_key(tier, "")
    ids, out = list(study_ids), {}
    for start in range(0, len(ids), _CHUNK):
        stmt = (select(Instance.study_fk, func.count(Instance.id), func.coalesce(func.sum(Instance.size_bytes), 0))
                .where(Instance.study_fk.in_(ids[start : start + _CHUNK]),
                       ~Instance.object_key.startswith(prefix, autoescape=True))
                .group_by(Instance.study_fk))  # fmt: skip
        out.update({int(fk): (int(n), int(size)) for fk, n, size in conn.execute(stmt)})
    return out


def plan(engine: Engine, rules: list[RetentionRule], now: datetime,
         partitions: Mapping[str, int] | None = None) -> list[Step]:  # fmt: skip
    """Every step a run at ``now`` takes, partition by partition (each one's rules on its own studies and
    marks), in study order; marks first consulted, nothing written. ``partitions`` gives each slug's id
    (rules of a partition no longer configured wait)."""
    ids = {"default": DEFAULT_PARTITION} if partitions is None else partitions
    steps: list[Step] = []
    for slug, partition in sorted(ids.items(), key=lambda item: item[1]):
        mine = [r for r in rules if r.partition == slug]
        steps += _plan_partition(engine, mine, now, partition)
    return steps


def _plan_partition(engine: Engine, rules: list[RetentionRule], now: datetime, partition: int) -> list[Step]:
    with engine.connect() as conn:
        marks = {m.study_uid: m for m in conn.execute(select(*DeletionMark.__table__.c)
                                                      .where(DeletionMark.partition_fk == partition))}
        matched = [(s, rule) for s in _studies(conn, partition)
                   if (rule := first_match(rules, s.facts, now)) is not None]  # fmt: skip
        protected = protection(conn, [s.facts.study_uid for s, _ in matched], partition)
        moves: dict[str, dict[int, tuple[int, int]]] = {}
        for tier in {r.tier for _, r in matched if r.action == "tier" and r.tier}:
            moves[tier] = _left_to_move(conn, [s.id for s, r in matched if r.tier == tier], tier)
    steps: list[Step] = []
    for study, rule in matched:
        uid = study.facts.study_uid
        make = partial(Step, study_uid=uid, rule=rule.name, patient_id=study.patient_id,
                       study_date=study.facts.study_date, partition=partition)  # fmt: skip
        n, size = study.instances, study.size_bytes
        mark = marks.pop(uid, None)
        if uid in protected:
            if mark is not None:
                steps.append(make(StepKind.UNMARK, detail=f"protected by a {protected[uid]}"))
            steps.append(make(StepKind.PROTECTED, detail=protected[uid], instances=n, size_bytes=size))
        elif rule.action == "tier" and rule.tier is not None:
            if mark is not None:
                steps.append(make(StepKind.UNMARK, detail=f"rule {rule.name!r} moves it instead"))
            left = moves[rule.tier].get(study.id)
            if left is not None:
                steps.append(make(StepKind.MOVE, detail=f"{left[0]} object(s) to tier {rule.tier!r}",
                                  instances=left[0], size_bytes=left[1], tier=rule.tier))  # fmt: skip
        elif mark is None:
            after = now + timedelta(days=rule.grace_days)
            steps.append(make(StepKind.MARK, detail=f"deleted after {after:%Y-%m-%d %H:%M} UTC", delete_after=after,
                              instances=n, size_bytes=size))  # fmt: skip
        else:
            after = aware(mark.delete_after)
            kind = StepKind.DELETE if after <= now else StepKind.WAIT
            detail = (f"marked {aware(mark.marked_at):%Y-%m-%d} by rule {mark.rule!r}" if kind is StepKind.DELETE
                      else f"deleted after {after:%Y-%m-%d %H:%M} UTC")  # fmt: skip
            steps.append(make(kind, detail=detail, delete_after=after, instances=n, size_bytes=size))
    for uid, mark in marks.items():  # marked, but no rule matches the study now (or it is gone)
        steps.append(Step(StepKind.UNMARK, uid, "", f"rule {mark.rule!r} no longer matches the study",
                          partition=partition))  # fmt: skip
    return steps
