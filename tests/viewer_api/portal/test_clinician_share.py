"""Clinician shares over the API, and OHIF opening one with its token (issue 13).

The share API answers a clinician share with the DICOMweb URL, the token and, where OHIF is
installed, an OHIF URL that carries the token; OHIF 3 (headless Debian Chromium) opens the study
with nothing but that URL (no account, no cookie): its DICOMweb requests all succeed with the token.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
from playwright.sync_api import Page, Request, sync_playwright
from playwright.sync_api import TimeoutError as PlaywrightTimeout

from tests.viewer_api.portal.conftest import Server, Site, build_site, http, serve_site
from tests.viewer_api.test_ohif import ARTIFACTS, CHROMIUM, ohif_dist, viewport_pixels  # noqa: F401 (fixture)


def test_share_api_gives_the_dicomweb_url_and_token(fresh_site: Site) -> None:
    patient = fresh_site.client("patient")
    made = patient.post(f"/api/studies/{fresh_site.owned_uid}/shares", headers=fresh_site.headers("patient"),
                        json={"for_clinician": True, "recipient": "Dr. House, Princeton-Plainsboro"})
    assert made.status_code == 201, made.text  # a patient may share the own study with the next doctor
    share = made.json()
    assert share["dicomweb_url"] == "http://testserver/dicomweb" and share["dicomweb_token"].startswith("cfs_")
    assert share["ohif_url"] is None  # no OHIF installed here
    phone = patient.post(f"/api/studies/{fresh_site.owned_uid}/shares", headers=fresh_site.headers("patient"),
                         json={}).json()
    assert phone["for_clinician"] is False and phone["dicomweb_token"] is None and phone["dicomweb_url"] is None
    too_long = patient.post(f"/api/studies/{fresh_site.owned_uid}/shares", headers=fresh_site.headers("patient"),
                            json={"for_clinician": True, "recipient": "x" * 129})
    assert too_long.status_code == 400
    control = patient.post(f"/api/studies/{fresh_site.owned_uid}/shares", headers=fresh_site.headers("patient"),
                           json={"for_clinician": True, "recipient": "Dr. X\r\nSet-Cookie: y"})
    assert control.status_code == 400 and "printable" in control.text

    token = {"Authorization": f"Bearer {share['dicomweb_token']}"}
    doctor = fresh_site.new_client(headers=token)
    assert doctor.get(f"/dicomweb/studies/{fresh_site.owned_uid}/metadata").status_code == 200
    assert doctor.get(f"/s/{share['url'].rsplit('/', 1)[1]}").status_code == 200  # the phone page works too
    revoked = patient.delete(f"/api/studies/{fresh_site.owned_uid}/shares/{share['id']}",
                             headers=fresh_site.headers("patient"))
    assert revoked.status_code == 204
    refused = doctor.get(f"/dicomweb/studies/{fresh_site.owned_uid}/metadata")
    assert refused.status_code == 401 and "the bearer token or API key is not valid" in refused.text


def _pixels(page: Page) -> np.ndarray:
    """The viewport's grey levels; blank while OHIF replaces the canvas being measured."""
    try:
        return viewport_pixels(page)
    except PlaywrightTimeout:
        return np.zeros((1, 1), dtype=np.uint8)


@pytest.fixture(scope="module")
def ohif_server(tmp_path_factory: pytest.TempPathFactory, ohif_dist: Path) -> Iterator[Server]:  # noqa: F811
    for built in build_site(Path(tmp_path_factory.mktemp("ohif-share")), ohif_dir=ohif_dist):
        yield from serve_site(built)


@pytest.mark.slow
def test_ohif_opens_the_shared_study_with_the_token_alone(ohif_server: Server) -> None:
    site = ohif_server.site
    with http(ohif_server) as admin:
        token = admin.post("/api/auth/token", data={"username": "admin", "password": "correct horse battery"})
        made = admin.post(f"/api/studies/{site.owned_uid}/shares", json={"for_clinician": True},
                          headers={"Authorization": f"Bearer {token.json()['access_token']}"})
    assert made.status_code == 201, made.text
    ohif_url = made.json()["ohif_url"]
    assert ohif_url.startswith(f"{ohif_server.url}/ohif/viewer?StudyInstanceUIDs={site.owned_uid}&token=cfs_")
    ARTIFACTS.mkdir(exist_ok=True)
    failures: list[str] = []
    dicomweb: list[Request] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("request", lambda req: dicomweb.append(req) if "/dicomweb/" in req.url else None)
            page.on("response", lambda resp: failures.append(f"{resp.status} {resp.url}")
                    if resp.url.startswith(ohif_server.url) and resp.status >= 400 else None)  # fmt: skip
            page.goto(ohif_url, wait_until="networkidle", timeout=90_000)
            page.set_default_timeout(5_000)  # a canvas that vanished while measured: look again soon
            deadline = time.monotonic() + 60
            while True:
                pixels = _pixels(page)
                if pixels.std() > 10:  # the CT slice, not a blank canvas
                    break
                assert time.monotonic() < deadline, f"the viewport stayed blank; failures: {failures}"
                time.sleep(1)
            assert "token=" not in page.url  # OHIF takes the token out of the address bar
            page.screenshot(path=str(ARTIFACTS / "ohif-clinician-share.png"))
        finally:
            browser.close()
    assert failures == []
    urls = [r.url for r in dicomweb]
    assert any("/metadata" in u for u in urls) and any("/frames/" in u for u in urls), urls
    assert all((r.headers.get("authorization") or "").startswith("Bearer cfs_") for r in dicomweb)
