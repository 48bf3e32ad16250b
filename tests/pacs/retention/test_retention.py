"""Retention rules: the plan lists the right studies and changes nothing; a run marks, waits out the
grace period and deletes through the one deletion path; legal holds and report drafts protect;
the last access of a study is stamped about hourly and counts for ``idle_days``."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from pacs.accounts.audit import Action, AuditEvent, AuditQuery, query, record
from pacs.accounts.principal import Principal
from pacs.archive import Archive
from pacs.events import EVENT_INSTANCE_DELETED
from pacs.index.db import utcnow
from pacs.index.models import Instance, OutboxEvent, Study
from pacs.jobs import aware
from pacs.rejection import RejectionNote, withhold
from pacs.reports import service as reports
from pacs.reports.types import DraftRequest, ReportSections
from pacs.retention import holds
from pacs.retention.last_access import STAMPS
from pacs.retention.models import DeletionMark
from pacs.retention.plan import StepKind, plan
from pacs.retention.rules import RetentionRule
from pacs.retention.run import run
from pacs.settings import Settings
from tests.factories import PATIENTS, make_ct_study
from tests.pacs.retention.conftest import OpenArchive, store

TODAY = utcnow().strftime("%Y%m%d")
DELETE_OLD_CT = RetentionRule(name="old-ct", action="delete", age_days=365, modalities=["CT"], grace_days=10)
MOVE_OLD_MR = RetentionRule(name="old-mr", action="tier", tier="cold", age_days=365, modalities=["MR"])
ADMIN = Principal(username="alice", role="admin", via="bearer")


def snapshot(archive: Archive) -> tuple[object, ...]:
    """Everything a run could change: rows, object keys, marks, the change feed, the objects."""
    with archive.engine.connect() as conn:
        keys = sorted(conn.execute(select(Instance.object_key)).scalars())
        studies = sorted(conn.execute(select(Study.study_uid)).scalars())
        marks = conn.execute(select(func.count()).select_from(DeletionMark)).scalar_one()
        events = conn.execute(select(func.count()).select_from(OutboxEvent)).scalar_one()
    return keys, studies, marks, events, sorted(o.key for o in archive.store.list())


def steps_by_study(archive: Archive, rules: list[RetentionRule], days: float = 0) -> dict[str, StepKind]:
    return {s.study_uid: s.kind for s in plan(archive.engine, rules, utcnow() + timedelta(days=days))}


def test_plan_lists_the_right_studies_and_changes_nothing(open_archive: OpenArchive) -> None:
    rules = [DELETE_OLD_CT, MOVE_OLD_MR]
    archive = open_archive(rules)
    old_ct = make_ct_study(PATIENTS[0], n_slices=2, rows=8, cols=8, seed=101, study_date="20150301")
    new_ct = make_ct_study(PATIENTS[1], n_slices=2, rows=8, cols=8, seed=102, study_date=TODAY)
    old_mr = make_ct_study(PATIENTS[2], n_slices=2, rows=8, cols=8, seed=103, study_date="20150301", modality="MR")
    undated = make_ct_study(PATIENTS[3], n_slices=1, rows=8, cols=8, seed=104, study_date="20150301")
    for ds in undated:
        del ds.StudyDate
    store(archive, old_ct + new_ct + old_mr + undated)
    before = snapshot(archive)

    steps = plan(archive.engine, rules, utcnow())

    assert [(s.kind, s.study_uid, s.rule) for s in steps] == [
        (StepKind.MARK, old_ct[0].StudyInstanceUID, "old-ct"),
        (StepKind.MOVE, old_mr[0].StudyInstanceUID, "old-mr"),
    ]  # a study without a StudyDate is as old as its arrival: today
    assert steps[1].instances == 2 and steps[1].tier == "cold"
    assert steps[0].delete_after is not None and steps[0].delete_after > utcnow() + timedelta(days=9)
    assert snapshot(archive) == before
    # A year on, the undated study is old by its arrival too.
    assert steps_by_study(archive, rules, days=400)[undated[0].StudyInstanceUID] is StepKind.MARK


def test_run_deletes_only_eligible_studies_after_the_grace_period(open_archive: OpenArchive) -> None:
    rules = [DELETE_OLD_CT]
    archive = open_archive(rules)
    doomed, held, drafted, young = (
        make_ct_study(PATIENTS[i], n_slices=2, rows=8, cols=8, seed=110 + i,
                      study_date="20150301" if i < 3 else TODAY) for i in range(4))  # fmt: skip
    store(archive, doomed + held + drafted + young)
    uid = {name: ds[0].StudyInstanceUID for name, ds in
           (("doomed", doomed), ("held", held), ("drafted", drafted), ("young", young))}  # fmt: skip
    now = utcnow()

    first = run(archive.engine, archive.store, archive.settings, now)
    assert first.counts == {"mark": 3} and not first.errors
    holds.set_hold(archive.engine, ADMIN, uid["held"], "case 2026-17")
    reports.create_draft(archive, Principal(username="doc", role="physician", via="bearer"), uid["drafted"],
                         DraftRequest(sections=ReportSections(findings="Pending.")), citable=[])  # fmt: skip
    assert run(archive.engine, archive.store, archive.settings, now + timedelta(days=5)).counts == {"unmark": 2}
    kinds = steps_by_study(archive, rules, days=5)
    assert kinds == {uid["doomed"]: StepKind.WAIT, uid["held"]: StepKind.PROTECTED,
                     uid["drafted"]: StepKind.PROTECTED}  # fmt: skip
    keys = doomed_keys = _keys(archive, uid["doomed"])
    assert all(archive.store.head(k) is not None for k in keys)

    last = run(archive.engine, archive.store, archive.settings, now + timedelta(days=11))

    assert last.counts == {"delete": 1} and not last.errors
    with archive.engine.connect() as conn:
        left = set(conn.execute(select(Study.study_uid)).scalars())
        deleted = conn.execute(select(func.count()).select_from(OutboxEvent).where(
            OutboxEvent.event == EVENT_INSTANCE_DELETED, OutboxEvent.study_uid == uid["doomed"])).scalar_one()
        marks = conn.execute(select(func.count()).select_from(DeletionMark)).scalar_one()
    assert left == {uid["held"], uid["drafted"], uid["young"]}
    assert deleted == 2 and marks == 0
    assert all(archive.store.head(k) is None for k in doomed_keys)
    trail = query(archive.engine, AuditQuery(study_uids=frozenset([uid["doomed"]])))
    assert [e.action for e in trail if e.username == "retention"] == [Action.DELETE, Action.RETENTION]
    assert "old-ct" in trail[0].detail


def test_a_hold_is_set_cleared_and_audited(open_archive: OpenArchive) -> None:
    archive = open_archive([DELETE_OLD_CT])
    study = make_ct_study(PATIENTS[0], n_slices=1, rows=8, cols=8, seed=120, study_date="20150301")
    store(archive, study)
    uid = study[0].StudyInstanceUID
    holds.set_hold(archive.engine, ADMIN, uid, "litigation")
    assert steps_by_study(archive, [DELETE_OLD_CT]) == {uid: StepKind.PROTECTED}
    holds.clear_hold(archive.engine, ADMIN, uid)
    assert steps_by_study(archive, [DELETE_OLD_CT]) == {uid: StepKind.MARK}
    trail = query(archive.engine, AuditQuery(study_uids=frozenset([uid])))
    assert [(e.action, e.username, e.detail) for e in trail] == [
        (Action.LEGAL_HOLD, "alice", "hold cleared"), (Action.LEGAL_HOLD, "alice", "hold set: litigation")]


def test_idle_days_count_from_the_last_access_stamped_at_most_hourly(open_archive: OpenArchive) -> None:
    idle = RetentionRule(name="idle", action="delete", idle_days=30, grace_days=0)
    archive = open_archive([idle])
    study = make_ct_study(PATIENTS[0], n_slices=1, rows=8, cols=8, seed=130, study_date=TODAY)
    store(archive, study)
    uid = study[0].StudyInstanceUID
    STAMPS.forget(uid)
    assert steps_by_study(archive, [idle], days=40) == {uid: StepKind.MARK}  # never opened: idle since arrival

    opened = utcnow() + timedelta(days=20)
    record(archive.engine, AuditEvent(Action.VIEW, username="doc", study_uid=uid, at=opened))
    record(archive.engine, AuditEvent(Action.VIEW, username="doc", study_uid=uid, at=opened + timedelta(minutes=30)))
    assert _last_access(archive, uid) == opened  # the second view within the hour wrote nothing
    assert steps_by_study(archive, [idle], days=40) == {}
    record(archive.engine, AuditEvent(Action.SEARCH, username="doc", study_uid=uid, at=opened + timedelta(days=2)))
    assert _last_access(archive, uid) == opened  # a search is not an access
    assert steps_by_study(archive, [idle], days=51) == {uid: StepKind.MARK}


def test_rules_need_an_age_or_idle_condition_and_known_tiers() -> None:
    with pytest.raises(ValueError, match="needs age_days or idle_days"):
        RetentionRule(name="everything", action="delete", modalities=["CT"])
    with pytest.raises(ValueError, match="unknown tier"):
        Settings(retention_rules=[MOVE_OLD_MR])


def _keys(archive: Archive, study_uid: str) -> list[str]:
    with archive.engine.connect() as conn:
        return list(conn.execute(select(Instance.object_key).join(Study, Study.id == Instance.study_fk)
                                 .where(Study.study_uid == study_uid)).scalars())  # fmt: skip


def _last_access(archive: Archive, study_uid: str) -> datetime | None:
    with archive.engine.connect() as conn:
        value = conn.execute(select(Study.last_accessed_at).where(Study.study_uid == study_uid)).scalar_one()
    return None if value is None else aware(value)


def test_rejected_studies_by_the_rejection_condition(open_archive: OpenArchive) -> None:
    """``rejected = true`` picks a study an IOCM rejection note withdrew entirely, not one with only
    some images rejected; ``rejected = false`` leaves the withdrawn one out."""
    purge = RetentionRule(name="purge-rejected", action="delete", age_days=0, rejected=True, grace_days=0)
    keep_rest = RetentionRule(name="old-not-rejected", action="delete", age_days=0, rejected=False)
    archive = open_archive([purge])
    whole = make_ct_study(PATIENTS[0], n_slices=2, rows=8, cols=8, seed=170, study_date="20150301")
    part = make_ct_study(PATIENTS[1], n_slices=2, rows=8, cols=8, seed=171, study_date="20150301")
    clean = make_ct_study(PATIENTS[2], n_slices=2, rows=8, cols=8, seed=172, study_date="20150301")
    store(archive, whole + part + clean)
    for rejected in (whole, part[:1]):
        withhold(archive.engine, RejectionNote(
            note_uid=f"2.25.{rejected[0].SOPInstanceUID.split('.')[-1]}", code_value="113001",
            code_meaning="Rejected for Quality Reasons",
            references=tuple((str(d.StudyInstanceUID), str(d.SeriesInstanceUID), str(d.SOPInstanceUID))
                             for d in rejected)), grace_s=86400)  # fmt: skip
    assert steps_by_study(archive, [purge]) == {whole[0].StudyInstanceUID: StepKind.MARK}
    assert set(steps_by_study(archive, [keep_rest])) == {part[0].StudyInstanceUID, clean[0].StudyInstanceUID}
