"""Corrections with history: update patient and study attributes, merge patients, move a study, revert.

Every correction follows one order, so that a crash anywhere leaves the archive as it was:

1. each affected object is read, rewritten with the new values (:mod:`pacs.corrections.rewrite`),
   and staged through the ingest path (:meth:`pacs.ingest.IngestService.stage_rewrite`: parsed,
   validated, hashed, stored under its new key, its index record built); the object it replaces is
   copied under ``_versions/``;
2. one transaction writes the correction row, a version row per instance, swaps the index rows to
   the new objects (:func:`pacs.index.swap.swap_rows`), moves patient account links along with a
   patient whose key changed, and records the audit event with the values before and after;
3. only then are the replaced objects' old keys removed (their bytes live on under ``_versions/``).

A failure before the commit rolls the transaction back and deletes what step 1 wrote, so neither the
index nor the store holds anything of the correction; a process killed there leaves unnamed objects
that ``cloudfilm fsck --repair`` removes. A revert is itself a correction: it stages the kept bytes
of the versions an earlier correction replaced.

A correction works in one partition (:mod:`pacs.partitions`), the caller's: it finds the patient or
study there, rewrites that partition's objects (under its key prefix) and records its correction and
versions there, so a twin study with the same UIDs in another partition is never touched, listed or
reverted.
"""

from __future__ import annotations

import hashlib
import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, delete, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection

from pacs.access import DEFAULT_PARTITION
from pacs.accounts.audit import Action
from pacs.accounts.models import AuditRow, PatientLink, User
from pacs.archive import Archive
from pacs.corrections.models import CorrectionRow, InstanceVersionRow
from pacs.corrections.rewrite import PATIENT_ATTRIBUTES, rewrite
from pacs.corrections.types import (
    Actor,
    CorrectionView,
    Kind,
    PatientChanges,
    PatientKey,
    StudyChanges,
    Unchanged,
    VersionView,
)
from pacs.errors import CloudfilmError, Conflict, InvalidQuery, NotFound
from pacs.index.db import utcnow
from pacs.index.models import Instance, Patient, Series, Study
from pacs.index.swap import PatientMove, Rewritten, swap_rows
from pacs.jobs import aware, write_transaction
from pacs.partitions import Partition
from pacs.storage.keys import check_key

log = logging.getLogger(__name__)

#: Objects of earlier versions: ``_versions/{study}/{series}/{sop}.{token}.dcm`` (``token`` per correction).
VERSION_PREFIX = "_versions/"


@dataclass(frozen=True, slots=True)
class _Target:
    """One stored instance a correction rewrites, and how: ``transform`` maps its bytes to the new ones."""

    sop_uid: str
    study_uid: str
    series_uid: str
    object_key: str
    transform: Callable[[bytes], bytes]


@dataclass(frozen=True, slots=True)
class _Staged:
    target: _Target
    version_key: str
    size: int
    sha256: str
    rewritten: Rewritten


# --- the corrections ---------------------------------------------------------------------------


def update_patient(archive: Archive, actor: Actor, patient: PatientKey, changes: PatientChanges, *,
                   source: str = "api", partition: int = DEFAULT_PARTITION) -> CorrectionView:  # fmt: skip
    """Set patient attributes in every object of the patient's studies (PatientID too: its key)."""
    values = changes.values()
    if not values:
        raise InvalidQuery("name at least one patient attribute to change")
    if values.get("PatientID", patient.patient_id) == "":
        raise InvalidQuery("a PatientID cannot be emptied")
    with archive.engine.connect() as conn:
        before = _patient_values(conn, partition, patient)
        new_key = PatientKey(values.get("PatientID", patient.patient_id),
                             values.get("IssuerOfPatientID", patient.issuer))
        if new_key != patient and _patient_row(conn, partition, new_key) is not None:
            raise Conflict(f"patient {new_key} already exists: merge the two patients instead")
        targets = _targets(conn, partition, Study.patient_fk == _patient_row(conn, partition, patient),
                           lambda data: rewrite(data, values))
    after = before | values
    return _apply(archive, partition, actor, Kind.UPDATE_PATIENT, f"patient {patient}", before, after, targets,
                  source=source)


