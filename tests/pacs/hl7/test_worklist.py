"""The modality worklist end to end: ORM^O01 orders sent over a real MLLP socket, queried by DCMTK's
``findscu -W`` on the archive's DICOM listener, performed steps reported by pynetdicom (MPPS
N-CREATE / N-SET) and recorded on the order; SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from pydicom import dcmread
from pydicom.dataset import Dataset
from pynetdicom import build_context

from pacs.hl7 import Hl7Listener
from pacs.settings import Settings
from pacs.worklist import orders
from tests.conftest import ARCHIVE_BACKENDS, archive_settings
from tests.pacs.dimse.support import AET, QR_AET, Node, dicom_settings, run_tool, running
from tests.pacs.hl7.support import connected, orm

MWL = "1.2.840.10008.5.1.4.31"
MPPS = "1.2.840.10008.3.1.2.3.3"


@pytest.fixture(params=ARCHIVE_BACKENDS)
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Node, int]]:
    for base in archive_settings(str(request.param), tmp_path, request):
        settings: Settings = dicom_settings(base, hl7_port=0, hl7_host="127.0.0.1")
        with running(settings) as started, contextlib.ExitStack() as stack:
            listener = Hl7Listener(started.archive)
            listener.start()
            stack.callback(listener.stop)
            yield started, listener.port


def _findscu(node: Node, tmp_path: Path, *keys: str) -> list[Dataset]:
    out = tmp_path / f"mwl{len(list(tmp_path.glob('mwl*')))}"
    out.mkdir()
    result = run_tool("findscu", "-W", "-aet", QR_AET, "-aec", AET, "-X", "-od", out,
                      "-k", "ScheduledProcedureStepSequence[0].Modality", "-k",
                      "ScheduledProcedureStepSequence[0].ScheduledStationAETitle",
                      "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate",
                      "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus",
                      "-k", "PatientName", "-k", "PatientID", "-k", "PatientBirthDate", "-k", "PatientSex",
                      "-k", "AccessionNumber", "-k", "StudyInstanceUID", "-k", "RequestedProcedureDescription",
                      *(arg for key in keys for arg in ("-k", key)), "127.0.0.1", node.port)
    assert result.returncode == 0, result.stdout + result.stderr
    return [dcmread(p) for p in sorted(out.iterdir())]


def test_orders_over_mllp_are_found_by_findscu_and_mpps_is_recorded(node: tuple[Node, int], tmp_path: Path) -> None:
    dicom, hl7_port = node
    with connected(hl7_port) as client:
        assert client.send(orm("O1", "ACC1", station="CT01", modality="CT", start="20260302093000")).code == "AA"
        assert client.send(orm("O2", "ACC2", station="MR01", modality="MR", start="20260303100000",
                               patient_id="P300", name="Smith^Anna", study_uid="1.2.826.0.1.3680043.8.498.77")).code \
            == "AA"
        assert client.send(orm("O3", "ACC3", station="CT01", modality="CT", start="20260310080000",
                               patient_id="P400", name="Later^Lou")).code == "AA"
        assert client.send(orm("O4", "ACC4", station="CT01", modality="CT", patient_id="P500",
                               name="Gone^Gil")).code == "AA"
        assert client.send(orm("O5", "ACC4", control="CA", patient_id="P500")).code == "AA"
        changed = client.send(orm("O6", "ACC1", control="XO", station="CT01", start="20260302110000"))
        assert changed.code == "AA"
        unknown = client.send(orm("O7", "NOSUCH", control="CA"))
        assert unknown.code == "AE" and "no worklist entry has accession number 'NOSUCH'" in unknown.reason
        bad = client.send(orm("O8", "ACC9", control="ZZ"))
        assert bad.code == "AR" and "order control 'ZZ' is not supported" in bad.reason

    ct_early = _findscu(dicom, tmp_path, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01",
                        "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStartDate=20260301-20260305")
    assert [ds.AccessionNumber for ds in ct_early] == ["ACC1"]
    (first,) = ct_early
    assert str(first.PatientName) == "Müller^Jürgen" and first.PatientID == "P200" and first.PatientSex == "M"
    assert first.PatientBirthDate == "19650412" and first.RequestedProcedureDescription == "CT HEAD"
    step = first.ScheduledProcedureStepSequence[0]
    assert (step.Modality, step.ScheduledProcedureStepStartDate, step.ScheduledProcedureStepStatus) == \
        ("CT", "20260302", "SCHEDULED")
    assert first.StudyInstanceUID  # assigned by the archive when the order names none

    by_name = _findscu(dicom, tmp_path, "PatientName=smith*")
    assert [(ds.AccessionNumber, ds.StudyInstanceUID) for ds in by_name] == [("ACC2", "1.2.826.0.1.3680043.8.498.77")]
    all_ct = _findscu(dicom, tmp_path, "ScheduledProcedureStepSequence[0].Modality=CT")
    assert sorted(ds.AccessionNumber for ds in all_ct) == ["ACC1", "ACC3"]  # ACC4 was cancelled

    ae_contexts = [build_context(MPPS)]
    from pynetdicom import AE

    ae = AE(ae_title=QR_AET)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    assoc = ae.associate("127.0.0.1", dicom.port, contexts=ae_contexts, ae_title=AET)
    assert assoc.is_established
    try:
        created = Dataset()
        created.PerformedProcedureStepStatus = "IN PROGRESS"
        created.PerformedStationAETitle = "CT01"
        created.Modality = "CT"
        created.PerformedProcedureStepID = "PPS1"
        created.PerformedProcedureStepStartDate = "20260302"
        created.PerformedProcedureStepStartTime = "110500"
        scheduled = Dataset()
        scheduled.AccessionNumber = "ACC1"
        scheduled.StudyInstanceUID = first.StudyInstanceUID
        created.ScheduledStepAttributesSequence = [scheduled]
        mpps_uid = "1.2.826.0.1.3680043.8.498.4242"
        status, _ = assoc.send_n_create(created, MPPS, mpps_uid)
        assert status.Status == 0x0000
        assert orders.get(dicom.archive.engine, "ACC1").status == "STARTED"
        status, _ = assoc.send_n_create(created, MPPS, mpps_uid)
        assert status.Status == 0x0111  # duplicate SOP instance

        done = Dataset()
        done.PerformedProcedureStepStatus = "COMPLETED"
        done.PerformedProcedureStepEndDate = "20260302"
        done.PerformedProcedureStepEndTime = "112000"
        status, _ = assoc.send_n_set(done, MPPS, mpps_uid)
        assert status.Status == 0x0000
        status, _ = assoc.send_n_set(done, MPPS, mpps_uid)
        assert status.Status == 0xA710  # may no longer be updated
        status, _ = assoc.send_n_set(done, MPPS, "1.2.826.0.1.3680043.8.498.9999")
        assert status.Status == 0x0112
    finally:
        assoc.release()
    entry = orders.get(dicom.archive.engine, "ACC1")
    assert entry.status == "COMPLETED"
    (performed,) = entry.performed
    assert (performed.sop_uid, performed.status, performed.end_time) == (mpps_uid, "COMPLETED", "112000")
    assert _findscu(dicom, tmp_path, "ScheduledProcedureStepSequence[0].ScheduledStationAETitle=CT01") and \
        [ds.AccessionNumber for ds in _findscu(dicom, tmp_path, "AccessionNumber=ACC1")] == []
