"""HL7 ADT^A08 (update patient) and ADT^A40 (merge patient) over a real MLLP socket become corrections:
DCMTK ``findscu`` and QIDO-RS see the new values as soon as the ACK is back; SQLite and PostgreSQL."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydicom import dcmread

from pacs.access import AccessScope
from pacs.corrections import service
from pacs.hl7 import Hl7Listener
from pacs.settings import Settings
from tests.conftest import ARCHIVE_BACKENDS, archive_settings
from tests.factories import PATIENTS, make_ct_study
from tests.pacs.dimse.support import AET, QR_AET, Node, dicom_settings, run_tool, running
from tests.pacs.hl7.support import connected, msh, segment
from tests.viewer_api.conftest import make_app


@pytest.fixture(params=ARCHIVE_BACKENDS)
def node(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[Node, int]]:
    for base in archive_settings(str(request.param), tmp_path, request):
        settings: Settings = dicom_settings(base, hl7_port=0, hl7_host="127.0.0.1", auth_disabled=True)
        with running(settings) as started, contextlib.ExitStack() as stack:
            listener = Hl7Listener(started.archive)
            listener.start()
            stack.callback(listener.stop)
            yield started, listener.port


def a08(control_id: str, patient_id: str, name: str, birth: str, sex: str) -> bytes:
    return ("\r".join([msh("ADT^A08^ADT_A01", control_id), segment("EVN", {1: "A08"}),
                       segment("PID", {3: f"{patient_id}^^^", 5: name, 7: birth, 8: sex})]) + "\r").encode()


def a40(control_id: str, survivor: str, prior: str, prior_issuer: str = "") -> bytes:
    return ("\r".join([msh("ADT^A40^ADT_A39", control_id), segment("EVN", {1: "A40"}),
                       segment("PID", {3: f"{survivor}^^^"}),
                       segment("MRG", {1: f"{prior}^^^{prior_issuer}"})]) + "\r").encode()


def _findscu_studies(node: Node, tmp_path: Path, *keys: str) -> list[tuple[str, str, str]]:
    out = tmp_path / f"find{len(list(tmp_path.glob('find*')))}"
    out.mkdir()
    done = run_tool("findscu", "-S", "-aet", QR_AET, "-aec", AET, "-X", "-od", out, "127.0.0.1", node.port,
                    "-k", "QueryRetrieveLevel=STUDY", "-k", "StudyInstanceUID", "-k", "PatientName",
                    "-k", "PatientID", *(arg for key in keys for arg in ("-k", key)))
    assert done.returncode == 0, done.stderr
    found = [dcmread(p) for p in out.glob("rsp*.dcm")]
    return sorted((str(d.StudyInstanceUID), str(d.PatientName), str(d.PatientID)) for d in found)


def test_a08_and_a40_correct_the_archive_at_once(node: tuple[Node, int], tmp_path: Path) -> None:
    dicom, port = node
    doe = make_ct_study(PATIENTS[0], n_slices=2, rows=16, cols=16, seed=601)
    obrien = make_ct_study(PATIENTS[5], n_slices=2, rows=16, cols=16, seed=602)
    dicom.store_datasets(doe + obrien)
    doe_uid, obrien_uid = str(doe[0].StudyInstanceUID), str(obrien[0].StudyInstanceUID)
    with connected(port) as client:
        ack = client.send(a08("A08-1", "CF-0001", "Doe^Johnny^^Jr", "19600313", "M"))
        assert ack.code == "AA", ack.reason
        assert _findscu_studies(dicom, tmp_path, "PatientName=Doe^Johnny*") == [
            (doe_uid, "Doe^Johnny^^^Jr", "CF-0001")]
        with TestClient(make_app(dicom.archive, AccessScope.everything())) as web:
            [study] = web.get("/dicomweb/studies", params={"PatientID": "CF-0001"}).json()
            assert study["00100010"]["Value"] == [{"Alphabetic": "Doe^Johnny^^^Jr"}]
            assert web.get("/dicomweb/studies", params={"PatientName": "Doe^John"}).json() == []

        unknown = client.send(a08("A08-2", "NOT-HERE", "Nobody^Here", "20000101", "F"))
        assert unknown.code == "AA"  # a feed of the whole hospital: patients the archive lacks are fine

        merged = client.send(a40("A40-1", "CF-0001", "CF-0006"))
        assert merged.code == "AA", merged.reason
    assert _findscu_studies(dicom, tmp_path, "PatientID=CF-0001") == sorted([
        (doe_uid, "Doe^Johnny^^^Jr", "CF-0001"), (obrien_uid, "Doe^Johnny^^^Jr", "CF-0001")])
    assert _findscu_studies(dicom, tmp_path, "PatientID=CF-0006") == []
    made = service.list_corrections(dicom.archive.engine)
    assert [(c.kind, c.source, c.actor) for c in made] == [("merge-patients", "hl7", "hl7:RIS"),
                                                         ("update-patient", "hl7", "hl7:RIS")]
    assert made[1].before["PatientName"] == "Doe^John" and made[1].after["PatientBirthDate"] == "19600313"