def update_study(archive: Archive, actor: Actor, study_uid: str, changes: StudyChanges, *,
                 source: str = "api", partition: int = DEFAULT_PARTITION) -> CorrectionView:  # fmt: skip
    """Set study attributes (AccessionNumber, StudyDescription) in every object of the study."""
    values = changes.values()
    if not values:
        raise InvalidQuery("name at least one study attribute to change")
    with archive.engine.connect() as conn:
        study = conn.execute(select(Study.accession_number, Study.study_description)
                             .where(Study.partition_fk == partition, Study.study_uid == study_uid)).first()  # fmt: skip
        if study is None:
            raise NotFound("no such study")
        targets = _targets(conn, partition, Study.study_uid == study_uid, lambda data: rewrite(data, values))
    before = {"AccessionNumber": study.accession_number, "StudyDescription": study.study_description}
    return _apply(archive, partition, actor, Kind.UPDATE_STUDY, f"study {study_uid}", before, before | values, targets,
                  source=source)


def merge_patients(archive: Archive, actor: Actor, source_patient: PatientKey, target: PatientKey, *,
                   source: str = "api", partition: int = DEFAULT_PARTITION) -> CorrectionView:  # fmt: skip
    """File every study of ``source_patient`` under ``target`` (its demographics written into them);
    ``source_patient`` then has no studies and is removed (HL7 ADT^A40)."""
    if source_patient == target:
        raise InvalidQuery("a patient cannot be merged into itself")
    with archive.engine.connect() as conn:
        before = _patient_values(conn, partition, source_patient)
        after = _patient_values(conn, partition, target)
        targets = _targets(conn, partition, Study.patient_fk == _patient_row(conn, partition, source_patient),
                           lambda data: rewrite(data, after))
    return _apply(archive, partition, actor, Kind.MERGE_PATIENTS, f"patient {source_patient} into {target}", before,
                  after, targets, source=source)


def move_study(archive: Archive, actor: Actor, study_uid: str, target: PatientKey, *,
               source: str = "api", partition: int = DEFAULT_PARTITION) -> CorrectionView:  # fmt: skip
    """File one study under another patient (that patient's demographics written into its objects)."""
    with archive.engine.connect() as conn:
        study = conn.execute(select(Study.patient_id, Study.issuer).where(
            Study.partition_fk == partition, Study.study_uid == study_uid)).first()
        if study is None:
            raise NotFound("no such study")
        if PatientKey(study.patient_id, study.issuer) == target:
            raise Unchanged(f"study {study_uid} is already filed under patient {target}")
        before = _patient_values(conn, partition, PatientKey(study.patient_id, study.issuer))
        after = _patient_values(conn, partition, target)
        targets = _targets(conn, partition, Study.study_uid == study_uid, lambda data: rewrite(data, after))
    return _apply(archive, partition, actor, Kind.MOVE_STUDY, f"study {study_uid} to patient {target}", before, after,
                  targets, source=source)


def revert(archive: Archive, actor: Actor, correction_id: int, *, source: str = "api",
           partition: int = DEFAULT_PARTITION) -> CorrectionView:
    """Put back the objects ``partition``'s correction ``correction_id`` replaced (of the instances that
    still exist)."""
    original = get_correction(archive.engine, correction_id, partition=partition)
    with archive.engine.connect() as conn:
        versions = {v.sop_uid: v.object_key for v in conn.execute(
            select(InstanceVersionRow.sop_uid, InstanceVersionRow.object_key)
            .where(InstanceVersionRow.correction_id == correction_id))}  # fmt: skip
        targets = [t for t in _targets(conn, partition, Instance.sop_uid.in_(sorted(versions)), lambda data: data)]
    store = archive.store

    def restore(key: str) -> Callable[[bytes], bytes]:
        return lambda _current: store.get_bytes(key)

    targets = [_Target(t.sop_uid, t.study_uid, t.series_uid, t.object_key, restore(versions[t.sop_uid]))
               for t in targets]  # fmt: skip
    if not targets:
        raise Conflict(f"no instance correction {correction_id} changed is still in the archive")
    return _apply(archive, partition, actor, Kind.REVERT, f"correction {correction_id} ({original.target})",
                  original.after, original.before, targets, source=source, reverts_id=correction_id)


# --- reading ------------------------------------------------------------------------------------


def list_corrections(engine: Engine, *, study_uid: str | None = None, limit: int = 100, offset: int = 0,
                     partition: int = DEFAULT_PARTITION) -> list[CorrectionView]:  # fmt: skip
    stmt = (select(CorrectionRow).where(CorrectionRow.partition_fk == partition)
            .order_by(CorrectionRow.id.desc()).limit(limit).offset(offset))
    if study_uid is not None:  # the JSON list holds quoted UIDs
        stmt = stmt.where(CorrectionRow.study_uids.like(f'%"{study_uid}"%'))
    with engine.connect() as conn:
        return [_view(row) for row in conn.execute(stmt)]


def get_correction(engine: Engine, correction_id: int, *, partition: int = DEFAULT_PARTITION) -> CorrectionView:
    with engine.connect() as conn:
        row = conn.execute(select(CorrectionRow).where(CorrectionRow.id == correction_id,
                                                       CorrectionRow.partition_fk == partition)).first()
    if row is None:
        raise NotFound("no such correction")
    return _view(row)


