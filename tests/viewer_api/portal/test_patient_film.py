"""The patient's film is safe (issue 13): no unreviewed AI output for patients, share visitors or other vendors.

A lesion CT with two AI Measurement Report SRs (``tests/viewer_api/test_findings.py``) of the
patient account's patient, shared by a physician. The patient and the share visitor must not find
or fetch either SR by any DICOMweb route (QIDO, WADO-RS, metadata, WADO-URI) nor see their findings,
while a physician still does; their pages show the hospital, the sharer, the exam date, the link's
expiry, the note and "Your report is not ready yet". A plugin job token sees its own vendor's
results and no other vendor's, and is refused in words about its job.
"""

from __future__ import annotations

import html as markup
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import insert

from ai_plugins.builtin.lesion_detector import LesionDetector
from ai_plugins.runner.models import PluginRecord, PluginResult
from ai_plugins.runner.tokens import issue_job_token
from ai_plugins.sdk import StudyInput
from ai_plugins.sr import build_result_objects
from pacs.accounts.shares import ShareInfo, create_share
from pacs.accounts.users import create_user
from pacs.errors import SettingsError
from pacs.index.db import utcnow
from pacs.settings import load_settings
from tests.factories import Lesion, make_ct_case
from tests.viewer_api.portal.conftest import OWNER, PASSWORD, Site, build_site, store
from tests.viewer_api.test_findings import LesionStudy, add_lesion_study
from viewer_api.viewer.patient_view import NOTE, REPORT_NOT_READY

HOSPITAL = "St. Example Hospital"
SR_CLASS_PREFIX = "1.2.840.10008.5.1.4.1.1.88."
SEG_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"


@dataclass
class Film:
    site: Site
    lesion: LesionStudy
    share: ShareInfo
    visitor: TestClient  # opened ``share``

    def client(self, kind: str) -> TestClient:
        return self.visitor if kind == "visitor" else self.site.client(kind)

    @property
    def srs(self) -> list[tuple[str, str]]:
        return [(str(sr.SeriesInstanceUID), str(sr.SOPInstanceUID)) for sr in (self.lesion.sr, self.lesion.old_sr)]


@pytest.fixture(scope="module")
def film(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Film]:
    for site in build_site(Path(tmp_path_factory.mktemp("film")), institution_name=HOSPITAL):
        doctor = create_user(site.archive.engine, "drdoe", PASSWORD, "physician", full_name="Dr. Jane Doe")
        lesion = add_lesion_study(site)
        share = create_share(site.archive.engine, site.app.state.authenticator.key, lesion.study_uid,
                             created_by=doctor.id, expires_in_days=7, max_days=365)  # fmt: skip
        with site.new_client() as visitor:
            assert visitor.get(f"/s/{share.token}").status_code == 200
            yield Film(site, lesion, share, visitor)


def _sop_classes(client: TestClient, study_uid: str) -> list[str]:
    response = client.get(f"/dicomweb/studies/{study_uid}/instances", params={"limit": "1000"})
    assert response.status_code == 200, response.text
    return [item["00080016"]["Value"][0] for item in response.json()]


@pytest.mark.parametrize("kind", ["patient", "visitor"])
def test_ai_results_are_neither_listed_nor_retrievable(film: Film, kind: str) -> None:
    client, uid = film.client(kind), film.lesion.study_uid
    everything = _sop_classes(film.site.client("physician"), uid)
    assert sum(c.startswith(SR_CLASS_PREFIX) for c in everything) == 2  # the control: staff see both SRs
    classes = _sop_classes(client, uid)
    assert len(classes) == len(film.lesion.datasets) and not any(c.startswith(SR_CLASS_PREFIX) for c in classes)
    series = client.get(f"/dicomweb/studies/{uid}/series").json()
    assert [s["0020000E"]["Value"][0] for s in series] == [film.lesion.series_uid]
    metadata = client.get(f"/dicomweb/studies/{uid}/metadata").json()
    assert len(metadata) == len(film.lesion.datasets)
    for series_uid, sop_uid in film.srs:
        base = f"/dicomweb/studies/{uid}/series/{series_uid}"
        assert client.get(f"{base}/instances/{sop_uid}").status_code == 404
        assert client.get(f"{base}/instances/{sop_uid}/metadata").status_code == 404
        assert client.get(base).status_code == 404
        listed = client.get(f"{base}/instances")
        assert listed.status_code == 404 or listed.json() == [], listed.text
        wado = client.get("/wado", params={"requestType": "WADO", "studyUID": uid, "seriesUID": series_uid,
                                           "objectUID": sop_uid, "contentType": "application/dicom"})  # fmt: skip
        assert wado.status_code == 404
        staff = film.site.client("physician").get(f"{base}/instances/{sop_uid}")
        assert staff.status_code == 200  # the control
    whole = client.get(f"/dicomweb/studies/{uid}", headers={"Accept": 'multipart/related; type="application/dicom"'})
    assert whole.status_code == 200 and whole.content.count(b"1.2.840.10008.5.1.4.1.1.88.") == 0
    assert client.get(f"/api/studies/{uid}/findings").json() == {"findings": []}


