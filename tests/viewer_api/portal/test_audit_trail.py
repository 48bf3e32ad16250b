"""The audit trail over HTTP: what is recorded, who may read it, and the DICOM export."""

from __future__ import annotations

from xml.etree import ElementTree as ET

from tests.viewer_api.portal.conftest import PASSWORD, Site, login


def _events(site: Site, **params: str) -> list[dict[str, object]]:
    response = site.client("admin").get("/api/audit", params=params | {"limit": "1000"})
    assert response.status_code == 200
    events: list[dict[str, object]] = response.json()
    return events


def test_logins_views_searches_downloads_and_shares_are_recorded(fresh_site: Site) -> None:
    c = fresh_site.new_client()
    c.post("/login", data={"username": "doc", "password": "nope"}, follow_redirects=False)
    login(c, "doc")
    c.get("/viewer/worklist", params={"name": "doe"})
    c.get(f"/viewer/studies/{fresh_site.owned_uid}")
    c.get(f"/api/studies/{fresh_site.owned_uid}/film.png")
    admin = fresh_site.client("admin")
    share = admin.post(f"/api/studies/{fresh_site.owned_uid}/shares", json={"pin": "1357"},
                       headers=fresh_site.headers("admin")).json()
    visitor = fresh_site.new_client()
    path = "/s/" + share["url"].rsplit("/s/", 1)[1]
    visitor.post(path, data={"pin": "0000"})
    visitor.post(path, data={"pin": "1357"})
    admin.delete(f"/api/studies/{fresh_site.owned_uid}/shares/{share['id']}", headers=fresh_site.headers("admin"))

    events = _events(fresh_site)
    seen = {(e["action"], e["outcome"], e["username"]) for e in events}
    assert ("login", "failure", "doc") in seen and ("login", "success", "doc") in seen
    assert ("search", "success", "doc") in seen
    assert ("view", "success", "doc") in seen and ("download", "success", "doc") in seen
    assert ("share-create", "success", "admin") in seen and ("share-revoke", "success", "admin") in seen
    opened = [e for e in events if e["action"] == "share-open"]
    assert opened and opened[0]["share_id"] == share["id"] and opened[0]["username"] == ""
    failures = [e for e in events if e["action"] == "share-pin-failure"]
    assert failures and failures[0]["outcome"] == "failure"
    view = [e for e in events if e["action"] == "view"][0]
    assert view["study_uid"] == fresh_site.owned_uid and view["patient_id"] and view["source"] == "testclient"

    assert {e["action"] for e in _events(fresh_site, user="doc")} >= {"login", "search", "view", "download"}
    assert all(e["study_uid"] == fresh_site.owned_uid for e in _events(fresh_site, study=fresh_site.owned_uid))
    assert _events(fresh_site, since="2999-01-01") == []
    assert fresh_site.client("admin").get("/api/audit", params={"since": "yesterday"}).status_code == 400


def test_patient_sees_who_opened_their_studies(fresh_site: Site) -> None:
    doc = fresh_site.new_client()
    login(doc, "doc")
    doc.get(f"/viewer/studies/{fresh_site.owned_uid}")
    doc.get(f"/viewer/studies/{fresh_site.other_uid}")
    patient = fresh_site.client("patient")
    events = patient.get("/api/audit").json()
    assert {(e["username"], e["study_uid"]) for e in events if e["action"] == "view"} == {
        ("doc", fresh_site.owned_uid)}
    assert all(e["study_uid"] == fresh_site.owned_uid for e in events)
    assert not any(e["action"] == "login" for e in events)
    home = patient.get("/viewer/home")
    assert "Who opened my studies" in home.text and "doc" in home.text


def test_export_as_dicom_audit_messages(fresh_site: Site) -> None:
    c = fresh_site.new_client()
    c.post("/api/auth/token", data={"username": "doc", "password": PASSWORD})
    response = fresh_site.client("admin").get("/api/audit", params={"format": "dicom"})
    assert response.status_code == 200 and response.headers["content-type"].startswith("application/xml")
    root = ET.fromstring(response.content)
    messages = root.findall("AuditMessage")
    assert messages
    logins = [m for m in messages if m.find("EventIdentification/EventID").get("csd-code") == "110114"]  # type: ignore[union-attr]
    assert logins and logins[0].find("ActiveParticipant").get("UserID") == "doc"  # type: ignore[union-attr]


def test_dicomweb_requests_are_recorded_by_the_middleware(fresh_site: Site) -> None:
    from tests.factories import PATIENTS, make_ct_study, to_bytes

    doc = fresh_site.client("physician")
    ds = make_ct_study(PATIENTS[5], n_slices=1, rows=16, cols=16, seed=77)[0]
    boundary = "audit-boundary"
    body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + to_bytes(ds)
            + f"\r\n--{boundary}--\r\n".encode())
    stored = doc.post("/dicomweb/studies", content=body,
                      headers={"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}'})
    assert stored.status_code == 200
    new_uid = str(ds.StudyInstanceUID)
    doc.get("/dicomweb/studies", params={"PatientName": "Doe*"})
    doc.get(f"/dicomweb/studies/{new_uid}/metadata")
    doc.get(f"/dicomweb/studies/{new_uid}")
    doc.get(f"/dicomweb/studies/{new_uid}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}/frames/1/rendered")
    fresh_site.client("patient").delete(f"/dicomweb/studies/{new_uid}", headers=fresh_site.headers("patient"))
    deleted = fresh_site.client("admin").delete(f"/dicomweb/studies/{new_uid}", headers=fresh_site.headers("admin"))
    assert deleted.status_code == 204

    events = [e for e in _events(fresh_site) if e["action"] in ("stow", "search", "view", "download", "delete")
              and (e["study_uid"] in (new_uid, "") or e["action"] == "search")]
    seen = [(e["action"], e["outcome"], e["username"]) for e in reversed(events)]
    assert ("stow", "success", "doc") in seen
    assert ("search", "success", "doc") in seen
    assert ("view", "success", "doc") in seen and ("download", "success", "doc") in seen
    assert ("delete", "denied", "pat") in seen and ("delete", "success", "admin") in seen
    search = [e for e in events if e["action"] == "search" and e["username"] == "doc"][0]
    assert "PatientName=Doe" in str(search["detail"])
    assert not [e for e in events if "rendered" in str(e["detail"])]  # frames are not recorded one by one
