"""The viewer's pages and downloads: worklist search, patient home, the study model, film, ZIP."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import pydicom
import pytest
from PIL import Image

from pacs.access import AccessScope
from pacs.retrieve import find_instances, open_instance
from tests.factories import make_ct_study
from tests.viewer_api.portal.conftest import OTHER, OWNER, Site, build_site, store
from viewer_api.viewer.model import study_view


def _found(site: Site, **params: str) -> list[str]:
    page = site.client("admin").get("/viewer/worklist", params=params)
    assert page.status_code == 200, page.text
    return re.findall(r'href="/viewer/studies/([0-9.]+)"', page.text)


def test_worklist_search(site: Site) -> None:
    assert set(_found(site)) >= {site.owned_uid, site.other_uid}
    assert _found(site, name="müller") == [site.owned_uid]
    assert _found(site, name="MULLER") == [site.owned_uid]
    assert _found(site, name="doe") == [site.other_uid]
    assert _found(site, patient_id=OWNER.patient_id) == [site.owned_uid]
    assert _found(site, accession=str(site.other[0].AccessionNumber)) == [site.other_uid]
    assert site.owned_uid in _found(site, date_from="2024-01-01", date_to="2024-01-31")
    assert _found(site, date_from="2025-01-01") == []
    assert site.owned_uid in _found(site, modality="CT") and _found(site, modality="MR") == []
    bad = site.client("admin").get("/viewer/worklist", params={"date_from": "soon"})
    assert bad.status_code == 200 and "dates are YYYY-MM-DD" in bad.text


def test_worklist_pages(tmp_path: object) -> None:
    from pathlib import Path

    from tests.viewer_api.portal.conftest import build_site

    for site in build_site(Path(str(tmp_path))):
        for n in range(26):
            store(site.archive, make_ct_study(OTHER, n_slices=1, rows=8, cols=8, seed=1000 + n,
                                              study_date=f"2023{1 + n % 12:02d}{1 + n:02d}"))
        first = site.client("admin").get("/viewer/worklist", params={"name": "doe"})
        assert len(re.findall(r'class="study"', first.text)) == 25 and "page=2" in first.text
        second = site.client("admin").get("/viewer/worklist", params={"name": "doe", "page": "2"})
        assert len(re.findall(r'class="study"', second.text)) == 2 and "page=1" in second.text
        assert "page=3" not in second.text


def test_patient_home(site: Site) -> None:
    page = site.client("patient").get("/viewer/home")
    assert page.status_code == 200
    assert site.owned_uid in page.text and site.other_uid not in page.text
    assert "share link" in page.text  # the link made by the admin is listed with its state
    empty = site.new_client()
    from tests.viewer_api.portal.conftest import login

    login(empty, "pat2")
    assert "No studies are linked to your account yet" in empty.get("/viewer/home").text


def test_landing_page_by_role(site: Site) -> None:
    assert site.client("admin").get("/viewer/", follow_redirects=False).headers["location"] == "/viewer/worklist"
    assert site.client("patient").get("/viewer/", follow_redirects=False).headers["location"] == "/viewer/home"
    assert site.client("share").get("/viewer/", follow_redirects=False).headers["location"] == \
        f"/viewer/studies/{site.owned_uid}"
    assert site.client("vendor").get("/viewer/").status_code == 403
    assert site.client("admin").get("/", follow_redirects=False).headers["location"] == "/viewer/"


def test_study_model_orders_slices_head_first(site: Site) -> None:
    view = study_view(site.archive.engine, AccessScope.everything(), site.owned_uid)
    assert view.header.patient_id == OWNER.patient_id and view.header.issuer == OWNER.issuer
    series = view.series[0]
    assert series.modality == "CT" and series.window == (40.0, 400.0)
    z = {str(ds.SOPInstanceUID): float(ds.ImagePositionPatient[2]) for ds in site.owned}
    positions = [z[img.sop] for img in series.images]
    assert positions == sorted(positions, reverse=True)
    presets = {p["name"] for p in view.as_json()["series"][0]["presets"]}
    assert {"Lung", "Mediastinum", "Bone", "Brain"} <= presets


def test_viewer_page_embeds_the_model_and_the_first_image(site: Site) -> None:
    page = site.client("admin").get(f"/viewer/studies/{site.owned_uid}").text
    model = json.loads(re.search(r'id="study-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr]
    images = model["series"][0]["images"]
    start = model["start"]["index"]
    assert f'src="/dicomweb/studies/{site.owned_uid}/series/' in page
    assert f"/instances/{images[start]['sop']}/frames/1/rendered" in page
    assert model["urls"]["findings"] == f"/api/studies/{site.owned_uid}/findings"
    assert model["urls"]["ohif"] is None and "Open in OHIF" not in page


def _model(page: str) -> dict[str, object]:
    return json.loads(re.search(r'id="study-data">(.*?)</script>', page, re.S).group(1))  # type: ignore[union-attr,no-any-return]


def test_simple_tools_for_patients_and_no_ohif_for_share_visitors(tmp_path: Path) -> None:
    """Patients and share visitors start with the simple toolbar; a share visitor, who cannot sign in to
    /ohif/, gets no OHIF link even where OHIF is installed."""
    dist = tmp_path / "ohif"
    dist.mkdir()
    (dist / "index.html").write_text("<!doctype html><title>OHIF</title>")
    for site in build_site(tmp_path, ohif_dir=dist):
        expected = {"admin": ("full", True), "physician": ("full", True), "patient": ("simple", True),
                    "share": ("simple", False)}  # fmt: skip
        for kind, (tools, ohif) in expected.items():
            page = site.client(kind).get(f"/viewer/studies/{site.owned_uid}").text
            model = _model(page)
            assert model["tools"] == tools, kind
            assert ('class="viewer tools-simple"' in page) == (tools == "simple"), kind
            assert (model["urls"]["ohif"] is not None) == ohif, kind  # type: ignore[index]
            assert ('id="open-ohif"' in page) == ohif, kind


def test_open_in_ohif_link_when_configured(tmp_path: object) -> None:
    from pathlib import Path

    from tests.viewer_api.portal.conftest import build_site

    ohif = Path(str(tmp_path)) / "ohif"
    ohif.mkdir()
    for site in build_site(Path(str(tmp_path)), ohif_dir=ohif):
        link = f'href="/ohif/viewer?StudyInstanceUIDs={site.owned_uid}"'
        assert link not in site.client("admin").get(f"/viewer/studies/{site.owned_uid}").text  # no build there
        (ohif / "index.html").write_text("<html></html>")
        assert link in site.client("admin").get(f"/viewer/studies/{site.owned_uid}").text
        worklist = site.client("admin").get("/viewer/worklist").text  # one click from the worklist too
        assert link in worklist and 'class="open-ohif"' in worklist


@pytest.mark.parametrize("kind", ["png", "pdf"])
def test_film_sheet(site: Site, kind: str) -> None:
    response = site.client("admin").get(f"/api/studies/{site.owned_uid}/film.{kind}",
                                        params={"count": "3", "columns": "2", "window": "-600,1500"})
    assert response.status_code == 200
    if kind == "pdf":
        assert response.content.startswith(b"%PDF") and response.headers["content-type"] == "application/pdf"
        return
    sheet = Image.open(io.BytesIO(response.content))
    assert sheet.format == "PNG" and sheet.width > 700 and sheet.height > 2 * 384
    chosen = f"{site.owned[0].SOPInstanceUID},{site.owned[1].SOPInstanceUID}:1"
    picked = site.client("admin").get(f"/api/studies/{site.owned_uid}/film.png", params={"images": chosen})
    assert picked.status_code == 200
    assert site.client("admin").get(f"/api/studies/{site.owned_uid}/film.png",
                                    params={"images": "1.2.3"}).status_code == 404
    assert site.client("admin").get(f"/api/studies/{site.owned_uid}/film.gif").status_code == 404


def test_zip_with_dicomdir_holds_the_files_as_stored(site: Site) -> None:
    response = site.client("patient").get(f"/api/studies/{site.owned_uid}/archive.zip")
    assert response.status_code == 200 and "attachment" in response.headers["content-disposition"]
    archive = zipfile.ZipFile(io.BytesIO(response.content))
    names = archive.namelist()
    assert "DICOMDIR" in names and len(names) == len(site.owned) + 1
    dicomdir = pydicom.dcmread(io.BytesIO(archive.read("DICOMDIR")))
    kinds = [r.DirectoryRecordType for r in dicomdir.DirectoryRecordSequence]
    assert kinds.count("PATIENT") == 1 and kinds.count("STUDY") == 1 and kinds.count("IMAGE") == len(site.owned)
    stored = {i.sop_uid: i for i in find_instances(site.archive.engine, AccessScope.everything(),
                                                   study_uid=site.owned_uid)}
    for record in dicomdir.DirectoryRecordSequence:
        if record.DirectoryRecordType != "IMAGE":
            continue
        path = "/".join(record.ReferencedFileID)
        with open_instance(site.archive.store, stored[record.ReferencedSOPInstanceUIDInFile]) as fh:
            assert archive.read(path) == fh.read()  # byte for byte what the archive received