def _model(html: str) -> dict[str, object]:
    match = re.search(r'<script type="application/json" id="study-data">(.*?)</script>', html, re.S)
    assert match
    model: dict[str, object] = json.loads(match.group(1))
    return model


def test_the_share_page_says_who_what_when_and_that_the_report_is_not_ready(film: Film) -> None:
    page = film.site.new_client().get(f"/s/{film.share.token}")
    assert page.status_code == 200
    html = markup.unescape(page.text)
    assert HOSPITAL in html and "Shared by Dr. Jane Doe" in html
    date = film.lesion.datasets[0].StudyDate
    assert f"Exam {date[:4]}-{date[4:6]}-{date[6:]}" in html
    assert f"Link valid until {film.share.expires_at:%Y-%m-%d}" in html
    assert NOTE in html and REPORT_NOT_READY in html
    assert "probability" not in html.lower()
    urls = _model(html)["urls"]
    assert isinstance(urls, dict) and urls["findings"] == f"/api/studies/{film.lesion.study_uid}/findings"


def test_the_patients_own_page_has_the_card_without_a_sharer(film: Film) -> None:
    html = markup.unescape(film.site.client("patient").get(f"/viewer/studies/{film.lesion.study_uid}").text)
    assert HOSPITAL in html and NOTE in html and REPORT_NOT_READY in html
    assert "Shared by" not in html and "Link valid until" not in html


def test_staff_pages_have_no_patient_card(film: Film) -> None:
    html = film.site.client("physician").get(f"/viewer/studies/{film.lesion.study_uid}").text
    assert "film-card" not in html and REPORT_NOT_READY not in html


def test_patient_ai_none_offers_no_findings_at_all(tmp_path: Path) -> None:
    for site in build_site(tmp_path, patient_ai="none"):
        html = site.client("share").get(f"/s/{site.share.token}").text
        urls = _model(html)["urls"]
        assert isinstance(urls, dict) and urls["findings"] is None
        assert REPORT_NOT_READY in html
        staff = _model(site.client("admin").get(f"/viewer/studies/{site.owned_uid}").text)["urls"]
        assert isinstance(staff, dict) and staff["findings"]  # staff always have the panel


