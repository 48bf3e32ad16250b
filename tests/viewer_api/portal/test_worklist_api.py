"""The modality worklist over HTTP: admins schedule, update, list, read and cancel entries; bad values
are a 400 naming the value; every request is audited; a physician is refused."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.viewer_api.portal.conftest import Site, build_site


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    yield from build_site(tmp_path)


def test_worklist_api(site: Site) -> None:
    admin = site.client("admin")
    headers = site.headers("admin")
    order = {"accession_number": "API1", "patient_id": "P9", "patient_name": "Ödegaard^Ola", "birth_date": "19800101",
             "sex": "M", "modality": "MR", "station_aet": "MR01", "start_date": "20260405", "start_time": "0800",
             "requested_procedure": "MR KNEE"}
    created = admin.post("/api/worklist", json=order, headers=headers)
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["status"], body["source"], body["patient_name"]) == ("SCHEDULED", "api", "Ödegaard^Ola")
    assert body["study_uid"] and body["performed"] == []

    updated = admin.post("/api/worklist", json={**order, "start_time": "0930"}, headers=headers)
    assert updated.status_code == 200 and updated.json()["start_time"] == "0930"
    assert updated.json()["study_uid"] == body["study_uid"]  # kept across updates

    bad = admin.post("/api/worklist", json={**order, "accession_number": "API2", "birth_date": "19801340"},
                     headers=headers)
    assert bad.status_code == 400 and "birth date '19801340' is not a date" in bad.text

    listed = admin.get("/api/worklist", params={"station": "MR01", "date": "20260405"}).json()
    assert [e["accession_number"] for e in listed] == ["API1"]
    assert admin.get("/api/worklist/API1").json()["modality"] == "MR"

    cancelled = admin.delete("/api/worklist/API1", headers=headers)
    assert cancelled.status_code == 200 and cancelled.json()["status"] == "CANCELED"
    assert admin.get("/api/worklist", params={"status": "SCHEDULED"}).json() == []
    assert admin.get("/api/worklist", params={"status": "CANCELED"}).json()[0]["accession_number"] == "API1"
    assert admin.delete("/api/worklist/NOPE", headers=headers).status_code == 404

    assert site.client("physician").get("/api/worklist", headers=site.headers("physician")).status_code == 403
    audit = admin.get("/api/audit", params={"action": "worklist", "limit": "50"}).json()
    assert any("POST /api/worklist 201" in a["detail"] for a in audit)
    assert any("DELETE /api/worklist/API1 200" in a["detail"] for a in audit)
    assert any(a["outcome"] == "denied" for a in audit)
