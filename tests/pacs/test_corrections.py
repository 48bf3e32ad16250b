"""Corrections with history on SQLite + filesystem and PostgreSQL + S3: attribute updates, merges,
moves and reverts rewrite the stored objects through the ingest path (pixel data untouched), keep
the replaced objects as versions, change the index in one transaction (queries see the new values at
once), and a failure in the middle of that transaction leaves nothing behind."""

from __future__ import annotations

import hashlib
import io
import json
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from sqlalchemy import select, text

from pacs.access import AccessScope
from pacs.accounts.models import AuditRow
from pacs.archive import Archive
from pacs.corrections import service
from pacs.corrections.types import Actor, PatientChanges, PatientKey, StudyChanges, Unchanged
from pacs.errors import Conflict
from pacs.fsck import fsck
from pacs.index.models import Instance, Patient, Study
from pacs.query.attributes import Level
from pacs.query.engine import QueryRequest, run_query
from pacs.retrieve import find_instances
from tests.factories import PATIENTS, make_ct_study, to_bytes

ADMIN = Actor("admin", "admin", None)


def _store(archive: Archive, datasets: list[Dataset]) -> None:
    for ds in datasets:
        assert archive.ingest.store_bytes(to_bytes(ds)).ok


def _stored(archive: Archive, study_uid: str) -> list[Dataset]:
    return [pydicom.dcmread(io.BytesIO(archive.store.get_bytes(i.object_key)))
            for i in find_instances(archive.engine, AccessScope.everything(), study_uid=study_uid)]


def _studies(archive: Archive, **filters: str) -> list[Any]:
    return list(run_query(archive.engine, QueryRequest(Level.STUDY, filters=filters)))


def _snapshot(archive: Archive) -> dict[str, Any]:
    """Every index row that matters and every object in the store, with its digest."""
    with archive.engine.connect() as conn:
        rows = {table: sorted(tuple(r) for r in conn.execute(text(f"SELECT * FROM {table}")))  # noqa: S608
                for table in ("patients", "studies", "series", "instances", "corrections", "instance_versions",
                              "audit_events")}
        rows["outbox"] = sorted(tuple(r) for r in conn.execute(text("SELECT event, sop_uid FROM outbox")))
    objects = {o.key: hashlib.sha256(archive.store.get_bytes(o.key)).hexdigest() for o in archive.store.list()
               if not o.key.startswith("_probe")}
    return {"rows": rows, "objects": objects}


@pytest.fixture
def two_patients(archive: Archive) -> tuple[list[Dataset], list[Dataset], list[Dataset]]:
    """Doe with two studies, Müller with one."""
    doe1 = make_ct_study(PATIENTS[0], n_slices=3, rows=16, cols=16, seed=71)
    doe2 = make_ct_study(PATIENTS[0], n_slices=2, rows=16, cols=16, seed=72)
    muller = make_ct_study(PATIENTS[1], n_slices=2, rows=16, cols=16, seed=73)
    for study in (doe1, doe2, muller):
        _store(archive, study)
    return doe1, doe2, muller


