"""Reports in headless Chromium (Debian ``chromium`` + Playwright), issue 13.

A physician on a desktop writes the report of the patient's CT in the viewer from the CT
template, cites the image on screen as a key image, saves the draft (it is still there after a
reload), signs, then amends it; the first version stays listed, marked superseded. The patient on a
375×667 phone sees the amended signed report (the new impression, never the old one), opens its
PDF, and sees "Your report is not ready yet" on another study of theirs. Screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

import pytest
from playwright.sync_api import Browser, Dialog, Page

from tests.factories import make_ct_study
from tests.viewer_api.portal import test_browser
from tests.viewer_api.portal.conftest import OWNER, PASSWORD, Server, store
from tests.viewer_api.portal.test_browser import ARTIFACTS, PHONE, _image_loaded
from viewer_api.viewer.patient_view import REPORT_NOT_READY

browser = test_browser.browser  # the module-scoped Chromium of the other browser tests
FIRST_IMPRESSION = "Solitary pulmonary nodule, 12 mm."
AMENDED_IMPRESSION = "Solitary pulmonary nodule, 14 mm; follow-up CT in 6 weeks."


@pytest.fixture(scope="module")
def unreported(live_site: Server) -> str:
    """Another study of the patient's, with no report."""
    study = make_ct_study(OWNER, n_slices=3, rows=32, cols=32, seed=612, study_date="20240301")
    store(live_site.site.archive, study)
    return str(study[0].StudyInstanceUID)


def _sign_in(page: Page, server: Server, path: str, username: str) -> list[str]:
    """Open ``path`` as ``username``; script errors are collected, confirmations accepted."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"error: {exc}"))

    def confirm(dialog: Dialog) -> None:
        if dialog.type != "confirm":
            problems.append(f"dialog: {dialog.message}")
        dialog.accept()

    page.on("dialog", confirm)
    page.goto(f"{server.url}{path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")
    _image_loaded(page)
    return problems


def _message(page: Page, text: str) -> None:
    page.wait_for_function("(t) => document.getElementById('report-message').textContent.includes(t)", arg=text,
                           timeout=20_000)


def test_a_physician_writes_signs_and_amends_and_the_patient_reads_it(live_site: Server, browser: Browser,
                                                                      unreported: str) -> None:  # fmt: skip
    study_uid = live_site.site.owned_uid
    desk = browser.new_context(viewport={"width": 1280, "height": 900})
    page = desk.new_page()
    problems = _sign_in(page, live_site, f"/viewer/studies/{study_uid}", "doc")
    page.click("#report-new")
    page.wait_for_selector("#report-form:not([hidden])")
    assert page.input_value("textarea[name=technique]").startswith("CT of the")  # the CT template
    page.fill("textarea[name=clinical_information]", "Cough for three weeks.")
    page.fill("textarea[name=findings]", "A nodule in the right upper lobe.\nNo effusion.")
    page.fill("textarea[name=impression]", FIRST_IMPRESSION)
    page.click("#report-key-image")
    assert page.locator("#report-key-images li").count() == 1
    page.click("#report-save")
    _message(page, "Draft saved")
    page.reload()  # the draft is durable
    page.wait_for_selector("#report-form:not([hidden])")
    assert page.input_value("textarea[name=impression]") == FIRST_IMPRESSION
    assert page.locator("#report-key-images li").count() == 1
    page.click("#report-sign")
    _message(page, "Signed as version 1")
    assert page.locator("#report-versions details.signed").count() == 1
    page.screenshot(path=str(ARTIFACTS / "report-signed-desktop.png"))

    page.click("#report-amend")
    page.wait_for_selector("#report-form:not([hidden])")
    assert page.input_value("textarea[name=impression]") == FIRST_IMPRESSION
    page.fill("textarea[name=impression]", AMENDED_IMPRESSION)
    page.click("#report-sign")
    _message(page, "Signed as version 2")
    current = page.locator("#report-versions details.signed")
    superseded = page.locator("#report-versions details.superseded")
    assert current.count() == 1 and superseded.count() == 1
    assert "current · amended" in current.inner_text() and AMENDED_IMPRESSION in current.inner_text()
    assert "superseded by a later version" in superseded.inner_text()
    page.screenshot(path=str(ARTIFACTS / "report-amended-desktop.png"))
    assert problems == []
    desk.close()

    phone = browser.new_context(**PHONE)  # type: ignore[arg-type]
    mobile = phone.new_page()
    problems = _sign_in(mobile, live_site, f"/viewer/studies/{study_uid}", "pat")
    assert mobile.locator("#panel-sum").inner_text().startswith("Amended report (version 2")  # on the folded bar
    mobile.tap("#panel-bar")
    status = mobile.locator("#report-status").inner_text()
    assert status.startswith("Amended report (version 2")
    text = mobile.locator("#report-text").inner_text()
    assert AMENDED_IMPRESSION in text and FIRST_IMPRESSION not in text
    assert "Signed by doc" in mobile.locator("#report-signed").inner_text()
    mobile.locator("#report").scroll_into_view_if_needed()
    mobile.screenshot(path=str(ARTIFACTS / "report-patient-phone.png"))
    href = mobile.locator("#report-pdf").get_attribute("href")
    assert href is not None and href.endswith("/pdf")
    pdf = mobile.request.get(f"{live_site.url}{href}")
    assert pdf.status == 200 and pdf.headers["content-type"] == "application/pdf" and pdf.body()[:5] == b"%PDF-"
    width = mobile.evaluate("() => document.documentElement.scrollWidth")
    assert width <= 375, f"the page scrolls sideways ({width} px)"

    mobile.goto(f"{live_site.url}/viewer/studies/{unreported}")
    _image_loaded(mobile)
    assert mobile.locator("#panel-sum").inner_text() == REPORT_NOT_READY
    mobile.tap("#panel-bar")
    assert mobile.locator("#report-status").inner_text() == REPORT_NOT_READY
    assert mobile.locator("#report-pdf").count() == 0
    mobile.screenshot(path=str(ARTIFACTS / "report-not-ready-phone.png"))
    assert problems == []
    phone.close()
