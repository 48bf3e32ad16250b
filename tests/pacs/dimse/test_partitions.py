"""Partitions over DIMSE: the Called AE Title picks the hospital. The same SOP Instance UIDs stored by
DCMTK's storescu to two AE titles are both kept, and C-FIND and C-MOVE through each AE title see
only that partition's instances (issue 17 item 5); the modality worklist (findscu -W), MPPS and
storage commitment answer within the called partition too; on SQLite + filesystem and PostgreSQL + S3."""

from __future__ import annotations

import copy
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from pacs.access import AccessScope
from pacs.corrections import service as corrections
from pacs.corrections.types import Actor, PatientChanges, PatientKey
from pacs.dimse.commitment import COMMITMENT_INSTANCE_UID
from pacs.dimse.contexts import STORAGE_COMMITMENT_PUSH, STUDY_ROOT_FIND, STUDY_ROOT_MOVE
from pacs.partitions import PartitionConfig
from pacs.retrieve import find_instances
from pacs.worklist import orders
from pacs.worklist.orders import Order
from tests.conftest import archive_settings
from tests.factories import PATIENTS, make_ct_study, write_files
from tests.pacs.dimse.conftest import CORE_BACKENDS
from tests.pacs.dimse.support import AET, DEST_AET, QR_AET, Node, context, dicom_settings, run_tool, running, storescp

NORTH_AET = "NORTH"
MPPS = "1.2.840.10008.3.1.2.3.3"
NORTH_NAME = "North^Hospital^Patient"


@pytest.fixture(params=CORE_BACKENDS)
def partitioned(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Node]:
    for base in archive_settings(str(request.param), tmp_path, request):
        with running(dicom_settings(base, partitions={"north": PartitionConfig(ae_titles=[NORTH_AET])})) as node:
            yield node


def _twins(tmp_path: Path) -> tuple[list[Dataset], list[Dataset], list[Path], list[Path]]:
    """One study, and the same UIDs with other content (another patient name): what two hospitals
    whose modalities reuse UIDs send."""
    default = make_ct_study(PATIENTS[0], n_slices=2, rows=16, cols=16, seed=1701)
    north = [copy.deepcopy(ds) for ds in default]
    for ds in north:
        ds.PatientName = NORTH_NAME
    return default, north, write_files(default, tmp_path / "default"), write_files(north, tmp_path / "north")


def _associate(node: Node, called: str, abstract_syntax: str) -> object:
    ae = AE(ae_title=QR_AET)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
    assoc = ae.associate("127.0.0.1", node.port, contexts=[context(abstract_syntax)], ae_title=called)
    assert assoc.is_established
    return assoc


def _find_names(node: Node, called: str, study_uid: str) -> list[tuple[str, str]]:
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    query.PatientName = ""
    query.NumberOfStudyRelatedInstances = ""
    assoc = _associate(node, called, STUDY_ROOT_FIND)
    try:
        found = [(str(ident.PatientName), str(ident.RetrieveAETitle))
                 for rsp, ident in assoc.send_c_find(query, STUDY_ROOT_FIND)  # type: ignore[attr-defined]
                 if rsp.Status in (0xFF00, 0xFF01)]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    return found


