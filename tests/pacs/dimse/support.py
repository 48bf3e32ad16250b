"""Helpers for the DIMSE tests: a real listener on a free loopback port, DCMTK and pynetdicom peers."""

from __future__ import annotations

import contextlib
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, build_context
from pynetdicom.association import Association
from pynetdicom.pdu import A_ASSOCIATE_RQ
from pynetdicom.pdu_primitives import A_ASSOCIATE, ImplementationClassUIDNotification, MaximumLengthNotification

from pacs.archive import Archive
from pacs.dimse import DicomListener
from pacs.settings import RemoteAE, Settings
from tests.factories import to_bytes
from tests.net import free_port

AET = "CLOUDFILM"
QR_AET = "QRSCU"  # a configured modality: may find, move, get and commit
DEST_AET = "DEST"  # a configured C-MOVE destination (a storescp started by the test)
DCMTK_TIMEOUT_S = 60


@dataclass
class Node:
    """A running archive with its DICOM listener."""

    archive: Archive
    listener: DicomListener
    settings: Settings

    @property
    def port(self) -> int:
        return self.listener.port

    def associate(self, contexts: Sequence[Any], *, aet: str = QR_AET, **kwargs: Any) -> Association:
        ae = AE(ae_title=aet)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 20
        return ae.associate("127.0.0.1", self.port, contexts=list(contexts), ae_title=AET, **kwargs)

    def store_datasets(self, datasets: Sequence[Dataset]) -> None:
        """Seed the archive through the ingest service (no network)."""
        for ds in datasets:
            result = self.archive.ingest.store_bytes(to_bytes(ds))
            assert result.ok, result



def dicom_settings(base: Settings, **overrides: Any) -> Settings:
    """``base`` with the listener on a free loopback port and the test peers configured."""
    modalities = {
        "qr": RemoteAE(aet=QR_AET, host="127.0.0.1", port=free_port()),
        "dest": RemoteAE(aet=DEST_AET, host="127.0.0.1", port=free_port(), allow=["echo"]),
    }
    values: dict[str, Any] = {"dicom_port": 0, "dicom_host": "127.0.0.1", "dicom_modalities": modalities,
                              "dicom_acse_timeout": 10.0, "dicom_dimse_timeout": 20.0,
                              "dicom_network_timeout": 20.0}
    values.update(overrides)
    return base.model_copy(update=values)


@contextlib.contextmanager
def running(settings: Settings) -> Iterator[Node]:
    with Archive.open(settings) as archive:
        listener = DicomListener(archive)
        listener.start()
        try:
            yield Node(archive, listener, settings)
        finally:
            listener.stop()


def run_tool(*args: str | Path | int, timeout: float = DCMTK_TIMEOUT_S) -> subprocess.CompletedProcess[str]:
    """Run a DCMTK tool; the output is kept for assertion messages."""
    return subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, check=False)


def wait_for_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listens on port {port}")


@contextlib.contextmanager
def storescp(port: int, directory: Path, *extra: str) -> Iterator[subprocess.Popen[str]]:
    """DCMTK's storescp as a C-MOVE destination, writing the received datasets bit-preserved."""
    directory.mkdir(parents=True, exist_ok=True)
    proc = subprocess.Popen(["storescp", "-aet", DEST_AET, "+B", "-od", str(directory), *extra, str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        wait_for_port(port)
        yield proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def dataset_bytes(part10: bytes) -> bytes:
    """The encoded dataset of a Part 10 object, after its File Meta Information (PS3.10 7.1)."""
    assert part10[128:132] == b"DICM"
    group_length = int.from_bytes(part10[140:144], "little")
    return part10[144 + group_length:]


def stored_bytes(node: Node, sop_uid: str) -> bytes:
    from pacs.access import AccessScope
    from pacs.retrieve import find_instances_by_sop, open_instance

    (inst,) = find_instances_by_sop(node.archive.engine, AccessScope.everything(), [sop_uid])
    with open_instance(node.archive.store, inst) as fh:
        return fh.read()


def context(abstract_syntax: str, *syntaxes: str) -> Any:
    return build_context(abstract_syntax, list(syntaxes) if syntaxes else None)


def associate_rq(calling_aet: str, called_aet: str = AET, abstract_syntax: str = "1.2.840.10008.1.1") -> bytes:
    """An encoded A-ASSOCIATE-RQ PDU (PS3.8 9.3.2) proposing one context, for peers written by hand."""
    primitive = A_ASSOCIATE()
    primitive.application_context_name = "1.2.840.10008.3.1.1.1"
    primitive.calling_ae_title = calling_aet
    primitive.called_ae_title = called_aet
    cx = build_context(abstract_syntax)
    cx.context_id = 1
    primitive.presentation_context_definition_list = [cx]
    max_length = MaximumLengthNotification()
    max_length.maximum_length_received = 16384
    implementation = ImplementationClassUIDNotification()
    implementation.implementation_class_uid = "1.2.826.0.1.3680043.8.498.1"
    primitive.user_information = [max_length, implementation]
    pdu = A_ASSOCIATE_RQ()
    pdu.from_primitive(primitive)
    return bytes(pdu.encode())
