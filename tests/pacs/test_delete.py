"""Deleting studies, series and instances: rows and counts in one transaction, then the objects."""

from __future__ import annotations

import pytest
from sqlalchemy import Row, func, select

import pacs.delete
from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.delete import EVENT_INSTANCE_DELETED, delete_instances
from pacs.errors import NotFound, StorageUnavailable
from pacs.fsck import fsck
from pacs.index.models import Instance, OutboxEvent, Patient, Series, Study
from tests.factories import PATIENTS, make_ct_study, to_bytes

EVERYTHING = AccessScope.everything()


def store(archive: Archive, datasets: list) -> None:
    for ds in datasets:
        assert archive.ingest.store_bytes(to_bytes(ds)).ok


def counts(archive: Archive) -> tuple[int, int, int, int]:
    with archive.engine.connect() as conn:
        return tuple(conn.execute(select(func.count()).select_from(t)).scalar_one()  # type: ignore[return-value]
                     for t in (Patient, Study, Series, Instance))


def study_row(archive: Archive, uid: str) -> Row[tuple[int, int]] | None:
    with archive.engine.connect() as conn:
        return conn.execute(select(Study.instance_count, Study.series_count).where(Study.study_uid == uid)).first()


def test_instance_series_and_study_deletes_keep_counts_exact(archive: Archive) -> None:
    study = make_ct_study(PATIENTS[0], n_slices=3, rows=8, cols=8, seed=1, series_count=2)
    other = make_ct_study(PATIENTS[0], n_slices=2, rows=8, cols=8, seed=2)
    store(archive, study + other)
    uid = study[0].StudyInstanceUID
    series_uids = sorted({d.SeriesInstanceUID for d in study})
    assert counts(archive) == (1, 2, 3, 8)

    result = delete_instances(archive.engine, archive.store, EVERYTHING, study_uid=uid,
                              series_uid=study[0].SeriesInstanceUID, sop_uid=study[0].SOPInstanceUID)
    assert (result.instances, result.series, result.studies, result.objects_left) == (1, 0, 0, ())
    row = study_row(archive, uid)
    assert row is not None and row.instance_count == 5 and row.series_count == 2
    assert counts(archive) == (1, 2, 3, 7)

    in_first = [d for d in study if d.SeriesInstanceUID == series_uids[0]]
    result = delete_instances(archive.engine, archive.store, EVERYTHING, study_uid=uid, series_uid=series_uids[0])
    assert result.series == 1 and result.studies == 0
    row = study_row(archive, uid)
    assert row is not None and row.series_count == 1
    assert row.instance_count == 6 - len(in_first) - (1 if study[0].SeriesInstanceUID == series_uids[1] else 0)

    result = delete_instances(archive.engine, archive.store, EVERYTHING, study_uid=uid)
    assert result.studies == 1
    assert study_row(archive, uid) is None
    assert counts(archive) == (1, 1, 1, 2)
    with archive.engine.connect() as conn:
        patient = conn.execute(select(Patient.study_count, Patient.instance_count)).one()
    assert tuple(patient) == (1, 2)

    delete_instances(archive.engine, archive.store, EVERYTHING, study_uid=other[0].StudyInstanceUID)
    assert counts(archive) == (0, 0, 0, 0)  # the patient went with its last study
    assert list(archive.store.list()) == []
    with archive.engine.connect() as conn:
        events = conn.execute(select(func.count()).where(OutboxEvent.event == EVENT_INSTANCE_DELETED)).scalar_one()
    assert events == 8
    assert fsck(archive).problems == 0


def test_unknown_or_invisible_is_not_found(archive: Archive) -> None:
    study = make_ct_study(n_slices=1, rows=8, cols=8, seed=3)
    store(archive, study)
    uid = study[0].StudyInstanceUID
    for kwargs in ({"study_uid": "1.2.3"}, {"study_uid": uid, "series_uid": "1.2.3"},
                   {"study_uid": uid, "series_uid": study[0].SeriesInstanceUID, "sop_uid": "1.2.3"}):
        with pytest.raises(NotFound):
            delete_instances(archive.engine, archive.store, EVERYTHING, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(NotFound):
        delete_instances(archive.engine, archive.store, AccessScope.studies("9.9.9"), study_uid=uid)
    assert counts(archive) == (1, 1, 1, 1)


def test_objects_the_store_refuses_are_left_for_fsck(local_archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    archive = local_archive
    study = make_ct_study(n_slices=2, rows=8, cols=8, seed=4)
    store(archive, study)

    def refuse(key: str) -> None:
        raise StorageUnavailable("the object store is read-only")

    monkeypatch.setattr(archive.store, "delete", refuse)
    result = delete_instances(archive.engine, archive.store, EVERYTHING, study_uid=study[0].StudyInstanceUID)
    assert result.instances == 2 and len(result.objects_left) == 2
    monkeypatch.undo()
    report = fsck(archive, repair=True, grace_s=0)
    assert sorted(report.orphans) == sorted(result.objects_left) and report.removed_orphans == 2


def test_an_instance_stored_again_keeps_its_object(local_archive: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """Keys are content-addressed: the same bytes stored again right after the commit share the key."""
    archive = local_archive
    ds = make_ct_study(n_slices=1, rows=8, cols=8, seed=5)[0]
    store(archive, [ds])
    original = pacs.delete._unreferenced

    def restore_between(engine, keys):  # type: ignore[no-untyped-def]
        assert archive.ingest.store_bytes(to_bytes(ds)).ok  # a sender retries between commit and cleanup
        return original(engine, keys)

    monkeypatch.setattr(pacs.delete, "_unreferenced", restore_between)
    delete_instances(archive.engine, archive.store, EVERYTHING, study_uid=ds.StudyInstanceUID)
    assert counts(archive) == (1, 1, 1, 1)
    assert fsck(archive).problems == 0