def test_same_uids_stored_to_two_ae_titles_stay_apart(partitioned: Node, tmp_path: Path) -> None:
    node = partitioned
    default, north, default_files, north_files = _twins(tmp_path)
    study_uid = str(default[0].StudyInstanceUID)
    for called, files in ((AET, default_files), (NORTH_AET, north_files)):
        out = run_tool("storescu", "-aet", QR_AET, "-aec", called, "127.0.0.1", node.port, *files)
        assert out.returncode == 0, out.stderr
        assert "Status" not in out.stderr or "Success" in out.stderr, out.stderr

    # both kept: two instances per SOP UID, under different object keys
    directory = node.archive.partitions
    north_id = directory.by_slug("north").id  # type: ignore[union-attr]
    mine = find_instances(node.archive.engine, AccessScope.everything(), study_uid=study_uid)
    theirs = find_instances(node.archive.engine, AccessScope.everything(north_id), study_uid=study_uid)
    assert sorted(i.sop_uid for i in mine) == sorted(i.sop_uid for i in theirs) == sorted(
        str(ds.SOPInstanceUID) for ds in default)
    assert all(i.object_key.startswith("p/north/") for i in theirs)
    assert not {i.object_key for i in mine} & {i.object_key for i in theirs}

    # C-FIND through each AE title: its own partition's study only, to be retrieved from that AE title
    assert _find_names(node, AET, study_uid) == [(str(PATIENTS[0].name), AET)]
    assert _find_names(node, NORTH_AET, study_uid) == [(NORTH_NAME, NORTH_AET)]

    # C-MOVE through each AE title sends that partition's objects
    for called, expected in ((AET, str(PATIENTS[0].name)), (NORTH_AET, NORTH_NAME)):
        dest = tmp_path / f"dest-{called}"
        with storescp(node.settings.dicom_modalities["dest"].port, dest):
            out = run_tool("movescu", "-S", "-aet", QR_AET, "-aec", called, "-aem", DEST_AET, "127.0.0.1",
                           node.port, "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}")
        assert out.returncode == 0, out.stderr
        received = [pydicom.dcmread(p, stop_before_pixels=True) for p in dest.iterdir()]
        assert len(received) == len(default)
        assert {str(ds.PatientName) for ds in received} == {expected}


def test_a_study_of_one_partition_is_not_found_through_another(partitioned: Node, tmp_path: Path) -> None:
    node = partitioned
    _, north, _, north_files = _twins(tmp_path)
    out = run_tool("storescu", "-aet", QR_AET, "-aec", NORTH_AET, "127.0.0.1", node.port, *north_files)
    assert out.returncode == 0, out.stderr
    study_uid = str(north[0].StudyInstanceUID)
    assert _find_names(node, AET, study_uid) == []
    assert _find_names(node, NORTH_AET, study_uid) == [(NORTH_NAME, NORTH_AET)]
    assoc = _associate(node, AET, STUDY_ROOT_MOVE)
    query = Dataset()
    query.QueryRetrieveLevel = "STUDY"
    query.StudyInstanceUID = study_uid
    try:
        responses = list(assoc.send_c_move(query, DEST_AET, STUDY_ROOT_MOVE))  # type: ignore[attr-defined]
    finally:
        assoc.release()  # type: ignore[attr-defined]
    final = responses[-1][0]
    assert final.Status == 0x0000 and int(final.get("NumberOfCompletedSuboperations", 0)) == 0


def test_an_unknown_called_ae_title_is_refused_when_checked(partitioned: Node) -> None:
    ae = AE(ae_title=QR_AET)
    ae.acse_timeout = ae.network_timeout = 10
    assoc = ae.associate("127.0.0.1", partitioned.port, contexts=[context(STUDY_ROOT_FIND)], ae_title="SOUTH")
    assert assoc.is_rejected


def _findscu_worklist(node: Node, called: str, out: Path) -> list[Dataset]:
    out.mkdir()
    result = run_tool("findscu", "-W", "-aet", QR_AET, "-aec", called, "-X", "-od", out,
                      "-k", "ScheduledProcedureStepSequence[0].Modality",
                      "-k", "ScheduledProcedureStepSequence[0].ScheduledProcedureStepStatus",
                      "-k", "PatientName", "-k", "PatientID", "-k", "AccessionNumber", "-k", "StudyInstanceUID",
                      "127.0.0.1", node.port)
    assert result.returncode == 0, result.stdout + result.stderr
    return [pydicom.dcmread(p) for p in sorted(out.iterdir())]


