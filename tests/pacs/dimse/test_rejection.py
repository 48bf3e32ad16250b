"""IHE IOCM rejection with real peers, on SQLite + filesystem and PostgreSQL + S3: a rejection note (KOS,
CID 7011 title) sent by DCMTK ``storescu`` hides the instances it names from ``findscu``, ``getscu``,
QIDO-RS and WADO-RS at once; admins list them; after the grace period they are deleted, and a
re-sent rejected instance stays hidden."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pydicom
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

from pacs.access import AccessScope
from pacs.index.db import utcnow
from pacs.rejection import KEY_OBJECT_SELECTION, expired_count, list_rejected, purge_expired
from pacs.retrieve import find_instances
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.pacs.dimse.support import AET, QR_AET, Node, run_tool
from tests.viewer_api.conftest import make_app


def rejection_kos(study: list[Dataset], rejected: list[Dataset], code: str = "113001",
                  meaning: str = "Rejected for Quality Reasons") -> Dataset:
    """A Key Object Selection rejection note (IHE RAD TF-3 4.66) naming ``rejected``."""
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = KEY_OBJECT_SELECTION
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = KEY_OBJECT_SELECTION
    first = study[0]
    for keyword in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
                    "StudyTime", "AccessionNumber", "StudyID", "SpecificCharacterSet"):
        if keyword in first:
            setattr(ds, keyword, first.get(keyword))
    ds.Modality = "KO"
    ds.SeriesInstanceUID = generate_uid()
    ds.SeriesNumber = 99
    ds.InstanceNumber = 1
    ds.ValueType = "CONTAINER"
    title = Dataset()
    title.CodeValue, title.CodingSchemeDesignator, title.CodeMeaning = code, "DCM", meaning
    ds.ConceptNameCodeSequence = [title]
    by_series: dict[str, list[Dataset]] = {}
    for item in rejected:
        by_series.setdefault(str(item.SeriesInstanceUID), []).append(item)
    series_items = []
    for series_uid, items in by_series.items():
        series = Dataset()
        series.SeriesInstanceUID = series_uid
        refs = []
        for item in items:
            ref = Dataset()
            ref.ReferencedSOPClassUID = item.SOPClassUID
            ref.ReferencedSOPInstanceUID = item.SOPInstanceUID
            refs.append(ref)
        series.ReferencedSOPSequence = refs
        series_items.append(series)
    evidence = Dataset()
    evidence.StudyInstanceUID = first.StudyInstanceUID
    evidence.ReferencedSeriesSequence = series_items
    ds.CurrentRequestedProcedureEvidenceSequence = [evidence]
    return ds


def _findscu_images(node: Node, study_uid: str, out: Path) -> set[str]:
    out.mkdir()
    done = run_tool("findscu", "-S", "-aet", QR_AET, "-aec", AET, "-X", "-od", out, "127.0.0.1", node.port,
                    "-k", "QueryRetrieveLevel=IMAGE", "-k", f"StudyInstanceUID={study_uid}", "-k", "SeriesInstanceUID",
                    "-k", "SOPInstanceUID")
    assert done.returncode == 0, done.stderr
    return {str(pydicom.dcmread(p).SOPInstanceUID) for p in out.glob("rsp*.dcm")}


def _getscu(node: Node, study_uid: str, out: Path) -> set[str]:
    out.mkdir()
    done = run_tool("getscu", "-S", "-aet", QR_AET, "-aec", AET, "-od", out, "127.0.0.1", node.port,
                    "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}")
    assert done.returncode == 0, done.stderr
    return {str(pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID) for p in out.iterdir()}


def test_rejection_note_hides_instances_everywhere_then_the_grace_period_deletes_them(
        any_node: Node, tmp_path: Path) -> None:
    study = make_ct_study(PATIENTS[2], n_slices=4, rows=16, cols=16, seed=501)
    any_node.store_datasets(study)
    uid = str(study[0].StudyInstanceUID)
    rejected, kept = study[:2], study[2:]
    note = rejection_kos(study, rejected)
    path = tmp_path / "reject.dcm"
    note.save_as(path, enforce_file_format=True)
    sent = run_tool("storescu", "-aet", QR_AET, "-aec", AET, "127.0.0.1", any_node.port, path)
    assert sent.returncode == 0, sent.stderr
    visible = {str(ds.SOPInstanceUID) for ds in kept} | {str(note.SOPInstanceUID)}

    assert _findscu_images(any_node, uid, tmp_path / "find") == visible
    assert _getscu(any_node, uid, tmp_path / "get") == visible
    archive = any_node.archive
    archive.settings = archive.settings.model_copy(update={"auth_disabled": True})
    with TestClient(make_app(archive, AccessScope.everything())) as client:
        listed = client.get(f"/dicomweb/studies/{uid}/instances")
        assert listed.status_code == 200
        assert {i["00080018"]["Value"][0] for i in listed.json()} == visible
        [study_row] = client.get("/dicomweb/studies", params={"StudyInstanceUID": uid}).json()
        assert study_row["00201208"]["Value"] == [len(visible)]  # counts leave the rejected out
        gone = rejected[0]
        wado = client.get(f"/dicomweb/studies/{uid}/series/{gone.SeriesInstanceUID}/instances/{gone.SOPInstanceUID}")
        assert wado.status_code == 404
        assert client.get(f"/dicomweb/studies/{uid}/series/{gone.SeriesInstanceUID}/instances/"
                          f"{gone.SOPInstanceUID}/metadata").status_code == 404

    listing = list_rejected(archive.engine)
    assert {r.sop_uid for r in listing} == {str(ds.SOPInstanceUID) for ds in rejected}
    assert {r.code_value for r in listing} == {"113001"}
    # Nothing is deleted before the grace period is over; then exactly the rejected instances go.
    assert expired_count(archive.engine) == 0
    keys = {i.sop_uid: i.object_key for i in find_instances(
        archive.engine, AccessScope(all_studies=True, withheld_reasons=frozenset()), study_uid=uid)}
    later = utcnow() + timedelta(seconds=archive.settings.rejection_grace + 1)
    assert purge_expired(archive.engine, archive.store, now=later) == 2
    for ds in rejected:
        assert archive.store.head(keys[str(ds.SOPInstanceUID)]) is None
    assert {i.sop_uid for i in find_instances(archive.engine, AccessScope.everything(), study_uid=uid)} == visible
    assert all(r.deleted_at is not None for r in list_rejected(archive.engine, include_deleted=True))
    # A rejected instance sent again stays hidden.
    assert archive.ingest.store_bytes(to_bytes(rejected[0])).ok
    assert _findscu_images(any_node, uid, tmp_path / "find-again") == visible
