"""Physicians review AI findings (issue 13 item 3), and patients then see only what was accepted (item 4).

On the lesion CT of ``tests/viewer_api/test_findings.py`` (its SRs recorded as the results of the
built-in detector, version 1.2.3), a physician accepts the nodule and rejects the mass: the patient
and the share visitor then get exactly the nodule, marked reviewed, and can list and fetch its
review SR (which passes ``dciodvfy``) but not the rejection's nor the AI's SRs. An edit changes the
label and the size; the counts per plugin version follow the current decisions.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any, cast

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from ai_plugins.review.service import study_review_status
from ai_plugins.runner.models import PluginRecord, PluginResult
from ai_plugins.sr.review import person_name
from pacs.accounts.patients import link_patient
from pacs.accounts.shares import create_share
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.index.db import utcnow
from tests.viewer_api.portal.conftest import OWNER, PASSWORD, Site, bearer, build_site, login
from tests.viewer_api.test_findings import LesionStudy, add_lesion_study
from viewer_api.app import create_app

SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


@dataclass
class Reviewed:
    site: Site
    lesion: LesionStudy
    visitor: TestClient

    def client(self, kind: str) -> TestClient:
        return self.visitor if kind == "visitor" else self.site.client(kind)

    def post(self, kind: str, body: dict[str, Any]) -> Any:
        return self.client(kind).post(f"/api/studies/{self.lesion.study_uid}/findings/reviews", json=body,
                                      headers=self.site.headers(kind))  # fmt: skip

    def findings(self, kind: str) -> list[dict[str, Any]]:
        response = self.client(kind).get(f"/api/studies/{self.lesion.study_uid}/findings")
        assert response.status_code == 200, response.text
        rows: list[dict[str, Any]] = response.json()["findings"]
        return rows


def _record_results(site: Site, lesion: LesionStudy) -> None:
    now = utcnow()
    with site.archive.engine.begin() as conn:
        conn.execute(insert(PluginRecord).values(name="lesion-detector", version="1.2.3", source="entry-point",
                                                 created_at=now, updated_at=now))  # fmt: skip
        for job_id, sr in ((1, lesion.sr), (2, lesion.old_sr)):
            conn.execute(insert(PluginResult).values(
                job_id=job_id, study_uid=lesion.study_uid, plugin_name="lesion-detector", plugin_version="1.2.3",
                kind="SR", series_uid=str(sr.SeriesInstanceUID), sop_uid=str(sr.SOPInstanceUID),
                sop_class_uid=str(sr.SOPClassUID), summary_json='{"findings": 2, "classifications": []}',
                created_at=now))  # fmt: skip


def _reviewed_site(path: Path) -> Iterator[Reviewed]:
    for site in build_site(path):
        lesion = add_lesion_study(site)
        _record_results(site, lesion)
        share = create_share(site.archive.engine, site.app.state.authenticator.key, lesion.study_uid,
                             created_by=None, expires_in_days=7, max_days=365)  # fmt: skip
        with site.new_client() as visitor:
            assert visitor.get(f"/s/{share.token}").status_code == 200
            yield Reviewed(site, lesion, visitor)


@pytest.fixture(scope="module")
def reviewed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Reviewed]:
    """Shared by the tests that change nothing (refusals)."""
    yield from _reviewed_site(Path(tmp_path_factory.mktemp("review")))


@pytest.fixture
def fresh(tmp_path: Path) -> Iterator[Reviewed]:
    """Nothing reviewed yet, for a test that decides."""
    yield from _reviewed_site(tmp_path)


def _current(rows: list[dict[str, Any]], label: str) -> dict[str, Any]:
    [row] = [r for r in rows if r["label"] == label and not r["superseded"]]
    return row


def _decide(r: Reviewed, which: str, decision: str, **edit: Any) -> dict[str, Any]:
    row = _current(r.findings("physician"), which)
    response = r.post("physician", {"report_uid": row["report_uid"], "finding_key": row["finding_key"],
                                    "decision": decision, **edit})  # fmt: skip
    assert response.status_code == 201, response.text
    out: dict[str, Any] = response.json()
    return out


def test_only_physicians_decide(reviewed: Reviewed) -> None:
    row = _current(reviewed.findings("physician"), "Nodule")
    body = {"report_uid": row["report_uid"], "finding_key": row["finding_key"], "decision": "accepted"}
    for kind in ("patient", "vendor", "share", "visitor"):
        assert reviewed.post(kind, body).status_code == 403, kind
    assert reviewed.post("anonymous", body).status_code == 401
    bad = reviewed.post("physician", body | {"finding_key": "Lesion 99"})
    assert bad.status_code == 404 and "no such AI finding" in bad.text
    assert reviewed.post("physician", body | {"decision": "maybe"}).status_code == 400
    assert reviewed.post("physician", body | {"decision": "edited"}).status_code == 400  # an edit changes something
    assert reviewed.findings("patient") == []


def test_accept_one_reject_another_and_the_patient_sees_only_the_accepted(fresh: Reviewed, tmp_path: Path) -> None:
    reviewed = fresh
    accepted = _decide(reviewed, "Nodule", "accepted")
    rejected = _decide(reviewed, "Mass", "rejected")
    assert (accepted["decision"], accepted["plugin_name"], accepted["plugin_version"]) == \
        ("accepted", "lesion-detector", "1.2.3")  # fmt: skip
    staff = reviewed.findings("physician")
    assert len(staff) == 6  # the review documents are not listed as reports of their own
    assert _current(staff, "Nodule")["review"]["decision"] == "accepted"
    assert _current(staff, "Mass")["review"]["decision"] == "rejected"
    assert _current(staff, "Nodule")["review"]["reviewer"] == "doc"
    nodule = _current(staff, "Nodule")
    for kind in ("patient", "visitor"):
        [row] = reviewed.findings(kind)
        assert row["label"] == "Nodule" and row["reviewed"] is True and row["plugin"] == "Reviewed by a physician"
        assert row["text"] == "Lesion 1 · Diameter 36.0 mm" and row["superseded"] is False
        assert row["sop_uid"] == nodule["sop_uid"] and row["shape"] == "circle"
        assert sum(row["points"], []) == pytest.approx(sum(nodule["points"], []), abs=0.01)
        listed = reviewed.client(kind).get(f"/dicomweb/studies/{reviewed.lesion.study_uid}/instances").json()
        srs = {i["00080018"]["Value"][0] for i in listed if i["00080016"]["Value"][0].startswith(SR_CLASS_PREFIX)}
        assert srs == {accepted["review_sr_uid"]}
    # the review SR as DICOM: a verified Comprehensive 3D SR referencing the AI's SR, valid by dciodvfy
    series = reviewed.site.client("physician").get(
        f"/dicomweb/studies/{reviewed.lesion.study_uid}/instances", params={"SOPInstanceUID": accepted["review_sr_uid"]}
    ).json()[0]["0020000E"]["Value"][0]  # fmt: skip
    raw = reviewed.client("patient").get(
        f"/dicomweb/studies/{reviewed.lesion.study_uid}/series/{series}/instances/{accepted['review_sr_uid']}",
        headers={"Accept": 'multipart/related; type="application/dicom"'})  # fmt: skip
    assert raw.status_code == 200
    start = raw.content.index(b"DICM") - 128
    path = tmp_path / "review.dcm"
    path.write_bytes(raw.content[start:raw.content.rindex(b"\r\n--")])
    ds = pydicom.dcmread(path)
    assert ds.VerificationFlag == "VERIFIED" and ds.CompletionFlag == "COMPLETE"
    assert ds.VerifyingObserverSequence[0].VerifyingObserverName == "doc^"
    evidence = {s.ReferencedSOPInstanceUID for st in ds.CurrentRequestedProcedureEvidenceSequence
                for se in st.ReferencedSeriesSequence for s in se.ReferencedSOPSequence}  # fmt: skip
    assert str(reviewed.lesion.sr.SOPInstanceUID) in evidence
    if shutil.which("dciodvfy"):
        out = subprocess.run(["dciodvfy", str(path)], capture_output=True, text=True, check=False)
        errors = [line for line in (out.stdout + out.stderr).splitlines() if line.startswith("Error")]
        assert not errors, out.stdout + out.stderr
    not_ai = reviewed.post("physician", {"report_uid": accepted["review_sr_uid"], "finding_key": "Lesion 1",
                                         "decision": "rejected"})  # fmt: skip
    assert not_ai.status_code == 409 and "not an AI finding" in not_ai.text  # a review is not reviewed
    rejected_series = reviewed.client("patient").get(
        f"/dicomweb/studies/{reviewed.lesion.study_uid}/series/{series}/instances/{rejected['review_sr_uid']}")
    assert rejected_series.status_code == 404
    counts = reviewed.site.client("physician").get("/api/plugins/lesion-detector/1.2.3/reviews")
    assert counts.status_code == 200, counts.text
    assert counts.json() == {"plugin": "lesion-detector", "version": "1.2.3", "accepted": 1, "rejected": 1,
                             "edited": 0, "reviewed": 2}  # fmt: skip
    assert reviewed.site.client("vendor").get("/api/plugins/lesion-detector/1.2.3/reviews").status_code == 403
    assert reviewed.site.client("physician").get("/api/plugins/nope/1/reviews").status_code == 404


def test_an_edit_changes_label_and_size_and_the_patient_sees_the_edit(fresh: Reviewed) -> None:
    reviewed = fresh
    _decide(reviewed, "Nodule", "accepted")
    _decide(reviewed, "Mass", "rejected")
    edited = _decide(reviewed, "Nodule", "edited", label="Granuloma", diameter_mm=30.0)  # the newest decision counts
    assert edited["changes"] == {"label": ["Nodule", "Granuloma"], "diameter_mm": [36.0, 30.0]}
    [row] = reviewed.findings("patient")
    assert row["label"] == "Granuloma" and "Diameter 30.0 mm" in row["text"]
    spacing = float(reviewed.lesion.datasets[0].PixelSpacing[1])
    (cx, cy), (ex, _ey) = row["points"]
    assert ex - cx == pytest.approx(15.0 / spacing, abs=0.01)
    counts = reviewed.site.client("admin").get("/api/plugins/lesion-detector/1.2.3/reviews").json()
    assert (counts["accepted"], counts["edited"], counts["rejected"]) == (0, 1, 1)
    audit = reviewed.site.client("admin").get("/api/audit", params={"study": reviewed.lesion.study_uid}).json()
    details = [e["detail"] for e in (audit if isinstance(audit, list) else audit["events"])
               if e["action"] == "ai-review"]  # fmt: skip
    assert any("edited" in d and "label: Nodule -> Granuloma" in d for d in details), details


def test_worklist_shows_ai_done_flagged_reviewed(fresh: Reviewed) -> None:
    html = fresh.site.client("physician").get("/viewer/worklist").text
    assert 'data-ai="done flagged"' in html
    _decide(fresh, "High density lesion", "accepted")  # a study-level classification is reviewed too
    [row] = fresh.findings("patient")
    assert row["label"] == "High density lesion" and row["reviewed"] is True and row["points"] == []
    html = fresh.site.client("physician").get("/viewer/worklist").text
    assert 'data-ai="done flagged reviewed"' in html
    assert html.count("data-ai=") == 1  # the studies without AI results show no AI status


def test_review_on_each_backend(archive: Archive) -> None:
    """SQLite + filesystem and PostgreSQL + S3: migration 0006, the review SR through ingest, the release."""
    lesion = add_lesion_study(cast(Site, SimpleNamespace(archive=archive)))
    create_user(archive.engine, "doc", PASSWORD, "physician", full_name="Jane Doe")
    create_user(archive.engine, "pat", PASSWORD, "patient")
    link_patient(archive.engine, "pat", OWNER.patient_id, OWNER.issuer or "")
    app = create_app(archive)
    doc, patient = TestClient(app), TestClient(app)
    doc.headers["Authorization"] = f"Bearer {bearer(doc, 'doc')}"
    login(patient, "pat")
    url = f"/api/studies/{lesion.study_uid}/findings"
    rows = doc.get(url).json()["findings"]
    for label, decision in (("Nodule", "accepted"), ("Mass", "rejected")):
        row = _current(rows, label)
        made = doc.post(f"{url}/reviews", json={"report_uid": row["report_uid"], "finding_key": row["finding_key"],
                                                "decision": decision})  # fmt: skip
        assert made.status_code == 201, made.text
    [seen] = patient.get(url).json()["findings"]
    assert seen["label"] == "Nodule" and seen["reviewed"] is True
    decided = {r["label"]: r["review"]["decision"] for r in doc.get(url).json()["findings"] if r["review"]}
    assert decided == {"Nodule": "accepted", "Mass": "rejected"}


def test_patient_ai_none_releases_nothing_even_when_accepted(tmp_path: Path) -> None:
    for site in build_site(tmp_path, patient_ai="none"):
        lesion = add_lesion_study(site)
        r = Reviewed(site, lesion, site.client("share"))
        _decide(r, "Nodule", "accepted")
        assert r.findings("patient") == []
        listed = site.client("patient").get(f"/dicomweb/studies/{lesion.study_uid}/instances").json()
        assert not [i for i in listed if i["00080016"]["Value"][0].startswith(SR_CLASS_PREFIX)]


@pytest.mark.parametrize(("edit", "status", "words"), [
    ({"label": "a\\b"}, 400, "backslash"),
    ({"label": "   "}, 400, "label"),
    ({"label": "x" * 65}, 400, "label"),
    ({"diameter_mm": -3}, 400, "diameter_mm"),
    ({"diameter_mm": 0}, 400, "diameter_mm"),
    ({"centre": [5000, 10]}, 400, "outside the image"),
    ({"centre": [-1, 10]}, 400, "outside the image"),
    ({"centre": [1, 2, 3]}, 400, "centre"),
    ({"surprise": 1}, 400, "surprise"),
])  # fmt: skip
def test_bad_edits_are_refused_with_a_reason_and_change_nothing(reviewed: Reviewed, edit: dict[str, Any],
                                                                 status: int, words: str) -> None:  # fmt: skip
    row = _current(reviewed.findings("physician"), "Nodule")
    before = reviewed.findings("patient")
    response = reviewed.post("physician", {"report_uid": row["report_uid"], "finding_key": row["finding_key"],
                                           "decision": "edited", **edit})  # fmt: skip
    assert response.status_code == status and words in response.text, response.text
    assert reviewed.findings("patient") == before


def test_a_nan_centre_is_refused(reviewed: Reviewed) -> None:
    row = _current(reviewed.findings("physician"), "Nodule")
    body = json.dumps({"report_uid": row["report_uid"], "finding_key": row["finding_key"], "decision": "edited",
                       "centre": [0, 3]}).replace("[0, 3]", "[NaN, 3]")  # fmt: skip
    response = reviewed.client("physician").post(f"/api/studies/{reviewed.lesion.study_uid}/findings/reviews",
                                                 content=body, headers={"Content-Type": "application/json"})
    assert response.status_code == 400, response.text


@pytest.mark.parametrize(("name", "pn"), [("Jane Doe", "Doe^Jane"), ("Anna Maria Rossi", "Rossi^Anna Maria"),
                                          ("doc", "doc^"), ("", "Unknown^"), ("a^b=c", "c^a b")])  # fmt: skip
def test_reviewer_names_become_person_names(name: str, pn: str) -> None:
    assert person_name(name) == pn


def test_flagged_means_a_finding_or_a_classification_at_the_threshold(tmp_path: Path) -> None:
    for site in build_site(tmp_path):
        now = utcnow()
        summaries = {"1.2.3.1": {"findings": 0, "classifications": [{"probability": 0.49}]},
                     "1.2.3.2": {"findings": 0, "classifications": [{"probability": 0.5}]},
                     "1.2.3.3": {"findings": 1, "classifications": []}}  # fmt: skip
        with site.archive.engine.begin() as conn:
            for n, (uid, summary) in enumerate(summaries.items()):
                conn.execute(insert(PluginResult).values(
                    job_id=n, study_uid=uid, plugin_name="p", plugin_version="1", kind="SR", series_uid=f"{uid}.9",
                    sop_uid=f"{uid}.9.1", sop_class_uid="1.2.840.10008.5.1.4.1.1.88.34",
                    summary_json=json.dumps(summary), created_at=now))  # fmt: skip
        status = study_review_status(site.archive.engine, [*summaries, "1.2.3.4"], 0.5, 1)
        assert {uid: (s.ai_done, s.flagged, s.reviewed, s.reported) for uid, s in status.items()} == {
            "1.2.3.1": (True, False, False, False), "1.2.3.2": (True, True, False, False),
            "1.2.3.3": (True, True, False, False), "1.2.3.4": (False, False, False, False)}  # fmt: skip
