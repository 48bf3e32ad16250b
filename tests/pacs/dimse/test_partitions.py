"""Partitions over DIMSE: the Called AE Title picks the hospital. The same SOP Instance UIDs stored by
DCMTK's storescu to two AE titles are both kept, and C-FIND and C-MOVE through each AE title see
only that partition's instances (issue 17 item 5), on SQLite + filesystem and PostgreSQL + S3."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
from pydicom.dataset import Dataset
from pynetdicom import AE

from pacs.access import AccessScope
from pacs.dimse.contexts import STUDY_ROOT_FIND, STUDY_ROOT_MOVE
from pacs.partitions import PartitionConfig
from pacs.retrieve import find_instances
from tests.conftest import archive_settings
from tests.factories import PATIENTS, make_ct_study, write_files
from tests.pacs.dimse.conftest import CORE_BACKENDS
from tests.pacs.dimse.support import AET, DEST_AET, QR_AET, Node, context, dicom_settings, run_tool, running, storescp

NORTH_AET = "NORTH"
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
