"""AE security and limits: called AE, per-AE permissions, association limit, timeouts, bad peers."""

from __future__ import annotations

import io
import resource
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom.association import Association
from pynetdicom.dimse_messages import C_STORE_RQ
from pynetdicom.dimse_primitives import C_STORE
from pynetdicom.dsutils import encode
from pynetdicom.pdu import P_DATA_TF

from pacs.dimse.contexts import STUDY_ROOT_FIND, VERIFICATION
from pacs.dimse.overrides.provider import ArchiveDIMSE
from pacs.settings import RemoteAE
from tests.factories import CT_IMAGE_STORAGE, make_ct_study
from tests.pacs.dimse.support import AET, QR_AET, Node, context, run_tool

MakeNode = Callable[..., Node]


def _echo_ok(node: Node, aet: str = "ANYONE") -> bool:
    return run_tool("echoscu", "-aet", aet, "-aec", AET, "127.0.0.1", node.port, timeout=20).returncode == 0


def _closed_within(sock: socket.socket, seconds: float) -> bool:
    """True when the server closes (or aborts) the connection within ``seconds``."""
    sock.settimeout(seconds)
    deadline = time.monotonic() + seconds
    try:
        while time.monotonic() < deadline:
            data = sock.recv(65536)
            if not data:
                return True
            if data[:1] == b"\x07":  # A-ABORT, then the close follows
                continue
    except TimeoutError:
        return False
    except OSError:
        return True
    return False


def test_called_ae_title_is_checked(make_node: MakeNode) -> None:
    node = make_node()
    out = run_tool("echoscu", "-aec", "SOMEONE_ELSE", "127.0.0.1", node.port)
    assert out.returncode != 0 and "Called AE Title Not Recognized" in out.stderr + out.stdout
    lenient = make_node(dicom_check_called_aet=False)
    assert run_tool("echoscu", "-aec", "SOMEONE_ELSE", "127.0.0.1", lenient.port).returncode == 0


def test_association_limit_rejects_beyond_it(make_node: MakeNode) -> None:
    node = make_node(dicom_max_associations=2)
    first = node.associate([context(VERIFICATION)])
    second = node.associate([context(VERIFICATION)])
    third = node.associate([context(VERIFICATION)])
    try:
        assert first.is_established and second.is_established
        assert third.is_rejected  # A-ASSOCIATE-RJ: local limit exceeded
    finally:
        first.release()
        second.release()
    time.sleep(0.3)
    again = node.associate([context(VERIFICATION)])
    assert again.is_established
    again.release()


def test_idle_association_is_dropped(make_node: MakeNode) -> None:
    node = make_node(dicom_network_timeout=1.0)
    assoc = node.associate([context(VERIFICATION)])
    assert assoc.is_established
    deadline = time.monotonic() + 10
    while assoc.is_established and time.monotonic() < deadline:
        time.sleep(0.1)
    assert not assoc.is_established
    assert _echo_ok(node)


def test_silent_connection_is_dropped(make_node: MakeNode) -> None:
    node = make_node(dicom_artim_timeout=1.0)
    with socket.create_connection(("127.0.0.1", node.port)) as sock:
        assert _closed_within(sock, 6)
    assert _echo_ok(node)


@pytest.mark.parametrize("pdu_type", [0x01, 0x04])
def test_absurd_pdu_length_is_dropped_without_allocating_it(node: Node, pdu_type: int) -> None:
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    with socket.create_connection(("127.0.0.1", node.port)) as sock:
        sock.sendall(bytes([pdu_type, 0]) + b"\xff\xff\xff\xff" + b"\x00" * 4096)
        assert _closed_within(sock, 5)
    grown_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - before
    assert grown_kib < 256 * 1024
    assert _echo_ok(node)


