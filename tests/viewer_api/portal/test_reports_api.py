"""The reports API over HTTP (issue 13): a physician drafts, signs and amends; the documents are in
QIDO-RS and WADO-RS; patients and share links read only the latest signed version; vendors and
plugin job tokens neither read nor write."""

from __future__ import annotations

import io

import pydicom
from fastapi.testclient import TestClient

from tests.factories import make_ct_study
from tests.viewer_api.portal.conftest import OWNER, Site, job_client, store

SR_ENHANCED = "1.2.840.10008.5.1.4.1.1.88.22"
PDF = "1.2.840.10008.5.1.4.1.1.104.1"
KOS = "1.2.840.10008.5.1.4.1.1.88.59"


def test_draft_sign_amend_and_what_each_caller_reads(site: Site) -> None:
    study = make_ct_study(OWNER, n_slices=2, rows=16, cols=16, seed=777)
    store(site.archive, study)
    uid = str(study[0].StudyInstanceUID)
    base = f"/api/studies/{uid}/reports"
    doc = site.client("physician")
    listing = doc.get(base).json()
    assert listing["versions"] == [] and listing["template"]["title"] == "CT report"
    assert listing["template"]["sections"]["technique"].startswith("CT of the")
    draft = doc.post(base, json={"sections": {"findings": "Nodule."}})
    assert draft.status_code == 201, draft.text
    report_id = draft.json()["id"]
    key = {"series_uid": str(study[1].SeriesInstanceUID), "sop_uid": str(study[1].SOPInstanceUID)}
    saved = doc.put(f"{base}/{report_id}", json={"sections": {"findings": "Nodule.", "impression": "Benign."},
                                                 "key_images": [key]})  # fmt: skip
    assert saved.status_code == 200 and saved.json()["key_images"][0]["sop_class_uid"] == str(study[1].SOPClassUID)
    assert doc.put(f"{base}/{report_id}", json={"sections": {"findings": 5}}).status_code == 400
    assert doc.post(f"{base}/{report_id}/amend").status_code == 409  # a draft is not amended, it is saved
    assert site.client("patient").get(base).json() == {"versions": [], "template": None, "citable_findings": None}
    signed = doc.post(f"{base}/{report_id}/sign")
    assert signed.status_code == 200, signed.text
    v1 = signed.json()
    assert (v1["status"], v1["version"], v1["amended"]) == ("signed", 1, False)
    assert doc.post(f"{base}/{report_id}/sign").status_code == 409

    # the documents are in the study for DICOMweb clients (QIDO-RS, WADO-RS)
    classes = {i["00080018"]["Value"][0]: i["00080016"]["Value"][0]
               for i in doc.get(f"/dicomweb/studies/{uid}/instances").json()}  # fmt: skip
    assert (classes[v1["sr_uid"]], classes[v1["pdf_uid"]], classes[v1["kos_uid"]]) == (SR_ENHANCED, PDF, KOS)
    series = doc.get(f"/dicomweb/studies/{uid}/instances", params={"SOPInstanceUID": v1["pdf_uid"]}).json()[0]
    wado = doc.get(f"/dicomweb/studies/{uid}/series/{series['0020000E']['Value'][0]}/instances/{v1['pdf_uid']}",
                   headers={"Accept": 'multipart/related; type="application/dicom"'})  # fmt: skip
    assert wado.status_code == 200
    part = wado.content[wado.content.index(b"DICM") - 128:]
    assert pydicom.dcmread(io.BytesIO(part)).MIMETypeOfEncapsulatedDocument == "application/pdf"

    amendment = doc.post(f"{base}/{report_id}/amend")
    assert amendment.status_code == 201 and amendment.json()["supersedes_id"] == report_id
    v2_id = amendment.json()["id"]
    doc.put(f"{base}/{v2_id}", json={"sections": {"findings": "Nodule.", "impression": "Benign; no follow-up."}})
    v2 = doc.post(f"{base}/{v2_id}/sign").json()
    assert (v2["version"], v2["amended"], v2["supersedes_id"]) == (2, True, report_id)
    staff = doc.get(base).json()["versions"]
    assert [(v["id"], v["status"], v["superseded_by_id"]) for v in staff] == [
        (v2_id, "signed", None), (report_id, "superseded", v2_id)]

    for kind in ("patient", "admin"):
        versions = site.client(kind).get(base).json()["versions"]
        assert [v["id"] for v in versions] == ([v2_id] if kind == "patient" else [v2_id, report_id])
    patient: TestClient = site.client("patient")
    assert patient.get(f"{base}/{report_id}").status_code == 404
    assert patient.get(f"{base}/{report_id}/pdf").status_code == 404
    pdf = patient.get(f"{base}/{v2_id}/pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf" and pdf.content[:5] == b"%PDF-"
    assert patient.post(base, json={}, headers=site.headers("patient")).status_code == 403
    page = patient.get(f"/viewer/studies/{uid}").text
    assert "Amended report (version 2" in page and "Benign; no follow-up." in page and f"{v2_id}/pdf" in page
    assert "Benign.<" not in page  # the superseded text is not shown to the patient


def test_vendors_and_job_tokens_neither_read_nor_write(site: Site) -> None:
    base = f"/api/studies/{site.owned_uid}/reports"
    job = job_client(site, 31)
    for client in (job, site.client("vendor")):
        assert client.get(base).status_code == 403
        assert client.post(base, json={}).status_code == 403
        assert client.post(f"{base}/1/sign").status_code == 403
    refusal = job.get(base).text
    assert "job" in refusal
