"""Deleting studies, series and instances: index rows first (one transaction), then the objects.

The rows go in one transaction that takes the same locks in the same order as ingest (patients,
then studies), so a concurrent ingest into the same study waits rather than interleaving, and the
counts are recomputed before commit. Objects are removed only after the commit: a crash in
between leaves objects without rows, which ``cloudfilm fsck --repair`` removes; an index row
never points at a deleted object. Events in the outbox tell the rest of the system.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from sqlalchemy import Engine, delete, func, insert, select, update
from sqlalchemy.engine import Connection

from pacs.access import AccessScope
from pacs.errors import CloudfilmError, Conflict, NotFound
from pacs.events import EVENT_INSTANCE_DELETED
from pacs.index.db import utcnow
from pacs.index.models import Instance, OutboxEvent, Patient, Series, Study
from pacs.index.writer import recount_patients, recount_studies
from pacs.storage import ObjectStore

log = logging.getLogger(__name__)

_DELETERS = ThreadPoolExecutor(max_workers=8, thread_name_prefix="object-delete")


@dataclass(frozen=True, slots=True)
class DeleteResult:
    """What a delete removed; ``objects_left`` are keys fsck will clean up (the store refused)."""

    instances: int
    series: int
    studies: int
    objects_left: tuple[str, ...] = field(default=())


def delete_instances(
    engine: Engine,
    store: ObjectStore,
    scope: AccessScope,
    *,
    study_uid: str,
    series_uid: str | None = None,
    sop_uid: str | None = None,
    refuse: Callable[[Connection], str | None] | None = None,
) -> DeleteResult:
    """Delete a study, one of its series or one instance; NotFound when nothing visible matches.

    ``refuse`` is asked inside the transaction, once the study's row is locked: a sentence from it
    is a :class:`~pacs.errors.Conflict` and nothing is deleted (retention's last look at holds)."""
    with engine.connect() as conn:
        conn.info["write"] = True  # SQLite: BEGIN IMMEDIATE, like every index writer
        try:
            with conn.begin():
                removed_keys, counts = _delete_rows(conn, scope, study_uid, series_uid, sop_uid, refuse)
        finally:
            conn.info.pop("write", None)
    left = _delete_objects(store, _unreferenced(engine, removed_keys))
    return DeleteResult(counts[0], counts[1], counts[2], tuple(left))


def remove_unreferenced(engine: Engine, store: ObjectStore, keys: Sequence[str]) -> list[str]:
    """Delete the objects of ``keys`` that no index row names now (after a commit that stopped
    naming them); the keys the store refused (fsck removes them later)."""
    return _delete_objects(store, _unreferenced(engine, keys))


def _unreferenced(engine: Engine, keys: Sequence[str]) -> list[str]:
    """The keys no index row points at now: an instance stored again since the commit keeps its object."""
    referenced: set[str] = set()
    with engine.connect() as conn:
        for start in range(0, len(keys), 500):
            chunk = list(keys[start : start + 500])
            referenced.update(conn.execute(select(Instance.object_key).where(Instance.object_key.in_(chunk))).scalars())
    return [k for k in keys if k not in referenced]


def _delete_rows(conn: Connection, scope: AccessScope, study_uid: str, series_uid: str | None, sop_uid: str | None,
                 refuse: Callable[[Connection], str | None] | None) -> tuple[list[str], tuple[int, int, int]]:
    study = conn.execute(
        select(Study.id, Study.patient_fk).where(Study.study_uid == study_uid, scope.study_filter())
    ).first()
    if study is None:
        raise NotFound("no such study")
    study_id, patient_id = study
    # Lock order as in pacs.index.writer: the patient row, then the study row.
    conn.execute(select(Patient.id).where(Patient.id == patient_id).with_for_update())
    conn.execute(select(Study.id).where(Study.id == study_id).with_for_update())
    if refuse is not None and (why := refuse(conn)):
        raise Conflict(why)

    stmt = (
        select(Instance.id, Instance.object_key, Instance.series_fk, Instance.sop_uid, Series.series_uid)
        .join(Series, Series.id == Instance.series_fk)
        .where(Instance.study_fk == study_id)
    )
    if series_uid is not None:
        stmt = stmt.where(Series.series_uid == series_uid)
    if sop_uid is not None:
        stmt = stmt.where(Instance.sop_uid == sop_uid)
    rows = conn.execute(stmt).all()
    if not rows:
        if series_uid is None and sop_uid is None:
            return _delete_empty_study(conn, study_id, patient_id)
        raise NotFound("no such instance" if sop_uid else "no such series")

    ids = [r.id for r in rows]
    for start in range(0, len(ids), 500):
        conn.execute(delete(Instance).where(Instance.id.in_(ids[start : start + 500])))
    touched_series = sorted({r.series_fk for r in rows})
    emptied = [
        sid for sid in touched_series
        if conn.execute(select(func.count(Instance.id)).where(Instance.series_fk == sid)).scalar_one() == 0
    ]  # fmt: skip
    if emptied:
        conn.execute(delete(Series).where(Series.id.in_(emptied)))
    for sid in sorted(set(touched_series) - set(emptied)):
        conn.execute(
            update(Series)
            .where(Series.id == sid)
            .values(
                instance_count=select(func.count(Instance.id)).where(Instance.series_fk == sid).scalar_subquery(),
                size_bytes=select(func.coalesce(func.sum(Instance.size_bytes), 0))
                .where(Instance.series_fk == sid)
                .scalar_subquery(),
            )
        )
    studies_removed = 0
    if conn.execute(select(func.count(Series.id)).where(Series.study_fk == study_id)).scalar_one() == 0:
        conn.execute(delete(Study).where(Study.id == study_id))
        studies_removed = 1
    else:
        recount_studies(conn, {study_id})
    _settle_patient(conn, patient_id)
    now = utcnow()
    conn.execute(insert(OutboxEvent), [
        {"event": EVENT_INSTANCE_DELETED, "study_uid": study_uid, "series_uid": r.series_uid, "sop_uid": r.sop_uid,
         "created_at": now, "partition_fk": scope.partition}
        for r in rows
    ])  # fmt: skip
    return [r.object_key for r in rows], (len(rows), len(emptied), studies_removed)


def _delete_empty_study(conn: Connection, study_id: int, patient_id: int) -> tuple[list[str], tuple[int, int, int]]:
    conn.execute(delete(Series).where(Series.study_fk == study_id))
    conn.execute(delete(Study).where(Study.id == study_id))
    _settle_patient(conn, patient_id)
    return [], (0, 0, 1)


def _settle_patient(conn: Connection, patient_id: int) -> None:
    """Recount the patient, or remove it when its last study is gone."""
    if conn.execute(select(func.count(Study.id)).where(Study.patient_fk == patient_id)).scalar_one() == 0:
        conn.execute(delete(Patient).where(Patient.id == patient_id))
    else:
        recount_patients(conn, {patient_id})


def _delete_objects(store: ObjectStore, keys: Sequence[str]) -> list[str]:
    """Remove objects concurrently; return the keys the store refused (fsck removes them later)."""

    def one(key: str) -> str | None:
        try:
            store.delete(key)
            return None
        except CloudfilmError as exc:
            log.warning("could not delete object %s (fsck --repair will): %s", key, exc)
            return key

    return [k for k in _DELETERS.map(one, keys) if k is not None]