def test_http_request_to_the_dicom_port_is_dropped(node: Node) -> None:
    with socket.create_connection(("127.0.0.1", node.port)) as sock:
        sock.sendall(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUser-Agent: curl/8\r\n\r\n")
        assert _closed_within(sock, 5)
    assert _echo_ok(node)


def test_truncated_pdu_then_silence_is_dropped(make_node: MakeNode) -> None:
    node = make_node(dicom_network_timeout=1.0)
    with socket.create_connection(("127.0.0.1", node.port)) as sock:
        sock.sendall(b"\x01\x00\x00\x00\x03\xe8" + b"\x00\x01" + b"\x00" * 60)  # announces 1000 bytes, sends 62
        assert _closed_within(sock, 8)
    assert _echo_ok(node)


def _partial_c_store(node: Node, ds: Dataset, fragments: int) -> tuple[Association, socket.socket]:
    """An association that sends a C-STORE command and only the first dataset fragments."""
    assoc = node.associate([context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)])
    assert assoc.is_established
    req = C_STORE()
    req.MessageID = 1
    req.AffectedSOPClassUID = ds.SOPClassUID
    req.AffectedSOPInstanceUID = ds.SOPInstanceUID
    req.Priority = 2
    encoded = encode(ds, False, True)
    assert encoded is not None
    req.DataSet = io.BytesIO(encoded)
    msg = C_STORE_RQ()
    msg.primitive_to_message(req)
    cx_id = assoc.accepted_contexts[0].context_id
    assert cx_id is not None and assoc.dul.socket is not None
    sock = assoc.dul.socket.socket
    assert sock is not None
    for n, primitive in enumerate(msg.encode_msg(cx_id, 4096)):
        if n > fragments:
            break
        pdu = P_DATA_TF()
        pdu.from_primitive(primitive)
        sock.sendall(pdu.encode())
    return assoc, sock


def test_connection_cut_mid_dataset_leaves_nothing_behind(node: Node, tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    spool = node.settings.spool_dir  # where received datasets spill to disk
    monkeypatch.setattr(ArchiveDIMSE, "in_memory_limit", 8192)  # this 32 KiB dataset spills after 2 fragments
    ds = make_ct_study(n_slices=1, rows=128, cols=128, seed=5)[0]
    assoc, sock = _partial_c_store(node, ds, fragments=4)
    time.sleep(0.3)
    assert len(list(spool.iterdir())) == 1  # the dataset was being written to disk as it arrived
    sock.shutdown(socket.SHUT_RDWR)  # the peer vanishes mid-dataset
    deadline = time.monotonic() + 5
    while list(spool.iterdir()) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(spool.iterdir()) == []
    assoc.kill()
    assert _echo_ok(node)
    with node.archive.engine.connect() as conn:
        from sqlalchemy import text

        assert conn.execute(text("SELECT count(*) FROM instances")).scalar_one() == 0


def test_slow_association_does_not_block_others(node: Node, study_files: list[Path]) -> None:
    ds = make_ct_study(n_slices=1, rows=128, cols=128, seed=6)[0]
    assoc, _sock = _partial_c_store(node, ds, fragments=2)  # stalls mid-dataset
    try:
        started = time.monotonic()
        out = run_tool("storescu", "-aec", AET, "127.0.0.1", node.port, *study_files)
        assert out.returncode == 0, out.stderr
        assert time.monotonic() - started < 10
    finally:
        assoc.abort()


def test_modality_is_recognised_only_from_its_host(make_node: MakeNode) -> None:
    elsewhere = {"qr": RemoteAE(aet=QR_AET, host="192.0.2.10", port=104)}  # TEST-NET-1: never us
    node = make_node(dicom_modalities=elsewhere)
    assoc = node.associate([context(STUDY_ROOT_FIND)])
    try:
        assert assoc.accepted_contexts == []  # QRSCU from 127.0.0.1 is not the configured QRSCU
    finally:
        assoc.release()
    trusting = make_node(dicom_modalities=elsewhere, dicom_check_peer_host=False)
    assoc = trusting.associate([context(STUDY_ROOT_FIND)])
    try:
        assert len(assoc.accepted_contexts) == 1
    finally:
        assoc.release()


def test_per_ae_allow_list_and_open_mode(make_node: MakeNode) -> None:
    limited = {"qr": RemoteAE(aet=QR_AET, host="127.0.0.1", port=104, allow=["echo", "find"])}
    node = make_node(dicom_modalities=limited)
    assoc = node.associate([context(STUDY_ROOT_FIND), context(CT_IMAGE_STORAGE)])
    try:
        assert [str(cx.abstract_syntax) for cx in assoc.accepted_contexts] == [STUDY_ROOT_FIND]
    finally:
        assoc.release()
    opened = make_node(dicom_open=True)
    assoc = opened.associate([context(STUDY_ROOT_FIND)], aet="STRANGER")
    try:
        assert len(assoc.accepted_contexts) == 1
    finally:
        assoc.release()


def test_listener_reports_a_port_in_use(node: Node) -> None:
    from pacs.archive import Archive
    from pacs.dimse import DicomListener

    settings = node.settings.model_copy(update={"dicom_port": node.port, "data_dir": node.settings.data_dir})
    with Archive.open(settings) as archive, pytest.raises(OSError):
        DicomListener(archive).start()
    assert _echo_ok(node)  # the listener that holds the port is unharmed


def test_many_concurrent_echoes(node: Node) -> None:
    results: list[bool] = []

    def one() -> None:
        results.append(_echo_ok(node))

    threads = [threading.Thread(target=one) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [True] * 8
