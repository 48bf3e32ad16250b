"""Every storage SOP class over C-STORE, retired ones included, and private ones when configured."""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    ImplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import build_role, evt

from pacs.dimse.contexts import EXTRA_STORAGE_CLASSES, STORAGE_CLASSES, STORAGE_SYNTAXES, STUDY_ROOT_GET
from tests.factories import encode, make_ct_study, to_bytes, write_files
from tests.pacs.dimse.support import AET, Node, context, dataset_bytes, run_tool, stored_bytes

MakeNode = Callable[..., Node]

US_RETIRED = UID("1.2.840.10008.5.1.4.1.1.6")  # Ultrasound Image Storage (Retired)
US_MULTIFRAME_RETIRED = UID("1.2.840.10008.5.1.4.1.1.3")
NM_RETIRED = UID("1.2.840.10008.5.1.4.1.1.5")
XA_BIPLANE_RETIRED = UID("1.2.840.10008.5.1.4.1.1.12.3")
RETIRED = [US_RETIRED, US_MULTIFRAME_RETIRED, NM_RETIRED, XA_BIPLANE_RETIRED]
PRIVATE = UID("1.2.826.0.1.3680043.8.498.4242.1")  # under a private root: no such SOP class in DICOM
SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
            RLELossless, JPEGLSLossless]


def _as_class(ds: Dataset, sop_class: str) -> Dataset:
    """A copy of ``ds`` as an instance of ``sop_class``, with a new SOP Instance UID."""
    out = copy.deepcopy(ds)
    out.SOPClassUID = out.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    out.SOPInstanceUID = out.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    return out


@pytest.fixture(scope="module")
def slice_() -> Dataset:
    return make_ct_study(n_slices=1, rows=32, cols=32, seed=1209)[0]


def test_the_retired_storage_classes_are_offered() -> None:
    assert set(RETIRED) <= set(EXTRA_STORAGE_CLASSES) and set(EXTRA_STORAGE_CLASSES) <= set(STORAGE_CLASSES)
    assert "1.2.840.10008.5.1.4.38.1" not in STORAGE_CLASSES  # Hanging Protocol: a non-patient object
    assert "1.2.840.10008.1.20.1" not in STORAGE_CLASSES  # Storage Commitment is no storage class


def test_every_extra_storage_class_in_every_transfer_syntax(node: Node) -> None:
    """Each storage class pynetdicom does not list is accepted in every transfer syntax the archive
    accepts (one context per syntax for the retired ultrasound class; all syntaxes at once for the others)."""
    per_syntax = [context(US_RETIRED, ts) for ts in STORAGE_SYNTAXES]
    others = [context(uid, *STORAGE_SYNTAXES) for uid in EXTRA_STORAGE_CLASSES if uid != US_RETIRED]
    assert len(per_syntax + others) <= 128
    assoc = node.associate(per_syntax + others)
    try:
        accepted = assoc.accepted_contexts
        assert sorted(str(cx.transfer_syntax[0]) for cx in accepted if cx.abstract_syntax == US_RETIRED) == sorted(
            STORAGE_SYNTAXES)
        assert {str(cx.abstract_syntax) for cx in accepted} == {str(uid) for uid in EXTRA_STORAGE_CLASSES}
    finally:
        assoc.release()


def test_retired_instances_are_stored_as_received(node: Node, slice_: Dataset) -> None:
    cases = [encode(_as_class(slice_, US_RETIRED), ts) for ts in SYNTAXES]
    cases += [_as_class(slice_, uid) for uid in RETIRED[1:]]
    assoc = node.associate([context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID) for ds in cases])
    try:
        for ds in cases:
            assert assoc.send_c_store(ds).Status == 0x0000, (ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
            assert dataset_bytes(stored_bytes(node, ds.SOPInstanceUID)) == dataset_bytes(to_bytes(ds))
    finally:
        assoc.release()


def test_storescu_of_a_retired_ultrasound_image(node: Node, slice_: Dataset, tmp_path: Path) -> None:
    ds = _as_class(slice_, US_RETIRED)
    (path,) = write_files([ds], tmp_path)
    out = run_tool("storescu", "-R", "-aec", AET, "127.0.0.1", node.port, path)  # -R: propose the file's class
    assert out.returncode == 0, out.stderr
    assert dataset_bytes(stored_bytes(node, ds.SOPInstanceUID)) == dataset_bytes(path.read_bytes())


def test_private_sop_class_is_refused_by_default(node: Node) -> None:
    assoc = node.associate([context(PRIVATE, ExplicitVRLittleEndian), context(US_RETIRED)])
    try:
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [US_RETIRED]
    finally:
        assoc.release()


def test_private_sop_class_is_stored_byte_for_byte_when_accepted(make_node: MakeNode, slice_: Dataset) -> None:
    node = make_node(dicom_accept_unknown_sop_classes=True)
    ds = _as_class(slice_, PRIVATE)
    ds.add_new(0x00291010, "OB", b"\x01\x02\x03vendor blob\x00")  # private data (no creator: kept as is)
    assoc = node.associate([context(PRIVATE, ExplicitVRLittleEndian, ImplicitVRLittleEndian),
                            context("1.2.840.10008.5.1.1.9", ExplicitVRLittleEndian)])  # a known non-storage class
    try:
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [PRIVATE]  # print: unaccepted
        assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert dataset_bytes(stored_bytes(node, ds.SOPInstanceUID)) == dataset_bytes(to_bytes(ds))
    # ... and comes back by C-GET to a peer that takes the class.
    got: list[bytes] = []

    def on_store(event: evt.Event) -> int:
        got.append(event.request.DataSet.getvalue())
        return 0x0000

    assoc = node.associate([context(STUDY_ROOT_GET), context(PRIVATE, ExplicitVRLittleEndian)],
                           ext_neg=[build_role(PRIVATE, scp_role=True)], evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = ds.StudyInstanceUID
        responses = list(assoc.send_c_get(query, STUDY_ROOT_GET))
    finally:
        assoc.release()
    assert responses[-1][0].Status == 0x0000
    assert got == [dataset_bytes(to_bytes(ds))]