def test_update_patient_rewrites_objects_keeps_versions_and_reverts(
        archive: Archive, two_patients: tuple[list[Dataset], ...]) -> None:
    doe1, doe2, _ = two_patients
    originals = {i.sop_uid: (i.object_key, i.sha256) for s in (doe1, doe2) for i in find_instances(
        archive.engine, AccessScope.everything(), study_uid=s[0].StudyInstanceUID)}
    done = service.update_patient(archive, ADMIN, PatientKey("CF-0001"),
                                  PatientChanges(patient_name="Dœ^Jane", birth_date="19600313", sex="F"))
    assert done.instance_count == 5 and done.before["PatientName"] == "Doe^John"
    assert done.after["PatientName"] == "Dœ^Jane"
    # The index answers with the new values at once, the old name finds nothing.
    found = _studies(archive, PatientName="Dœ*")
    assert {m.get("StudyInstanceUID") for m in found} == {doe1[0].StudyInstanceUID, doe2[0].StudyInstanceUID}
    assert {m.get("PatientBirthDate") for m in found} == {"19600313"}
    assert _studies(archive, PatientName="Doe*") == []
    # The stored objects hold the new values and the same pixel data.
    for original, stored in zip(doe1, _stored(archive, doe1[0].StudyInstanceUID), strict=True):
        assert str(stored.PatientName) == "Dœ^Jane" and stored.PatientSex == "F"
        assert stored.PixelData == original.PixelData and stored.SOPInstanceUID == original.SOPInstanceUID
    # The replaced objects are versions; the old keys are gone from the store.
    versions = service.versions_of(archive.engine, correction_id=done.id)
    assert {v.sop_uid for v in versions} == set(originals) and {v.version for v in versions} == {1}
    for v in versions:
        assert hashlib.sha256(archive.store.get_bytes(v.object_key)).hexdigest() == originals[v.sop_uid][1]
        assert archive.store.head(originals[v.sop_uid][0]) is None
    with archive.engine.connect() as conn:
        audit = conn.execute(select(AuditRow.detail).where(AuditRow.action == "correction")).scalar_one()
    assert json.loads(audit)["before"]["PatientName"] == "Doe^John"
    # A revert is itself a correction: the original bytes are back, the corrected ones are version 2.
    back = service.revert(archive, ADMIN, done.id)
    assert back.reverts_id == done.id and back.after["PatientName"] == "Doe^John"
    now = {i.sop_uid: i.sha256 for s in (doe1, doe2) for i in find_instances(
        archive.engine, AccessScope.everything(), study_uid=s[0].StudyInstanceUID)}
    assert now == {sop: sha for sop, (_key, sha) in originals.items()}
    assert {v.version for v in service.versions_of(archive.engine, correction_id=back.id)} == {2}
    assert {m.get("PatientName") for m in _studies(archive, PatientID="CF-0001")} == {"Doe^John"}
    report = fsck(archive, deep=True, grace_s=0)
    assert not (report.orphans or report.missing or report.wrong_hash or report.wrong_size)


def test_update_study_and_unchanged(archive: Archive, two_patients: tuple[list[Dataset], ...]) -> None:
    doe1 = two_patients[0]
    uid = doe1[0].StudyInstanceUID
    service.update_study(archive, ADMIN, uid, StudyChanges(accession_number="ACC-NEW", study_description="Fixed"))
    [match] = _studies(archive, AccessionNumber="ACC-NEW")
    assert match.get("StudyInstanceUID") == uid and match.get("StudyDescription") == "Fixed"
    assert {ds.AccessionNumber for ds in _stored(archive, uid)} == {"ACC-NEW"}
    with pytest.raises(Unchanged):
        service.update_study(archive, ADMIN, uid, StudyChanges(accession_number="ACC-NEW"))


def test_patient_id_change_to_an_existing_patient_is_refused(archive: Archive,
                                                             two_patients: tuple[list[Dataset], ...]) -> None:
    with pytest.raises(Conflict, match="merge"):
        service.update_patient(archive, ADMIN, PatientKey("CF-0001"),
                               PatientChanges(patient_id="CF-0002", issuer="KLINIKUM-NORD"))