def test_the_worklist_answers_the_called_partitions_orders_and_mpps_stays_there(partitioned: Node,
                                                                                  tmp_path: Path) -> None:
    """Orders are per partition (the same accession number in two), findscu -W through an AE title sees
    only its partition's, and an MPPS reported through one AE title moves only that partition's order."""
    node = partitioned
    engine = node.archive.engine
    north_id = node.archive.partitions.by_slug("north").id  # type: ignore[union-attr]
    orders.schedule(engine, Order("ACC7", patient_id="PD", patient_name="Default^Dora", modality="CT"), source="api")
    orders.schedule(engine, Order("ACC7", patient_id="PN", patient_name="North^Nina", modality="CT"), source="api",
                    partition=north_id)
    orders.schedule(engine, Order("ACC8", patient_id="PN2", patient_name="North^Only", modality="MR"), source="api",
                    partition=north_id)

    found = _findscu_worklist(node, AET, tmp_path / "default")
    assert [(ds.AccessionNumber, ds.PatientID) for ds in found] == [("ACC7", "PD")]
    found = _findscu_worklist(node, NORTH_AET, tmp_path / "north")
    assert sorted((ds.AccessionNumber, ds.PatientID) for ds in found) == [("ACC7", "PN"), ("ACC8", "PN2")]

    step = Dataset()
    step.PerformedProcedureStepStatus = "IN PROGRESS"
    scheduled = Dataset()
    scheduled.AccessionNumber = "ACC7"
    step.ScheduledStepAttributesSequence = [scheduled]
    mpps_uid = generate_uid()
    assoc = _associate(node, NORTH_AET, MPPS)
    try:
        status, _ = assoc.send_n_create(step, MPPS, mpps_uid)  # type: ignore[attr-defined]
        assert status.Status == 0x0000
    finally:
        assoc.release()  # type: ignore[attr-defined]
    assert orders.get(engine, "ACC7", partition=north_id).status == "STARTED"
    assert orders.get(engine, "ACC7").status == "SCHEDULED"  # the default partition's twin order is untouched
    done = Dataset()
    done.PerformedProcedureStepStatus = "COMPLETED"
    assoc = _associate(node, AET, MPPS)  # north's step is no step of the default partition
    try:
        status, _ = assoc.send_n_set(done, MPPS, mpps_uid)  # type: ignore[attr-defined]
        assert status.Status == 0x0112
    finally:
        assoc.release()  # type: ignore[attr-defined]
    assert orders.get(engine, "ACC7", partition=north_id).status == "STARTED"
    # and the admin API of a north admin works on north's orders (the route passes the caller's partition)
    assert [e.accession_number for e in orders.list_entries(engine, partition=north_id)] == ["ACC7", "ACC8"]
    assert [e.patient_id for e in orders.list_entries(engine)] == ["PD"]


class _Reports:
    def __init__(self) -> None:
        self.received: list[tuple[str, Dataset]] = []  # (the calling AE title, the report)
        self.arrived = threading.Event()

    def handler(self, event: Any) -> tuple[int, None]:
        self.received.append((event.assoc.requestor.ae_title.strip(), event.event_information))
        self.arrived.set()
        return 0x0000, None


def _commit_request(transaction: str, datasets: list[Dataset]) -> Dataset:
    request = Dataset()
    request.TransactionUID = transaction
    items = []
    for ds in datasets:
        item = Dataset()
        item.ReferencedSOPClassUID = ds.SOPClassUID
        item.ReferencedSOPInstanceUID = ds.SOPInstanceUID
        items.append(item)
    request.ReferencedSOPSequence = items
    return request


