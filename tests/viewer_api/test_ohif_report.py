"""OHIF 3 opens the physician's signed report: the Encapsulated PDF the archive stores when a report
is signed is a "DOC" series in OHIF's study panel, and opening it fetches the PDF through the
archive's bulk data URI (``EncapsulatedDocument``, 0042,0011) and shows it in OHIF's PDF viewport
(an ``<object type="application/pdf">``; headless Chromium has no PDF plugin to paint its pages, so
the screenshot shows the object's fallback text where a desktop browser shows the report).

Headless Debian Chromium driven by Playwright against the real server; OHIF is the pinned
``@ohif/app`` build (``tests/viewer_api/test_ohif.py``). Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

import pytest
from playwright.sync_api import Response, sync_playwright

from pacs.archive import Archive
from pacs.reports.service import ReportSections, sign_external_report
from tests.factories import PATIENTS, make_ct_study
from tests.viewer_api.conftest import RunningServer, dicomweb_settings, store_all
from tests.viewer_api.test_ohif import ARTIFACTS, CHROMIUM, ohif_dist

pytestmark = pytest.mark.slow
__all__ = ["ohif_dist"]


@dataclass
class ReportedStudy:
    url: str
    study_uid: str
    pdf_uid: str


@pytest.fixture
def reported(tmp_path: Path, ohif_dist: Path, serve: Callable[[Archive], RunningServer]) -> Iterator[ReportedStudy]:
    with Archive.open(dicomweb_settings(tmp_path, ohif_dir=ohif_dist)) as archive:
        ct = make_ct_study(PATIENTS[0], n_slices=4, rows=64, cols=64, seed=1501)
        store_all(archive, ct)
        study_uid = str(ct[0].StudyInstanceUID)
        view = sign_external_report(archive, study_uid, "Gregory House",
                                    ReportSections(findings="No focal lesion.", impression="Normal chest CT."),
                                    datetime(2026, 3, 1, 11, 30, tzinfo=UTC))  # fmt: skip
        yield ReportedStudy(serve(archive).url, study_uid, view.pdf_uid)


def test_ohif_opens_the_signed_report_pdf(reported: ReportedStudy) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    pdf_bytes: list[bytes] = []
    seen: list[str] = []

    def on_response(resp: Response) -> None:
        seen.append(f"{resp.status} {resp.headers.get('content-type')} {resp.url}")
        if resp.status >= 400:
            problems.append(f"{resp.status} {resp.url}")
        elif f"/instances/{reported.pdf_uid}/bulk/00420011" in resp.url:  # EncapsulatedDocument's bulk data URI
            pdf_bytes.append(resp.body())

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("response", on_response)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.goto(f"{reported.url}/ohif/viewer?StudyInstanceUIDs={reported.study_uid}",
                      wait_until="networkidle", timeout=90_000)  # fmt: skip
            page.keyboard.press("Escape")  # OHIF's first-visit tour (shepherd) leaves on Esc
            doc = page.get_by_text("DOC", exact=True).first  # the report's series in the study panel
            doc.wait_for(timeout=60_000)
            doc.dispatch_event("dblclick")  # as a double click on its thumbnail, under the tour's overlay
            deadline = time.monotonic() + 60
            while not pdf_bytes:
                assert time.monotonic() < deadline, f"OHIF never fetched the report PDF: {problems} {seen[-15:]}"
                page.wait_for_timeout(500)
            page.locator("object[type='application/pdf'], iframe, embed").first.wait_for(timeout=30_000)
            page.screenshot(path=str(ARTIFACTS / "ohif-report-pdf.png"))
        finally:
            browser.close()
    assert b"%PDF-" in pdf_bytes[0][:400], pdf_bytes[0][:200]  # the PDF, as a multipart/related part
    assert problems == []
