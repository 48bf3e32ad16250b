"""C-MOVE and C-GET: DCMTK destinations and SCUs, byte-identical copies, transcoding, counts, C-CANCEL."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, JPEGLSLossless
from pynetdicom import AE, build_role, evt

from pacs.dimse.contexts import PATIENT_ROOT_MOVE, STUDY_ROOT_GET, STUDY_ROOT_MOVE
from tests.factories import CT_IMAGE_STORAGE, encode, make_ct_study
from tests.pacs.dimse.support import (
    AET,
    DEST_AET,
    QR_AET,
    Node,
    context,
    dataset_bytes,
    run_tool,
    stored_bytes,
    storescp,
)


def _dest_port(node: Node) -> int:
    return node.settings.dicom_modalities["dest"].port


def _received(directory: Path) -> dict[str, bytes]:
    out = {}
    for path in directory.iterdir():
        data = path.read_bytes()
        out[str(pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID)] = data
    return out


def _study_identifier(study_uid: str, level: str = "STUDY") -> Dataset:
    ds = Dataset()
    ds.QueryRetrieveLevel = level
    ds.StudyInstanceUID = study_uid
    return ds


def test_movescu_study_to_storescp_is_byte_identical(any_node: Node, small_study: list[Dataset],
                                                     tmp_path: Path) -> None:
    any_node.store_datasets(small_study)
    study_uid = small_study[0].StudyInstanceUID
    with storescp(_dest_port(any_node), tmp_path / "dest"):
        out = run_tool("movescu", "-S", "-aet", QR_AET, "-aec", AET, "-aem", DEST_AET, "127.0.0.1", any_node.port,
                       "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={study_uid}")
    assert out.returncode == 0, out.stderr
    received = _received(tmp_path / "dest")
    assert sorted(received) == sorted(ds.SOPInstanceUID for ds in small_study)
    for uid, data in received.items():
        assert dataset_bytes(data) == dataset_bytes(stored_bytes(any_node, uid)), uid


def test_move_decompresses_for_an_uncompressed_only_destination(node: Node, tmp_path: Path) -> None:
    originals = make_ct_study(n_slices=6, rows=32, cols=32, seed=41)
    node.store_datasets([encode(ds, JPEGLSLossless) for ds in originals])
    assoc = node.associate([context(STUDY_ROOT_MOVE)])
    with storescp(_dest_port(node), tmp_path / "dest"):  # storescp accepts only uncompressed by default
        try:
            responses = list(assoc.send_c_move(_study_identifier(originals[0].StudyInstanceUID), DEST_AET,
                                               STUDY_ROOT_MOVE))
        finally:
            assoc.release()
    pending = [rsp for rsp, _ in responses if rsp.Status == 0xFF00]
    assert [int(r.NumberOfRemainingSuboperations) for r in pending] == [5, 4, 3, 2, 1, 0]
    assert [int(r.NumberOfCompletedSuboperations) for r in pending] == [1, 2, 3, 4, 5, 6]
    final = responses[-1][0]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 6
    assert final.NumberOfFailedSuboperations == 0 and final.NumberOfWarningSuboperations == 0
    received = _received(tmp_path / "dest")
    for ds in originals:
        got = pydicom.dcmread(tmp_path / "dest" / next(p.name for p in (tmp_path / "dest").iterdir()
                                                       if ds.SOPInstanceUID in p.name))
        assert got.file_meta.TransferSyntaxUID in (ExplicitVRLittleEndian, ImplicitVRLittleEndian)
        assert np.array_equal(got.pixel_array, ds.pixel_array)
    assert len(received) == 6


def test_move_sends_explicit_vr_as_stored_to_a_destination_preferring_implicit(node: Node,
                                                                              small_study: list[Dataset]) -> None:
    """The stored syntax has its own context: a receiver that picks Implicit VR from the fallback
    context still gets the Explicit VR instances as stored, not transcoded. Each sub-operation names
    the C-MOVE's requester as Move Originator (PS3.4 C.4.2.2), not the archive."""
    node.store_datasets(small_study)
    received: dict[str, tuple[str, bytes]] = {}
    originators: set[tuple[str, int]] = set()

    def on_store(event: Any) -> int:
        originators.add((str(event.request.MoveOriginatorApplicationEntityTitle),
                         int(event.request.MoveOriginatorMessageID)))
        received[str(event.request.AffectedSOPInstanceUID)] = (str(event.context.transfer_syntax),
                                                               event.request.DataSet.getvalue())
        return 0x0000

    ae = AE(ae_title=DEST_AET)
    ae.add_supported_context(CT_IMAGE_STORAGE, [ImplicitVRLittleEndian, ExplicitVRLittleEndian])  # Implicit first
    server = ae.start_server(("127.0.0.1", _dest_port(node)), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    assoc = node.associate([context(STUDY_ROOT_MOVE)])
    try:
        responses = list(assoc.send_c_move(_study_identifier(small_study[0].StudyInstanceUID), DEST_AET,
                                           STUDY_ROOT_MOVE))
    finally:
        assoc.release()
        server.shutdown()
    assert int(responses[-1][0].Status) == 0x0000
    assert originators == {(QR_AET, 1)}  # node.associate's AE title; pynetdicom's first message ID
    assert sorted(received) == sorted(ds.SOPInstanceUID for ds in small_study)
    for uid, (syntax, data) in received.items():
        assert syntax == ExplicitVRLittleEndian
        assert data == dataset_bytes(stored_bytes(node, uid)), uid  # byte for byte: not re-encoded


def test_move_to_unknown_destination_answers_a801(node: Node, small_study: list[Dataset]) -> None:
    node.store_datasets(small_study[:1])
    assoc = node.associate([context(PATIENT_ROOT_MOVE)])
    try:
        query = _study_identifier(small_study[0].StudyInstanceUID)
        query.PatientID = small_study[0].PatientID
        responses = list(assoc.send_c_move(query, "NOWHERE", PATIENT_ROOT_MOVE))
    finally:
        assoc.release()
    assert [int(rsp.Status) for rsp, _ in responses] == [0xA801]


def test_move_without_unique_key_is_refused(node: Node, small_study: list[Dataset]) -> None:
    node.store_datasets(small_study[:1])
    assoc = node.associate([context(STUDY_ROOT_MOVE)])
    try:
        query = _study_identifier("")
        responses = list(assoc.send_c_move(query, DEST_AET, STUDY_ROOT_MOVE))
        status = int(responses[-1][0].Status)
        assert 0xC000 <= status <= 0xCFFF
        assert assoc.is_established
    finally:
        assoc.release()


@pytest.fixture
def slow_destination(node: Node) -> Iterator[list[str]]:
    """A pynetdicom storage SCP on DEST's port that takes 50 ms per instance."""
    received: list[str] = []

    def on_store(event: Any) -> int:
        time.sleep(0.05)
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title=DEST_AET)
    ae.add_supported_context(CT_IMAGE_STORAGE, [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    server = ae.start_server(("127.0.0.1", _dest_port(node)), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    yield received
    server.shutdown()


def test_move_c_cancel(node: Node, slow_destination: list[str]) -> None:
    study = make_ct_study(n_slices=12, rows=16, cols=16, seed=43)
    node.store_datasets(study)
    assoc = node.associate([context(STUDY_ROOT_MOVE)])
    statuses: list[Dataset] = []
    try:
        for rsp, _ in assoc.send_c_move(_study_identifier(study[0].StudyInstanceUID), DEST_AET, STUDY_ROOT_MOVE,
                                        msg_id=11):
            statuses.append(rsp)
            if len(statuses) == 1:
                assoc.send_c_cancel(11, context_id=assoc.accepted_contexts[0].context_id)
    finally:
        assoc.release()
    final = statuses[-1]
    assert final.Status == 0xFE00
    assert int(final.NumberOfRemainingSuboperations) > 0
    assert len(slow_destination) < 12


def test_getscu_series(any_node: Node, small_study: list[Dataset], tmp_path: Path) -> None:
    any_node.store_datasets(small_study)
    series_uid = small_study[0].SeriesInstanceUID
    (tmp_path / "got").mkdir()
    out = run_tool("getscu", "-S", "-aet", QR_AET, "-aec", AET, "-od", tmp_path / "got", "127.0.0.1", any_node.port,
                   "-k", "QueryRetrieveLevel=SERIES", "-k", f"StudyInstanceUID={small_study[0].StudyInstanceUID}",
                   "-k", f"SeriesInstanceUID={series_uid}")
    assert out.returncode == 0, out.stderr
    received = _received(tmp_path / "got")
    expected = [ds.SOPInstanceUID for ds in small_study if ds.SeriesInstanceUID == series_uid]
    assert sorted(received) == sorted(expected) and len(expected) == 6
    for uid, data in received.items():
        ours = pydicom.dcmread(pydicom.filebase.DicomBytesIO(stored_bytes(any_node, uid)))
        theirs = pydicom.dcmread(pydicom.filebase.DicomBytesIO(data))
        assert theirs.PixelData == ours.PixelData and theirs.PatientName == ours.PatientName


def test_c_get_image_level_uid_list(node: Node, small_study: list[Dataset]) -> None:
    node.store_datasets(small_study)
    got: list[Dataset] = []
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        with lock:
            got.append(event.dataset)
        return 0x0000

    contexts = [context(STUDY_ROOT_GET), context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)]
    role = build_role(CT_IMAGE_STORAGE, scp_role=True)
    assoc = node.associate(contexts, ext_neg=[role], evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        query = _study_identifier(small_study[0].StudyInstanceUID, "IMAGE")
        query.SeriesInstanceUID = small_study[0].SeriesInstanceUID
        query.SOPInstanceUID = [small_study[0].SOPInstanceUID, small_study[2].SOPInstanceUID]
        responses = list(assoc.send_c_get(query, STUDY_ROOT_GET))
    finally:
        assoc.release()
    final = responses[-1][0]
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 2
    assert sorted(ds.SOPInstanceUID for ds in got) == sorted([small_study[0].SOPInstanceUID,
                                                              small_study[2].SOPInstanceUID])


def test_unknown_ae_may_not_retrieve(node: Node, small_study: list[Dataset]) -> None:
    node.store_datasets(small_study[:1])
    out = run_tool("movescu", "-S", "-aet", "STRANGER", "-aec", AET, "-aem", DEST_AET, "127.0.0.1", node.port,
                   "-k", "QueryRetrieveLevel=STUDY", "-k", f"StudyInstanceUID={small_study[0].StudyInstanceUID}")
    assert out.returncode != 0
    assoc = node.associate([context(STUDY_ROOT_GET), context(STUDY_ROOT_MOVE)], aet="STRANGER")
    try:
        assert assoc.accepted_contexts == []
    finally:
        assoc.release()
