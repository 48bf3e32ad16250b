"""DICOM TLS: TLS 1.2+, server certificate, optional client certificate verification (certs made with openssl)."""

from __future__ import annotations

import socket
import ssl
import subprocess
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian
from pynetdicom import AE, evt
from pynetdicom.association import Association

from pacs.dimse.contexts import STUDY_ROOT_MOVE, VERIFICATION
from pacs.dimse.tls import server_context
from pacs.errors import SettingsError
from pacs.settings import RemoteAE
from tests.factories import CT_IMAGE_STORAGE
from tests.net import free_port
from tests.pacs.dimse.support import AET, DEST_AET, QR_AET, Node, context, run_tool

MakeNode = Callable[..., Node]


@dataclass(frozen=True)
class Pki:
    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path
    rogue_cert: Path  # self-signed: not issued by the CA
    rogue_key: Path


def _openssl(*args: str | Path) -> None:
    subprocess.run(["openssl", *map(str, args)], check=True, capture_output=True, timeout=60)


def _issue(d: Path, name: str, subject: str, ca: tuple[Path, Path], ext: str) -> tuple[Path, Path]:
    key, csr, cert, extfile = d / f"{name}.key", d / f"{name}.csr", d / f"{name}.crt", d / f"{name}.ext"
    extfile.write_text(ext)
    _openssl("req", "-new", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-subj", subject, "-out", csr)
    _openssl("x509", "-req", "-in", csr, "-CA", ca[0], "-CAkey", ca[1], "-CAcreateserial", "-days", "2",
             "-sha256", "-extfile", extfile, "-out", cert)
    return cert, key


@pytest.fixture(scope="session")
def pki(tmp_path_factory: pytest.TempPathFactory) -> Pki:
    d = tmp_path_factory.mktemp("pki")
    ca_key, ca_cert = d / "ca.key", d / "ca.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", ca_key, "-subj", "/CN=cloudfilm test CA",
             "-days", "2", "-sha256", "-addext", "basicConstraints=critical,CA:TRUE",
             "-addext", "keyUsage=critical,keyCertSign,cRLSign", "-out", ca_cert)
    server = _issue(d, "server", "/CN=localhost", (ca_cert, ca_key),
                    "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth,clientAuth\n")
    client = _issue(d, "client", "/CN=MODALITY", (ca_cert, ca_key), "extendedKeyUsage=clientAuth\n")
    rogue_key, rogue_cert = d / "rogue.key", d / "rogue.crt"
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", rogue_key, "-subj", "/CN=rogue",
             "-days", "2", "-out", rogue_cert)
    return Pki(ca_cert, server[0], server[1], client[0], client[1], rogue_cert, rogue_key)


def _tls_node(make_node: MakeNode, pki: Pki, *, verify_clients: bool = True) -> Node:
    return make_node(dicom_tls_port=0, dicom_tls_cert=pki.server_cert, dicom_tls_key=pki.server_key,
                     dicom_tls_ca=pki.ca if verify_clients else None)


def _client(pki: Pki, cert: Path | None, key: Path | None, *, max_version: ssl.TLSVersion | None = None
            ) -> ssl.SSLContext:
    ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(pki.ca))
    ctx.check_hostname = False
    if cert is not None and key is not None:
        ctx.load_cert_chain(cert, key)
    if max_version is not None:
        ctx.minimum_version = ssl.TLSVersion.MINIMUM_SUPPORTED
        ctx.maximum_version = max_version
    return ctx


def _tls_associate(node: Node, ctx: ssl.SSLContext, contexts: list[Any]) -> Association:
    ae = AE(ae_title="MODALITY")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 10
    assert node.listener.tls_port is not None
    return ae.associate("127.0.0.1", node.listener.tls_port, contexts=contexts, ae_title=AET,
                        tls_args=(ctx, "localhost"))


def test_tls_echo_and_store_with_a_client_certificate(make_node: MakeNode, pki: Pki,
                                                      small_study: list[Dataset]) -> None:
    node = _tls_node(make_node, pki)
    assert node.listener.tls_port not in (None, node.port)
    assoc = _tls_associate(node, _client(pki, pki.client_cert, pki.client_key),
                           [context(VERIFICATION), context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)])
    try:
        assert assoc.is_established
        assert assoc.send_c_echo().Status == 0x0000
        assert assoc.send_c_store(small_study[0]).Status == 0x0000
        tls = assoc.dul.socket.socket if assoc.dul.socket is not None else None
        assert isinstance(tls, ssl.SSLSocket) and tls.version() in ("TLSv1.2", "TLSv1.3")
    finally:
        assoc.release()
    assert run_tool("echoscu", "-aec", AET, "127.0.0.1", node.port).returncode == 0  # plain port still serves


@pytest.mark.parametrize("client", ["no certificate", "certificate from another CA"])
def test_tls_client_certificate_is_verified(make_node: MakeNode, pki: Pki, client: str) -> None:
    node = _tls_node(make_node, pki)
    cert, key = (None, None) if client == "no certificate" else (pki.rogue_cert, pki.rogue_key)
    assoc = _tls_associate(node, _client(pki, cert, key), [context(VERIFICATION)])
    assert not assoc.is_established