def versions_of(engine: Engine, *, correction_id: int | None = None, sop_uid: str | None = None,
                partition: int = DEFAULT_PARTITION) -> list[VersionView]:
    stmt = (select(InstanceVersionRow).where(InstanceVersionRow.partition_fk == partition)
            .order_by(InstanceVersionRow.sop_uid, InstanceVersionRow.version))
    if correction_id is not None:
        stmt = stmt.where(InstanceVersionRow.correction_id == correction_id)
    if sop_uid is not None:
        stmt = stmt.where(InstanceVersionRow.sop_uid == sop_uid)
    with engine.connect() as conn:
        return [VersionView(r.sop_uid, r.version, r.study_uid, r.series_uid, r.object_key, r.size_bytes, r.sha256,
                            r.correction_id, aware(r.created_at)) for r in conn.execute(stmt)]  # fmt: skip


def patient_exists(engine: Engine, key: PatientKey, *, partition: int = DEFAULT_PARTITION) -> bool:
    with engine.connect() as conn:
        return _patient_row(conn, partition, key) is not None


def _view(row: Any) -> CorrectionView:
    return CorrectionView(row.id, row.kind, row.source, row.actor, row.target, row.reverts_id,
                          json.loads(row.before_json), json.loads(row.after_json), row.instance_count,
                          json.loads(row.study_uids), aware(row.created_at))  # fmt: skip


# --- the one way a correction is made ------------------------------------------------------------


def _patient_row(conn: Connection, partition: int, key: PatientKey) -> int | None:
    return conn.execute(select(Patient.id).where(Patient.partition_fk == partition,
                                                 Patient.patient_id == key.patient_id,
                                                 Patient.issuer == key.issuer)).scalar_one_or_none()  # fmt: skip


def _patient_values(conn: Connection, partition: int, key: PatientKey) -> dict[str, str]:
    row = conn.execute(select(Patient.patient_name, Patient.patient_id, Patient.issuer, Patient.birth_date,
                              Patient.sex).where(Patient.partition_fk == partition,
                                                 Patient.patient_id == key.patient_id,
                                                 Patient.issuer == key.issuer)).first()  # fmt: skip
    if row is None:
        raise NotFound(f"no such patient: {key}")
    return dict(zip(PATIENT_ATTRIBUTES, row, strict=True))


def _targets(conn: Connection, partition: int, where: Any, transform: Callable[[bytes], bytes]) -> list[_Target]:
    rows = conn.execute(
        select(Instance.sop_uid, Study.study_uid, Series.series_uid, Instance.object_key)
        .join(Study, Study.id == Instance.study_fk).join(Series, Series.id == Instance.series_fk)
        .where(Study.partition_fk == partition, where)
        .order_by(Study.study_uid, Series.series_uid, Instance.sop_uid)).all()  # fmt: skip
    if not rows:
        raise NotFound("no stored instance to correct")
    return [_Target(r.sop_uid, r.study_uid, r.series_uid, r.object_key, transform) for r in rows]


def _apply(archive: Archive, partition: int, actor: Actor, kind: Kind, target: str, before: dict[str, Any],
           after: dict[str, Any], targets: Sequence[_Target], *, source: str,
           reverts_id: int | None = None) -> CorrectionView:  # fmt: skip
    token = uuid.uuid4().hex[:16]
    written: list[str] = []
    into = archive.partitions.by_id(partition)
    if into is None:
        raise NotFound("the partition is no longer configured")
    try:
        staged = _stage(archive, into, targets, token, written)
        if not staged:
            raise Unchanged("the stored objects already hold these values; nothing was changed")
        correction_id = _commit(archive.engine, partition, actor, kind, target, before, after, staged, source=source,
                                reverts_id=reverts_id)  # fmt: skip
    except BaseException:
        _remove(archive, written)
        raise
    _remove(archive, [s.target.object_key for s in staged if s.target.object_key != s.rewritten.record.object_key])
    log.info("correction %d (%s, %s): %d instance(s) rewritten", correction_id, kind.value, target, len(staged))
    return get_correction(archive.engine, correction_id, partition=partition)