def test_patient_ai_accepts_only_its_two_values(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLOUDFILM_PATIENT_AI", "none")
    assert load_settings().patient_ai == "none"
    monkeypatch.setenv("CLOUDFILM_PATIENT_AI", "all")
    with pytest.raises(SettingsError, match="PATIENT_AI"):
        load_settings()


# --- plugin job tokens --------------------------------------------------------------------------


def _record(film: Film) -> None:
    """The new SR as the built-in detector's result, the old one as vendor acme's hosted plugin's."""
    now = utcnow()
    engine = film.site.archive.engine
    rows = [("lesion-detector", "1.2.3", "entry-point", "", film.lesion.sr),
            ("acme-ai", "1.0", "remote", "acme", film.lesion.old_sr)]  # fmt: skip
    with engine.begin() as conn:
        for job_id, (name, version, source, owner, sr) in enumerate(rows, start=900):
            conn.execute(insert(PluginRecord).values(name=name, version=version, source=source, registered_by=owner,
                                                     created_at=now, updated_at=now))  # fmt: skip
            conn.execute(insert(PluginResult).values(
                job_id=job_id, study_uid=film.lesion.study_uid, plugin_name=name, plugin_version=version, kind="SR",
                series_uid=str(sr.SeriesInstanceUID), sop_uid=str(sr.SOPInstanceUID),
                sop_class_uid=str(sr.SOPClassUID), created_at=now))  # fmt: skip
        conn.execute(insert(PluginRecord).values(name="acme-ai", version="2.0", source="remote", registered_by="acme",
                                                 created_at=now, updated_at=now))  # fmt: skip
        conn.execute(insert(PluginRecord).values(name="acme-seg", version="1", source="remote", registered_by="acme",
                                                 created_at=now, updated_at=now))  # fmt: skip


def _job(film: Film, plugin: str, job_id: int) -> TestClient:
    token, _ = issue_job_token(film.site.app.state.authenticator.key, study_uid=film.lesion.study_uid,
                               job_id=job_id, plugin=plugin, lifetime=timedelta(minutes=5))  # fmt: skip
    return film.site.new_client(headers={"Authorization": f"Bearer {token}"})


def _srs_seen(client: TestClient, film: Film) -> set[str]:
    response = client.get(f"/dicomweb/studies/{film.lesion.study_uid}/instances")
    assert response.status_code == 200, response.text
    seen = {i["00080018"]["Value"][0] for i in response.json() if i["00080016"]["Value"][0].startswith(SR_CLASS_PREFIX)}
    for series_uid, sop_uid in film.srs:
        status = client.get(f"/dicomweb/studies/{film.lesion.study_uid}/series/{series_uid}/instances/{sop_uid}")
        assert status.status_code == (200 if sop_uid in seen else 404)
    return seen


def test_job_tokens_see_their_own_vendors_results_and_no_other(film: Film) -> None:
    _record(film)
    new, old = str(film.lesion.sr.SOPInstanceUID), str(film.lesion.old_sr.SOPInstanceUID)
    assert _srs_seen(_job(film, "lesion-detector@1.2.3", 950), film) == {new}
    assert _srs_seen(_job(film, "acme-ai@2.0", 951), film) == {old}  # another version of the vendor's plugin
    assert _srs_seen(_job(film, "acme-seg@1", 952), film) == {old}  # another plugin of the same vendor
    assert _srs_seen(_job(film, "stranger@1", 953), film) == set()  # unknown plugin: nobody's results
    images = _job(film, "stranger@1", 953).get(f"/dicomweb/studies/{film.lesion.study_uid}/series")
    assert [s["0020000E"]["Value"][0] for s in images.json()] == [film.lesion.series_uid]


def test_job_token_refusals_speak_of_the_job(film: Film) -> None:
    job = _job(film, "acme-ai@2.0", 954)
    for path in (f"/api/studies/{film.lesion.study_uid}/findings", "/dicomweb/studies", "/api/plugins",
                 f"/dicomweb/studies/{film.site.other_uid}/metadata"):  # fmt: skip
        refused = job.get(path)
        assert refused.status_code == 403, path
        assert "job 954" in refused.text and "share" not in refused.text, refused.text


def _study(client: TestClient, uid: str, **filters: str) -> list[dict[str, Any]]:
    params = {"StudyInstanceUID": uid, "includefield": "00080061,00201206,00201208"} | filters
    found: list[dict[str, Any]] = client.get("/dicomweb/studies", params=params).json()
    return found


@pytest.mark.parametrize("kind", ["patient", "visitor"])
def test_study_counts_and_modalities_do_not_betray_the_withheld_results(film: Film, kind: str) -> None:
    uid = film.lesion.study_uid
    [staff] = _study(film.site.client("physician"), uid)
    assert staff["00080061"]["Value"] == ["CT", "SR"] and staff["00201208"]["Value"] == [26]  # the control
    client = film.client(kind)
    if kind == "patient":  # visitors may not search studies; they see the study's series
        [mine] = _study(client, uid)
        assert mine["00080061"]["Value"] == ["CT"]
        assert mine["00201206"]["Value"] == [1] and mine["00201208"]["Value"] == [len(film.lesion.datasets)]
        assert _study(client, uid, ModalitiesInStudy="SR") == []
    series = client.get(f"/dicomweb/studies/{uid}/series", params={"includefield": "00201208"}).json()
    assert [s["00080060"]["Value"] for s in series] == [["CT"]]
    assert series[0]["00201208"]["Value"] == [len(film.lesion.datasets)]


def test_the_lesion_detectors_seg_is_withheld_too(film: Film) -> None:
    """The built-in detector's SR and SEG, as the runner builds them, on another study of the patient."""
    case = make_ct_case(OWNER, n_slices=12, rows=64, cols=64, lesion=Lesion((0.0, 0.0, 0.0), 15.0), seed=33,
                        study_description="CT SEG")  # fmt: skip
    study = StudyInput.from_datasets(case.datasets)
    detector = LesionDetector()
    objects = build_result_objects(detector.run(study), study, detector.info())
    assert {str(o.SOPClassUID) for o in objects} == {SEG_CLASS, COMPREHENSIVE_3D_SR}
    store(film.site.archive, [*case.datasets, *objects])
    assert set(_sop_classes(film.site.client("physician"), case.study_uid)) >= {SEG_CLASS, COMPREHENSIVE_3D_SR}
    assert set(_sop_classes(film.site.client("patient"), case.study_uid)) == {str(case.datasets[0].SOPClassUID)}
    for obj in objects:
        path = f"/dicomweb/studies/{case.study_uid}/series/{obj.SeriesInstanceUID}/instances/{obj.SOPInstanceUID}"
        assert film.site.client("patient").get(path).status_code == 404
        assert film.site.client("physician").get(path).status_code == 200
