"""The portal end to end on each archive backend (SQLite + filesystem, PostgreSQL + S3)."""

from __future__ import annotations

import io
import zipfile

from fastapi.testclient import TestClient

from pacs.accounts.patients import link_patient
from pacs.accounts.users import create_user
from pacs.archive import Archive
from tests.factories import make_ct_study
from tests.viewer_api.portal.conftest import OTHER, OWNER, PASSWORD, csrf_of, frame_url, login, store
from viewer_api.app import create_app


def test_patient_physician_and_share_flow(archive: Archive) -> None:
    owned = make_ct_study(OWNER, n_slices=3, rows=16, cols=16, seed=801)
    other = make_ct_study(OTHER, n_slices=3, rows=16, cols=16, seed=802)
    store(archive, owned + other)
    create_user(archive.engine, "doc", PASSWORD, "physician")
    create_user(archive.engine, "pat", PASSWORD, "patient")
    link_patient(archive.engine, "pat", OWNER.patient_id, OWNER.issuer or "")
    app = create_app(archive)
    owned_uid, other_uid = str(owned[0].StudyInstanceUID), str(other[0].StudyInstanceUID)

    patient = TestClient(app)
    csrf = login(patient, "pat")
    found = patient.get("/dicomweb/studies").json()
    assert [s["0020000D"]["Value"][0] for s in found] == [owned_uid]  # tuple (PatientID, Issuer) scope
    assert patient.get(frame_url(other[0])).status_code == 404
    share = patient.post(f"/api/studies/{owned_uid}/shares", json={"pin": "1234", "allow_download": True},
                         headers={"X-CSRF-Token": csrf})
    assert share.status_code == 201, share.text
    path = "/s/" + share.json()["url"].rsplit("/s/", 1)[1]

    visitor = TestClient(app)
    assert visitor.post(path, data={"pin": "9999"}).status_code == 401
    opened = visitor.post(path, data={"pin": "1234"})
    assert opened.status_code == 200 and "study-data" in opened.text
    assert visitor.get(frame_url(owned[1])).headers["content-type"] == "image/jpeg"
    assert visitor.get(f"/dicomweb/studies/{other_uid}/metadata").status_code == 404
    bundle = zipfile.ZipFile(io.BytesIO(visitor.get(f"/api/studies/{owned_uid}/archive.zip").content))
    assert "DICOMDIR" in bundle.namelist() and len(bundle.namelist()) == 4

    doc = TestClient(app)
    login(doc, "doc")
    assert doc.get("/viewer/worklist", params={"name": "müller"}).text.count('class="study"') == 1
    assert csrf_of(doc.get(f"/viewer/studies/{other_uid}").text)
    log = patient.get("/api/audit").json()
    assert {e["action"] for e in log} >= {"share-open", "download"} and all(e["study_uid"] == owned_uid for e in log)
    assert "view" not in {e["action"] for e in log if e["username"] == "doc"}  # doc viewed the other study
