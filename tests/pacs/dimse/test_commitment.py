"""Storage Commitment Push Model: SHA-256 checked per instance, report on the same or a new association."""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from pynetdicom import AE, evt

from pacs.access import AccessScope
from pacs.dimse.commitment import COMMITMENT_INSTANCE_UID
from pacs.dimse.contexts import STORAGE_COMMITMENT_PUSH
from pacs.retrieve import find_instances_by_sop
from tests.factories import CT_IMAGE_STORAGE
from tests.pacs.dimse.support import QR_AET, Node, context

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"


def _request(transaction_uid: str, refs: Sequence[tuple[str, str]]) -> Dataset:
    ds = Dataset()
    ds.TransactionUID = transaction_uid
    items = []
    for sop_class, sop_uid in refs:
        item = Dataset()
        item.ReferencedSOPClassUID = sop_class
        item.ReferencedSOPInstanceUID = sop_uid
        items.append(item)
    ds.ReferencedSOPSequence = items
    return ds


class Reports:
    """Collects N-EVENT-REPORTs received by an SCU (on its association or as an SCP)."""

    def __init__(self) -> None:
        self.received: list[tuple[int, Dataset]] = []
        self.arrived = threading.Event()

    def handler(self, event: Any) -> tuple[int, None]:
        self.received.append((int(event.event_type), event.event_information))
        self.arrived.set()
        return 0x0000, None


def _corrupt(node: Node, sop_uid: str) -> None:
    (inst,) = find_instances_by_sop(node.archive.engine, AccessScope.everything(), [sop_uid])
    path = Path(node.archive.store.url.removeprefix("file://")) / inst.object_key
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF  # one bit of pixel data changed behind the archive's back
    path.write_bytes(bytes(data))


def test_commitment_report_on_the_same_association(node: Node, small_study: list[Dataset]) -> None:
    node.store_datasets(small_study[:3])
    _corrupt(node, small_study[2].SOPInstanceUID)
    unknown = generate_uid()
    refs = [(CT_IMAGE_STORAGE, small_study[0].SOPInstanceUID), (CT_IMAGE_STORAGE, small_study[1].SOPInstanceUID),
            (CT_IMAGE_STORAGE, small_study[2].SOPInstanceUID), (CT_IMAGE_STORAGE, unknown),
            (MR_IMAGE_STORAGE, small_study[0].SOPInstanceUID)]
    reports = Reports()
    transaction = generate_uid()
    assoc = node.associate([context(STORAGE_COMMITMENT_PUSH)],
                           evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
    try:
        status, _reply = assoc.send_n_action(_request(transaction, refs), 1, STORAGE_COMMITMENT_PUSH,
                                             COMMITMENT_INSTANCE_UID)
        assert status.Status == 0x0000
        assert reports.arrived.wait(15)
    finally:
        assoc.release()
    ((event_type, report),) = reports.received
    assert event_type == 2  # some failed
    assert report.TransactionUID == transaction
    assert sorted(i.ReferencedSOPInstanceUID for i in report.ReferencedSOPSequence) == sorted(
        [small_study[0].SOPInstanceUID, small_study[1].SOPInstanceUID])
    failed = {(i.ReferencedSOPClassUID, i.ReferencedSOPInstanceUID): int(i.FailureReason)
              for i in report.FailedSOPSequence}
    assert failed == {
        (CT_IMAGE_STORAGE, small_study[2].SOPInstanceUID): 0x0110,  # bytes changed: SHA-256 mismatch
        (CT_IMAGE_STORAGE, unknown): 0x0112,  # no such object instance
        (MR_IMAGE_STORAGE, small_study[0].SOPInstanceUID): 0x0119,  # class/instance conflict
    }


def test_commitment_report_on_a_new_association(node: Node, small_study: list[Dataset]) -> None:
    """The SCU releases at once; the report comes on an association to its configured address."""
    node.store_datasets(small_study[:2])
    reports = Reports()
    scp = AE(ae_title=QR_AET)
    scp.add_supported_context(STORAGE_COMMITMENT_PUSH, scu_role=True, scp_role=True)
    server = scp.start_server(("127.0.0.1", node.settings.dicom_modalities["qr"].port), block=False,
                              evt_handlers=[(evt.EVT_N_EVENT_REPORT, reports.handler)])
    assert server is not None
    try:
        assoc = node.associate([context(STORAGE_COMMITMENT_PUSH)])
        transaction = generate_uid()
        refs = [(CT_IMAGE_STORAGE, ds.SOPInstanceUID) for ds in small_study[:2]]
        status, _reply = assoc.send_n_action(_request(transaction, refs), 1, STORAGE_COMMITMENT_PUSH,
                                             COMMITMENT_INSTANCE_UID)
        assoc.release()
        assert status.Status == 0x0000
        assert reports.arrived.wait(15)
    finally:
        server.shutdown()
    ((event_type, report),) = reports.received
    assert event_type == 1 and report.TransactionUID == transaction
    assert len(report.ReferencedSOPSequence) == 2 and "FailedSOPSequence" not in report


def test_commitment_request_errors(node: Node) -> None:
    assoc = node.associate([context(STORAGE_COMMITMENT_PUSH)])
    try:
        no_refs = Dataset()
        no_refs.TransactionUID = generate_uid()
        status, _ = assoc.send_n_action(no_refs, 1, STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE_UID)
        assert status.Status == 0x0120  # missing attribute
        status, _ = assoc.send_n_action(_request(generate_uid(), [(CT_IMAGE_STORAGE, "1.2.3")]), 9,
                                        STORAGE_COMMITMENT_PUSH, COMMITMENT_INSTANCE_UID)
        assert status.Status == 0x0123  # no such action type
    finally:
        assoc.release()


def test_unknown_ae_may_not_request_commitment(node: Node) -> None:
    assoc = node.associate([context(STORAGE_COMMITMENT_PUSH)], aet="STRANGER")
    try:
        assert assoc.accepted_contexts == []
    finally:
        assoc.release()