def test_merge_and_move(archive: Archive, two_patients: tuple[list[Dataset], ...]) -> None:
    doe1, doe2, muller = two_patients
    moved = service.move_study(archive, ADMIN, doe2[0].StudyInstanceUID, PatientKey("CF-0002", "KLINIKUM-NORD"))
    assert moved.instance_count == 2
    assert {str(ds.PatientName) for ds in _stored(archive, doe2[0].StudyInstanceUID)} == {"Müller^Jürgen"}
    with archive.engine.connect() as conn:
        counts = {pid: n for pid, n in conn.execute(select(Patient.patient_id, Patient.study_count))}
    assert counts == {"CF-0001": 1, "CF-0002": 2}
    merged = service.merge_patients(archive, ADMIN, PatientKey("CF-0002", "KLINIKUM-NORD"), PatientKey("CF-0001"))
    assert merged.instance_count == 4
    with archive.engine.connect() as conn:
        patients = conn.execute(select(Patient.patient_id, Patient.study_count, Patient.instance_count)).all()
        owners = {(pid, name) for pid, name in conn.execute(select(Study.patient_id, Study.patient_name))}
    assert [tuple(p) for p in patients] == [("CF-0001", 3, 7)]
    assert owners == {("CF-0001", "Doe^John")}
    ids = {ds.PatientID for s in (doe1, doe2, muller) for ds in _stored(archive, s[0].StudyInstanceUID)}
    assert ids == {"CF-0001"}
    # Reverting the merge brings Müller back, with exactly the objects it had before.
    service.revert(archive, ADMIN, merged.id)
    assert {m.get("StudyInstanceUID") for m in _studies(archive, PatientID="CF-0002")} == {
        doe2[0].StudyInstanceUID, muller[0].StudyInstanceUID}


def test_a_failure_inside_the_transaction_leaves_the_old_state_and_nothing_else(
        archive: Archive, two_patients: tuple[list[Dataset], ...], monkeypatch: pytest.MonkeyPatch) -> None:
    before = _snapshot(archive)
    real_swap = service.swap_rows

    def swap_then_crash(*args: Any, **kwargs: Any) -> Any:
        real_swap(*args, **kwargs)  # every row written, then the transaction dies before its commit
        raise RuntimeError("crash between the row swap and the commit")

    monkeypatch.setattr(service, "swap_rows", swap_then_crash)
    with pytest.raises(RuntimeError):
        service.merge_patients(archive, ADMIN, PatientKey("CF-0002", "KLINIKUM-NORD"), PatientKey("CF-0001"))
    assert _snapshot(archive) == before  # rows, versions, audit, outbox, and every object byte for byte
    monkeypatch.undo()
    service.merge_patients(archive, ADMIN, PatientKey("CF-0002", "KLINIKUM-NORD"), PatientKey("CF-0001"))
    with archive.engine.connect() as conn:
        assert conn.execute(select(Instance.sop_uid)).all()
        assert len(conn.execute(text("SELECT id FROM corrections")).all()) == 1


def test_cli_correct_study_then_revert(local_archive: Archive) -> None:
    from tests.cli import run_cli, settings_env

    study = make_ct_study(PATIENTS[3], n_slices=2, rows=16, cols=16, seed=81)
    _store(local_archive, study)
    uid = str(study[0].StudyInstanceUID)
    env = settings_env(local_archive.settings)
    done = run_cli("correct", "study", uid, "--accession", "CLI-1", env=env)
    assert done.returncode == 0, done.stderr
    assert "correction 1 update-study" in done.stdout and '"AccessionNumber": "CLI-1"' in done.stdout
    assert [m.get("StudyInstanceUID") for m in _studies(local_archive, AccessionNumber="CLI-1")] == [uid]
    reverted = run_cli("correct", "revert", "1", env=env)
    assert reverted.returncode == 0, reverted.stderr
    assert _studies(local_archive, AccessionNumber="CLI-1") == []
    missing = run_cli("correct", "patient", "NOBODY", "--name", "X^Y", env=env)
    assert missing.returncode == 1 and "no such patient" in missing.stderr
    # --partition names the partition worked in: the default one is the default, an unknown one refused
    listed = run_cli("correct", "--partition", "default", "list", env=env)
    assert listed.returncode == 0 and "correction 2 revert" in listed.stdout, listed.stderr
    unknown = run_cli("correct", "--partition", "south", "list", env=env)
    assert unknown.returncode == 1 and "there is no partition 'south'" in unknown.stderr