def test_tls_without_client_verification_accepts_any_client(make_node: MakeNode, pki: Pki) -> None:
    node = _tls_node(make_node, pki, verify_clients=False)
    assoc = _tls_associate(node, _client(pki, None, None), [context(VERIFICATION)])
    try:
        assert assoc.is_established
    finally:
        assoc.release()


def test_tls_below_1_2_is_refused_by_the_server(make_node: MakeNode, pki: Pki) -> None:
    node = _tls_node(make_node, pki)
    assert server_context(node.settings).minimum_version == ssl.TLSVersion.TLSv1_2
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        ctx = _client(pki, pki.client_cert, pki.client_key, max_version=ssl.TLSVersion.TLSv1_1)
    ctx.set_ciphers("DEFAULT:@SECLEVEL=0")  # let this client offer TLS 1.1, so the refusal is the server's
    assert node.listener.tls_port is not None
    raw = socket.create_connection(("127.0.0.1", node.listener.tls_port))
    with raw, pytest.raises(ssl.SSLError, match="PROTOCOL_VERSION|protocol version"), ctx.wrap_socket(raw) as tls:
        tls.recv(1)


def test_dcmtk_echoscu_over_tls(make_node: MakeNode, pki: Pki) -> None:
    node = _tls_node(make_node, pki)
    assert node.listener.tls_port is not None
    out = run_tool("echoscu", "-aec", AET, "+tls", pki.client_key, pki.client_cert, "+cf", pki.ca,
                   "127.0.0.1", node.listener.tls_port)
    assert out.returncode == 0, out.stderr


def test_silent_tls_client_does_not_block_the_handshakes_of_others(make_node: MakeNode, pki: Pki) -> None:
    node = _tls_node(make_node, pki)
    assert node.listener.tls_port is not None
    with socket.create_connection(("127.0.0.1", node.listener.tls_port)):
        started = time.monotonic()
        assoc = _tls_associate(node, _client(pki, pki.client_cert, pki.client_key), [context(VERIFICATION)])
        try:
            assert assoc.is_established
            assert time.monotonic() - started < 5
        finally:
            assoc.release()


def test_silent_tls_client_is_cut_when_its_artim_window_ends(make_node: MakeNode, pki: Pki) -> None:
    """The ARTIM window covers the TLS handshake: a client that never sends its ClientHello is cut."""
    node = make_node(dicom_tls_port=0, dicom_tls_cert=pki.server_cert, dicom_tls_key=pki.server_key,
                     dicom_artim_timeout=1.0)
    assert node.listener.tls_port is not None
    with socket.create_connection(("127.0.0.1", node.listener.tls_port)) as sock:
        started = time.monotonic()
        sock.settimeout(6)
        assert sock.recv(1) == b""
        assert time.monotonic() - started < 4


def test_c_move_to_a_tls_destination(make_node: MakeNode, pki: Pki, small_study: list[Dataset]) -> None:
    """The archive verifies the destination's certificate and presents its own (mutual TLS)."""
    dest_port = free_port()
    modalities = {"qr": RemoteAE(aet=QR_AET, host="127.0.0.1", port=free_port()),
                  "dest": RemoteAE(aet=DEST_AET, host="127.0.0.1", port=dest_port, tls=True, allow=["echo"])}
    node = make_node(dicom_modalities=modalities, dicom_tls_port=0, dicom_tls_cert=pki.server_cert,
                     dicom_tls_key=pki.server_key, dicom_tls_ca=pki.ca)
    node.store_datasets(small_study[:3])
    received: list[str] = []

    def on_store(event: Any) -> int:
        received.append(str(event.request.AffectedSOPInstanceUID))
        return 0x0000

    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH, cafile=str(pki.ca))
    server_ctx.load_cert_chain(pki.server_cert, pki.server_key)
    server_ctx.verify_mode = ssl.CERT_REQUIRED  # the destination insists on the archive's certificate
    dest = AE(ae_title=DEST_AET)
    dest.add_supported_context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)
    server = dest.start_server(("127.0.0.1", dest_port), block=False, ssl_context=server_ctx,
                               evt_handlers=[(evt.EVT_C_STORE, on_store)])
    assert server is not None
    try:
        assoc = node.associate([context(STUDY_ROOT_MOVE)])
        query = Dataset()
        query.QueryRetrieveLevel = "STUDY"
        query.StudyInstanceUID = small_study[0].StudyInstanceUID
        final = list(assoc.send_c_move(query, DEST_AET, STUDY_ROOT_MOVE))[-1][0]
        assoc.release()
    finally:
        server.shutdown()
    assert final.Status == 0x0000 and final.NumberOfCompletedSuboperations == 3
    assert sorted(received) == sorted(ds.SOPInstanceUID for ds in small_study[:3])


def test_tls_settings_errors_name_the_setting(make_node: MakeNode, pki: Pki, tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="CLOUDFILM_DICOM_TLS_CERT"):
        make_node(dicom_tls_port=0)
    with pytest.raises(SettingsError, match="CLOUDFILM_DICOM_TLS_KEY"):
        make_node(dicom_tls_port=0, dicom_tls_cert=pki.server_cert, dicom_tls_key=tmp_path / "missing.key")
    with pytest.raises(SettingsError, match="cannot load"):
        make_node(dicom_tls_port=0, dicom_tls_cert=pki.server_cert, dicom_tls_key=pki.client_key)