def _stage(archive: Archive, partition: Partition, targets: Sequence[_Target], token: str,
           written: list[str]) -> list[_Staged]:
    """Step 1: the new objects and the copies of the replaced ones, stored; ``written`` names them all."""
    store = archive.store
    staged: list[_Staged] = []
    for t in targets:
        old = store.get_bytes(t.object_key)
        new = t.transform(old)
        if new == old:
            continue
        version_key = check_key(f"{VERSION_PREFIX}{partition.key_prefix}{t.study_uid}/{t.series_uid}/"
                                f"{t.sop_uid}.{token}.dcm")
        written.append(version_key)
        store.put_bytes(version_key, old)
        result = archive.ingest.stage_rewrite(new, f"correction of {t.sop_uid}", partition)
        if result.key != t.object_key:
            written.append(result.key)
        if (result.record.study.study_uid, result.record.series.series_uid) != (t.study_uid, t.series_uid):
            raise Conflict(f"the rewritten {t.sop_uid} names another study or series")
        staged.append(_Staged(t, version_key, len(old), _sha256(old), Rewritten(result.record, t.object_key)))
    return staged


def _commit(engine: Engine, partition: int, actor: Actor, kind: Kind, target: str, before: dict[str, Any],
            after: dict[str, Any], staged: Sequence[_Staged], *, source: str,
            reverts_id: int | None) -> int:  # fmt: skip
    """Step 2: the correction, its versions, the swapped rows and the audit event, in one transaction."""
    now = utcnow()
    studies = sorted({s.target.study_uid for s in staged})
    with write_transaction(engine) as conn:
        correction_id = conn.execute(insert(CorrectionRow).values(
            partition_fk=partition, kind=kind.value, source=source[:16], actor=actor.name[:64], target=target[:256],
            reverts_id=reverts_id,
            before_json=json.dumps(before, sort_keys=True), after_json=json.dumps(after, sort_keys=True),
            instance_count=len(staged), study_uids=json.dumps(studies), created_at=now,
        ).returning(CorrectionRow.id)).scalar_one()  # fmt: skip
        sops = [s.target.sop_uid for s in staged]
        latest: dict[str, int] = {sop: n for sop, n in conn.execute(
            select(InstanceVersionRow.sop_uid, func.max(InstanceVersionRow.version))
            .where(InstanceVersionRow.partition_fk == partition, InstanceVersionRow.sop_uid.in_(sops))
            .group_by(InstanceVersionRow.sop_uid))}  # fmt: skip
        conn.execute(insert(InstanceVersionRow), [
            {"partition_fk": partition, "sop_uid": s.target.sop_uid, "version": (latest.get(s.target.sop_uid) or 0) + 1,
             "study_uid": s.target.study_uid, "series_uid": s.target.series_uid, "object_key": s.version_key,
             "size_bytes": s.size, "sha256": s.sha256, "correction_id": correction_id, "created_at": now}
            for s in staged])  # fmt: skip
        swapped = swap_rows(conn, [s.rewritten for s in staged], now, partition)
        _move_links(conn, partition, swapped.removed_patients)
        detail = json.dumps({"correction": correction_id, "kind": kind.value, "target": target, "before": before,
                             "after": after, "instances": len(staged)}, sort_keys=True, ensure_ascii=False)
        conn.execute(insert(AuditRow).values(
            at=now, action=Action.CORRECTION.value, outcome="success", user_id=actor.user_id,
            username=actor.name[:64], role=actor.role[:16], share_id=None, study_uid=studies[0][:64],
            patient_id=str(before.get("PatientID", after.get("PatientID", "")))[:64], source=source[:128],
            detail=detail[:2000]))  # fmt: skip
    return int(correction_id)


def _move_links(conn: Connection, partition: int, moves: Sequence[PatientMove]) -> None:
    """Patient accounts of the partition follow their patient to its new key (an ID changed, a merge)."""
    accounts = select(User.id).where(User.partition_fk == partition)
    for move in moves:
        if len(move.new) != 1:
            continue
        new = move.new[0]
        old_links = conn.execute(select(PatientLink.id, PatientLink.user_fk).where(
            PatientLink.patient_id == move.old[0], PatientLink.issuer == move.old[1],
            PatientLink.user_fk.in_(accounts))).all()  # fmt: skip
        if not old_links:
            continue
        already = set(conn.execute(select(PatientLink.user_fk).where(
            tuple_(PatientLink.patient_id, PatientLink.issuer) == new, PatientLink.user_fk.in_(accounts))).scalars())
        for link_id, user_fk in old_links:
            if user_fk in already:
                conn.execute(delete(PatientLink).where(PatientLink.id == link_id))
            else:
                conn.execute(update(PatientLink).where(PatientLink.id == link_id)
                             .values(patient_id=new[0], issuer=new[1]))  # fmt: skip


def _remove(archive: Archive, keys: Sequence[str]) -> None:
    for key in keys:
        try:
            archive.store.delete(key)
        except CloudfilmError:
            log.warning("could not delete object %s; fsck --repair will", key)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