def test_storage_commitment_checks_the_called_partitions_instances_and_reports_as_it(partitioned: Node,
                                                                                      tmp_path: Path) -> None:
    """Both slices stored through the default AE title, only the first through NORTH (the same UIDs):
    a commitment request through NORTH commits north's copy of the first and fails the second (north
    holds none), whatever the default partition holds, and the report names and comes from NORTH."""
    node = partitioned
    default, _north, default_files, north_files = _twins(tmp_path)
    for called, files in ((AET, default_files), (NORTH_AET, north_files[:1])):
        out = run_tool("storescu", "-aet", QR_AET, "-aec", called, "127.0.0.1", node.port, *files)
        assert out.returncode == 0, out.stderr

    # on the requesting association: through NORTH, then through the default AE title
    results: dict[str, tuple[list[str], dict[str, int], str]] = {}
    for called in (NORTH_AET, AET):
        reports = _Reports()
        ae = AE(ae_title=QR_AET)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        assoc = ae.associate("127.0.0.1", node.port, contexts=[context(STORAGE_COMMITMENT_PUSH)], ae_title=called,
                             evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
        assert assoc.is_established
        try:
            status, _ = assoc.send_n_action(_commit_request(generate_uid(), default), 1, STORAGE_COMMITMENT_PUSH,
                                            COMMITMENT_INSTANCE_UID)
            assert status.Status == 0x0000
            assert reports.arrived.wait(15)
        finally:
            assoc.release()
        ((_caller, report),) = reports.received
        results[called] = ([i.ReferencedSOPInstanceUID for i in report.get("ReferencedSOPSequence", [])],
                           {i.ReferencedSOPInstanceUID: int(i.FailureReason)
                            for i in report.get("FailedSOPSequence", [])},
                           report.RetrieveAETitle)
    first, second = (str(ds.SOPInstanceUID) for ds in default)
    assert results[NORTH_AET] == ([first], {second: 0x0112}, NORTH_AET)
    assert results[AET] == ([first, second], {}, AET)

    # on a new association (the SCU releases at once): called from NORTH's AE title
    reports = _Reports()
    scp = AE(ae_title=QR_AET)
    scp.add_supported_context(STORAGE_COMMITMENT_PUSH, scu_role=True, scp_role=True)
    server = scp.start_server(("127.0.0.1", node.settings.dicom_modalities["qr"].port), block=False,
                              evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
    assert server is not None
    try:
        assoc = _associate(node, NORTH_AET, STORAGE_COMMITMENT_PUSH)
        status, _ = assoc.send_n_action(_commit_request(generate_uid(), default[:1]), 1,  # type: ignore[attr-defined]
                                        STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE_UID)
        assoc.release()  # type: ignore[attr-defined]
        assert status.Status == 0x0000
        assert reports.arrived.wait(15)
    finally:
        server.shutdown()
    ((caller, report),) = reports.received
    assert caller == NORTH_AET and report.RetrieveAETitle == NORTH_AET
    assert [i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence] == [first]


def test_a_correction_in_one_partition_is_seen_by_c_find_there_only(partitioned: Node, tmp_path: Path) -> None:
    """A patient correction made in north rewrites north's twin: C-FIND through NORTH answers the new name
    at once, C-FIND through the default AE title still the default twin's own."""
    node = partitioned
    default, _north, default_files, north_files = _twins(tmp_path)
    for called, files in ((AET, default_files), (NORTH_AET, north_files)):
        out = run_tool("storescu", "-aet", QR_AET, "-aec", called, "127.0.0.1", node.port, *files)
        assert out.returncode == 0, out.stderr
    study_uid = str(default[0].StudyInstanceUID)
    north_id = node.archive.partitions.by_slug("north").id  # type: ignore[union-attr]
    done = corrections.update_patient(node.archive, Actor("test", "admin"),
                                      PatientKey(PATIENTS[0].patient_id, ""),
                                      PatientChanges(patient_name="Corrected^North"), partition=north_id)
    assert done.instance_count == len(default)
    assert _find_names(node, NORTH_AET, study_uid) == [("Corrected^North", NORTH_AET)]
    assert _find_names(node, AET, study_uid) == [(str(PATIENTS[0].name), AET)]
    assert [c.id for c in corrections.list_corrections(node.archive.engine, partition=north_id)] == [done.id]
    assert corrections.list_corrections(node.archive.engine) == []
