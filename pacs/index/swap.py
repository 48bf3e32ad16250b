"""Swapping the index rows of rewritten instances to their new objects, inside the caller's transaction.

A correction (:mod:`pacs.corrections`) stores every rewritten object first, then calls
:func:`swap_rows` with their records in the one transaction that also writes the correction and its
versions. The rows are locked in ingest's order (patients, then studies, each by id) and checked to
still name the objects the rewrite was made from: a concurrent change makes the whole swap a
:class:`~pacs.errors.Conflict` and the transaction rolls back. Patients are matched by (PatientID,
Issuer) as at ingest: a new key creates its patient, a patient left without studies is removed.
Everything happens in the one partition the correction works in (:mod:`pacs.partitions`): another
partition's instances, studies and patients with the same UIDs or keys are never read or changed.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import delete, func, insert, select, tuple_, update
from sqlalchemy.engine import Connection, Row

from pacs.errors import Conflict
from pacs.events import EVENT_INSTANCE_REPLACED
from pacs.index.models import Instance, OutboxEvent, Patient, Series, Study
from pacs.index.records import InstanceRecord
from pacs.index.writer import recount_patients, recount_studies


@dataclass(frozen=True, slots=True)
class Rewritten:
    """The new record of an instance, and the object its row must still name."""

    record: InstanceRecord
    previous_key: str


@dataclass(frozen=True, slots=True)
class PatientMove:
    """A patient key that lost its last study, and the keys its studies went to."""

    old: tuple[str, str]
    new: tuple[tuple[str, str], ...]


@dataclass(frozen=True, slots=True)
class SwapResult:
    removed_patients: tuple[PatientMove, ...]


def swap_rows(conn: Connection, rewritten: Sequence[Rewritten], now: datetime, partition: int) -> SwapResult:
    """Point each instance's row at its new object and carry the new patient and study values onto the
    study and patient rows; counts recomputed, an ``instance.replaced`` event per instance."""
    by_sop = {r.record.sop_uid: r for r in rewritten}
    sops = sorted(by_sop)
    current = _rows(conn, sops, partition)
    if len(current) != len(sops):
        raise Conflict("an instance of this correction was deleted meanwhile; nothing was changed")
    new_keys = sorted({(r.record.patient.patient_id, r.record.patient.issuer) for r in rewritten})
    known_new: dict[tuple[str, str], int] = {
        (pid, issuer): row_id for pid, issuer, row_id in conn.execute(
            select(Patient.patient_id, Patient.issuer, Patient.id)
            .where(Patient.partition_fk == partition, tuple_(Patient.patient_id, Patient.issuer).in_(new_keys)))}
    old_patients = {row.patient_fk for row in current}
    study_ids = sorted({row.study_fk for row in current})
    conn.execute(select(Patient.id).where(Patient.id.in_(sorted(old_patients | set(known_new.values()))))
                 .order_by(Patient.id).with_for_update()).all()  # fmt: skip
    conn.execute(select(Study.id).where(Study.id.in_(study_ids)).order_by(Study.id).with_for_update()).all()
    current = _rows(conn, sops, partition)  # under the locks
    for row in current:
        if row.object_key != by_sop[row.sop_uid].previous_key:
            raise Conflict(f"instance {row.sop_uid} changed meanwhile; nothing was changed")

    patient_ids: dict[tuple[str, str], int] = {}
    for rec in sorted((r.record for r in rewritten), key=lambda r: r.sop_uid):
        key = (rec.patient.patient_id, rec.patient.issuer)
        if key in patient_ids:
            continue
        values = {"patient_name": rec.patient.patient_name, "patient_name_norm": rec.patient.patient_name_norm,
                  "birth_date": rec.patient.birth_date, "sex": rec.patient.sex, "updated_at": now}
        if key in known_new:
            conn.execute(update(Patient).where(Patient.id == known_new[key]).values(**values))
            patient_ids[key] = known_new[key]
        else:
            patient_ids[key] = conn.execute(insert(Patient).values(
                partition_fk=partition, patient_id=key[0], issuer=key[1], study_count=0, series_count=0,
                instance_count=0, size_bytes=0,
                created_at=now, **values).returning(Patient.id)).scalar_one()  # fmt: skip

    study_of = {row.sop_uid: row.study_fk for row in current}
    done_studies: set[int] = set()
    for sop in sops:
        rec = by_sop[sop].record
        sid = study_of[sop]
        if sid not in done_studies:
            done_studies.add(sid)
            p, st = rec.patient, rec.study
            conn.execute(update(Study).where(Study.id == sid).values(
                patient_fk=patient_ids[(p.patient_id, p.issuer)], patient_id=p.patient_id, issuer=p.issuer,
                patient_name=p.patient_name, patient_name_norm=p.patient_name_norm, birth_date=p.birth_date,
                sex=p.sex, study_date=st.study_date, study_time=st.study_time, accession_number=st.accession_number,
                study_id=st.study_id, study_description=st.study_description,
                referring_physician=st.referring_physician, referring_physician_norm=st.referring_physician_norm,
                institution_name=st.institution_name, specific_charset=st.specific_charset))  # fmt: skip
        conn.execute(update(Instance).where(Instance.partition_fk == partition, Instance.sop_uid == sop).values(
            object_key=rec.object_key, size_bytes=rec.size_bytes, sha256=rec.sha256,
            dataset_sha256=rec.dataset_sha256, metadata_json=rec.metadata_json, frames_json=rec.frames_json,
            transfer_syntax_uid=rec.transfer_syntax_uid, encapsulated=rec.encapsulated,
            number_of_frames=rec.number_of_frames, rows=rec.rows, columns=rec.columns))  # fmt: skip

    for series_fk in sorted({row.series_fk for row in current}):
        conn.execute(update(Series).where(Series.id == series_fk).values(
            size_bytes=select(func.coalesce(func.sum(Instance.size_bytes), 0))
            .where(Instance.series_fk == series_fk).scalar_subquery()))  # fmt: skip
    recount_studies(conn, set(study_ids))
    new_key = {sop: (by_sop[sop].record.patient.patient_id, by_sop[sop].record.patient.issuer) for sop in sops}
    removed = _settle_patients(conn, old_patients, set(patient_ids.values()), current, new_key)
    recount_patients(conn, set(patient_ids.values()))
    conn.execute(insert(OutboxEvent), [
        {"event": EVENT_INSTANCE_REPLACED, "study_uid": row.study_uid, "series_uid": row.series_uid,
         "sop_uid": row.sop_uid, "created_at": now, "partition_fk": partition} for row in current])  # fmt: skip
    return SwapResult(tuple(removed))


def _rows(conn: Connection, sops: Sequence[str], partition: int) -> list[Row[Any]]:
    out: list[Row[Any]] = []
    for start in range(0, len(sops), 500):
        out.extend(conn.execute(
            select(Instance.sop_uid, Instance.object_key, Instance.series_fk, Instance.study_fk, Study.patient_fk,
                   Study.study_uid, Study.patient_id, Study.issuer, Series.series_uid)
            .join(Study, Study.id == Instance.study_fk).join(Series, Series.id == Instance.series_fk)
            .where(Instance.partition_fk == partition, Instance.sop_uid.in_(list(sops[start:start + 500])))))
    return out


def _settle_patients(conn: Connection, old_ids: set[int], kept_ids: set[int], current: Sequence[Row[Any]],
                     new_key: dict[str, tuple[str, str]]) -> list[PatientMove]:  # fmt: skip
    """Remove the old patients left without studies (naming where their studies went); recount the rest."""
    moves: list[PatientMove] = []
    for pid in sorted(old_ids - kept_ids):
        if conn.execute(select(func.count(Study.id)).where(Study.patient_fk == pid)).scalar_one():
            recount_patients(conn, {pid})
            continue
        mine = [row for row in current if row.patient_fk == pid]
        conn.execute(delete(Patient).where(Patient.id == pid))
        went = tuple(sorted({new_key[r.sop_uid] for r in mine}))
        moves.append(PatientMove((mine[0].patient_id, mine[0].issuer), went))
    return moves
