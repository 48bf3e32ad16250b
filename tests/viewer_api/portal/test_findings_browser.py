"""The AI findings panel and overlay in headless Chromium (Debian ``chromium`` + Playwright).

A physician on a desktop opens the lesion study of ``tests/viewer_api/test_findings.py``: the
panel lists the plugin's findings (newest report first); choosing the nodule jumps to the slice
nearest the lesion centre, where its circle is drawn over the bright lesion. A share visitor on a
375×667 phone sees the hospital, the sharer, the exam date, the link's expiry, the note and "Your
report is not ready yet", and no AI finding (none was reviewed; issue 13). Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import io
import math

import pytest
from PIL import Image, ImageStat
from playwright.sync_api import Browser, Page

from pacs.accounts.shares import create_share
from pacs.accounts.users import create_user
from tests.viewer_api.portal import test_browser
from tests.viewer_api.portal.conftest import HOSPITAL, PASSWORD, Server
from tests.viewer_api.portal.test_browser import ARTIFACTS, PHONE, _image_loaded, _watch
from tests.viewer_api.test_findings import LesionStudy, add_lesion_study
from viewer_api.viewer.patient_view import NOTE, REPORT_NOT_READY

browser = test_browser.browser  # the module-scoped Chromium of the other browser tests


@pytest.fixture(scope="module")
def lesion(live_site: Server) -> LesionStudy:
    return add_lesion_study(live_site.site)


def _panel_rows(page: Page) -> list[str]:
    page.wait_for_function("() => document.querySelectorAll('#findings-list li').length > 0", timeout=10_000)
    return [t.strip() for t in page.locator("#findings-list li").all_inner_texts()]


def _lesion_brightness(page: Page, name: str, scale: float) -> tuple[float, float]:
    """Screenshot; the mean grey inside the drawn circle (half its radius) and over the whole viewport."""
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    box = page.locator("#viewport").bounding_box()
    circle = page.locator("#overlay circle.finding:not(.superseded)").bounding_box()
    assert box is not None and circle is not None
    shot = Image.open(io.BytesIO(page.locator("#viewport").screenshot())).convert("L")
    cx = (circle["x"] + circle["width"] / 2 - box["x"]) * scale
    cy = (circle["y"] + circle["height"] / 2 - box["y"]) * scale
    r = circle["width"] / 4 * scale
    mask = Image.new("L", shot.size, 0)
    mask.paste(255, (int(cx - r), int(cy - r), int(cx + r), int(cy + r)))
    return float(ImageStat.Stat(shot, mask).mean[0]), float(ImageStat.Stat(shot).mean[0])


def _check_overlay(page: Page, lesion: LesionStudy) -> None:
    """The nodule's circle is on the lesion slice, where the pixels say the lesion is."""
    vp = page.locator("#viewport")
    assert vp.get_attribute("data-index") == str(lesion.slice_index)
    page.wait_for_function("() => document.getElementById('viewport').dataset.findingsShown === '2'")
    circle = page.locator("#overlay circle.finding:not(.superseded)")
    cx, cy, r = (float(circle.get_attribute(a) or "nan") for a in ("cx", "cy", "r"))
    assert math.dist((cx, cy), lesion.centre_px) < 1.0
    assert abs(r - lesion.radius_px) < 1.5
    assert page.locator("#overlay polygon.finding:not(.superseded)").count() == 1
    assert page.locator("#overlay text.finding-label").all_text_contents() == ["Nodule", "Mass"]
    assert "here" in (page.locator("#findings-list li").nth(1).get_attribute("class") or "")


def test_physician_sees_the_findings_and_the_nodule_on_its_slice(live_site: Server, browser: Browser,
                                                                 lesion: LesionStudy) -> None:  # fmt: skip
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems = _watch(page)
    page.goto(f"{live_site.url}/viewer/studies/{lesion.study_uid}")
    page.fill("input[name=username]", "doc")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/viewer/studies/{lesion.study_uid}")
    _image_loaded(page)
    rows = _panel_rows(page)
    assert page.locator("#findings").is_visible() and page.get_attribute("#panel-bar", "aria-expanded") == "true"
    current = page.locator("#findings-list li:not(.superseded)").count()
    assert 0 < current < len(rows)
    assert page.locator("#panel-sum").inner_text() == f"{current} findings"  # an earlier report's are not counted
    assert len(rows) == 6
    assert rows[0].startswith("High density lesion") and "study level · probability 0.93" in rows[0]
    assert rows[1].splitlines() == ["Nodule", "Lesion 1 · probability 0.91 · Diameter 36.0 mm",
                                    "lesion-detector@1.2.3", "Not reviewed", "Accept", "Reject", "Edit"]  # fmt: skip
    assert "earlier report" in rows[4] and "lesion-detector@1.0" in rows[4]
    start = page.locator("#viewport").get_attribute("data-index")
    assert start != str(lesion.slice_index)
    assert page.locator("#viewport").get_attribute("data-findings-shown") == "0"  # nothing on this slice

    page.locator("#findings-list li").nth(1).click()
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.index === '{lesion.slice_index}'")
    _image_loaded(page)
    _check_overlay(page, lesion)
    inside, overall = _lesion_brightness(page, "desktop-viewer-findings", 1.0)
    assert inside > overall + 60, (inside, overall)  # the circle sits on the bright lesion

    page.click("#zoom-in")
    page.click("#zoom-in")
    _check_overlay(page, lesion)
    page.screenshot(path=str(ARTIFACTS / "desktop-viewer-findings-zoomed.png"))
    page.locator("#findings-list li").nth(4).click()  # the earlier report's nodule joins, dashed
    page.wait_for_function("() => document.getElementById('viewport').dataset.findingsShown === '3'")
    assert page.locator("#overlay circle.finding.superseded.selected").count() == 1
    page.screenshot(path=str(ARTIFACTS / "desktop-viewer-findings-earlier-report.png"))
    page.keyboard.press("ArrowDown")  # off the lesion slice: the overlay goes
    page.wait_for_function("() => document.getElementById('viewport').dataset.findingsShown === '0'")
    assert not problems, problems
    context.close()


def test_share_visitor_on_a_phone_sees_the_film_card_and_no_ai_finding(live_site: Server, browser: Browser,
                                                                        lesion: LesionStudy) -> None:  # fmt: skip
    """Issue 13: nothing here was reviewed by a physician, so the phone shows no AI output at all."""
    site = live_site.site
    doctor = create_user(site.archive.engine, "drfilm", PASSWORD, "physician", full_name="Dr. Film Reader")
    share = create_share(site.archive.engine, site.app.state.authenticator.key, lesion.study_uid,
                         created_by=doctor.id, expires_in_days=7, max_days=365)  # fmt: skip
    context = browser.new_context(**PHONE)  # type: ignore[arg-type]
    page = context.new_page()
    problems = _watch(page)
    with page.expect_response(lambda r: r.url.endswith("/findings")) as answered:
        page.goto(f"{live_site.url}/s/{share.token}")
    assert answered.value.json() == {"findings": []}
    _image_loaded(page)
    card = page.locator("#film-card")
    assert card.is_visible()
    assert page.locator("#institution").inner_text() == HOSPITAL
    assert page.locator("#shared-by").inner_text() == "Shared by Dr. Film Reader"
    date = lesion.datasets[0].StudyDate
    assert page.locator("#exam-date").inner_text() == f"Exam {date[:4]}-{date[4:6]}-{date[6:]}"
    assert page.locator("#expires").inner_text() == f"Link valid until {share.expires_at:%Y-%m-%d}"
    assert page.locator("#film-note").inner_text() == NOTE
    assert page.get_attribute("#panel-bar", "aria-expanded") == "false"  # folded on a phone, status on the bar
    assert page.locator("#panel-sum").inner_text() == REPORT_NOT_READY
    page.tap("#panel-bar")
    assert page.locator("#report-status").is_visible()
    assert page.locator("#report-status").inner_text() == REPORT_NOT_READY
    assert page.locator("#findings-list li").count() == 0 and page.locator("#findings-heading").is_hidden()
    for label in ("Nodule", "Mass", "probability", "lesion-detector"):
        assert label not in page.locator("body").inner_text()
    page.evaluate(f"window.cloudfilmViewer.go({lesion.slice_index})")
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.index === '{lesion.slice_index}'")
    _image_loaded(page)
    assert page.locator("#overlay .finding").count() == 0  # not even on the lesion's slice
    page.screenshot(path=str(ARTIFACTS / "phone-share-film-card.png"))
    assert not problems, problems
    context.close()


def test_a_physician_accepts_one_finding_and_rejects_another_then_the_phone_shows_only_the_accepted(
        live_site: Server, browser: Browser, lesion: LesionStudy) -> None:  # fmt: skip
    """Issue 13: the review in the viewer's panel; the share visitor then sees the nodule alone, reviewed."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems = _watch(page)
    page.goto(f"{live_site.url}/login?next=/viewer/studies/{lesion.study_uid}")
    page.fill("input[name=username]", "doc")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/viewer/studies/{lesion.study_uid}")
    _image_loaded(page)
    rows = page.locator("#findings-list li")
    _panel_rows(page)
    nodule, mass = rows.nth(1), rows.nth(2)
    assert nodule.locator("b").inner_text() == "Nodule" and mass.locator("b").inner_text() == "Mass"
    assert nodule.locator(".review-status").inner_text() == "Not reviewed"
    assert rows.nth(4).locator(".review").count() == 0  # an earlier report's findings are not reviewed
    with page.expect_response(lambda r: r.url.endswith("/findings/reviews") and r.status == 201):
        nodule.locator("button.review-accepted").click()
    page.wait_for_function("() => document.querySelectorAll('#findings-list li')[1]"
                           ".querySelector('.review-status').textContent.startsWith('Accepted')")  # fmt: skip
    with page.expect_response(lambda r: r.url.endswith("/findings/reviews") and r.status == 201):
        rows.nth(2).locator("button.review-rejected").click()
    page.wait_for_function("() => document.querySelectorAll('#findings-list li')[2]"
                           ".querySelector('.review-status').textContent.startsWith('Rejected')")  # fmt: skip
    assert rows.nth(1).locator(".review-status").inner_text() == "Accepted by doc"
    assert rows.nth(2).locator(".review-status").inner_text() == "Rejected by doc"
    assert page.url.endswith(lesion.study_uid)  # the buttons do not navigate
    page.screenshot(path=str(ARTIFACTS / "desktop-ai-review.png"))
    assert not problems, problems
    context.close()

    site = live_site.site
    share = create_share(site.archive.engine, site.app.state.authenticator.key, lesion.study_uid, created_by=None,
                         expires_in_days=7, max_days=365)  # fmt: skip
    phone = browser.new_context(**PHONE)  # type: ignore[arg-type]
    page = phone.new_page()
    problems = _watch(page)
    page.goto(f"{live_site.url}/s/{share.token}")
    _image_loaded(page)
    page.tap("#panel-bar")
    assert _panel_rows(page) == ["Nodule\nLesion 1 · Diameter 36.0 mm\nReviewed by a physician"]
    assert page.locator("#panel-sum").inner_text() == REPORT_NOT_READY + " · 1 finding"
    assert page.locator("#findings-heading").is_visible()
    assert page.locator("#report-status").inner_text() == REPORT_NOT_READY
    assert page.locator(".review-buttons").count() == 0  # visitors do not review
    page.locator("#findings-list li").first.tap()
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.index === '{lesion.slice_index}'")
    _image_loaded(page)
    assert page.get_attribute("#panel-bar", "aria-expanded") == "false"  # folded again to show the image
    page.wait_for_function("() => document.getElementById('viewport').dataset.findingsShown === '1'")
    assert page.locator("#overlay text.finding-label").all_text_contents() == ["Nodule"]
    inside, overall = _lesion_brightness(page, "phone-share-reviewed-finding", 2.0)
    assert inside > overall + 60, (inside, overall)
    assert "Mass" not in page.locator("body").inner_text()
    assert not problems, problems
    phone.close()


def test_a_physician_edits_the_rejected_finding_and_the_phone_shows_the_edit(live_site: Server, browser: Browser,
                                                                           lesion: LesionStudy) -> None:  # fmt: skip
    """The rejected mass becomes "Scar", moved by tapping the image: the share visitor now sees it too."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems = _watch(page)
    page.goto(f"{live_site.url}/login?next=/viewer/studies/{lesion.study_uid}")
    page.fill("input[name=username]", "doc")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/viewer/studies/{lesion.study_uid}")
    _image_loaded(page)
    _panel_rows(page)
    mass = page.locator("#findings-list li").nth(2)
    assert mass.locator(".review-status").inner_text() == "Rejected by doc"
    mass.locator("button.review-edit").click()
    form = mass.locator("form.review-edit")
    assert form.is_visible()
    form.locator("input[name=label]").fill("Scar")
    form.locator("button.review-place").click()  # jumps to the finding's slice, then takes one tap
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.index === '{lesion.slice_index}'")
    _image_loaded(page)
    box = page.locator("#frame").bounding_box()
    assert box is not None
    natural = page.evaluate("() => [document.getElementById('frame').naturalWidth, "
                            "document.getElementById('frame').naturalHeight]")  # fmt: skip
    target = (40.0, 30.0)  # image pixels
    page.mouse.click(box["x"] + target[0] / natural[0] * box["width"],
                     box["y"] + target[1] / natural[1] * box["height"])  # fmt: skip
    placed = [float(v) for v in form.locator(".place").inner_text().removeprefix("at ").split(",")]
    assert abs(placed[0] - target[0]) < 1.0 and abs(placed[1] - target[1]) < 1.0, placed
    with page.expect_response(lambda r: r.url.endswith("/findings/reviews") and r.status == 201) as answered:
        form.locator("button[type=submit]").click()
    review = answered.value.json()
    assert review["decision"] == "edited" and review["changes"]["label"] == ["Mass", "Scar"]
    moved = review["changes"]["centre"][1]
    assert abs(moved[0] - target[0]) < 1.0 and abs(moved[1] - target[1]) < 1.0
    page.wait_for_function("() => document.querySelectorAll('#findings-list li')[2]"
                           ".querySelector('.review-status').textContent.startsWith('Edited')")  # fmt: skip
    assert page.locator("#findings-list li").nth(2).locator(".review-status").inner_text() == \
        "Edited by doc: label Scar, moved"  # fmt: skip
    page.screenshot(path=str(ARTIFACTS / "desktop-ai-review-edited.png"))
    assert not problems, problems
    context.close()

    site = live_site.site
    share = create_share(site.archive.engine, site.app.state.authenticator.key, lesion.study_uid, created_by=None,
                         expires_in_days=7, max_days=365)  # fmt: skip
    phone = browser.new_context(**PHONE)  # type: ignore[arg-type]
    page = phone.new_page()
    page.goto(f"{live_site.url}/s/{share.token}")
    _image_loaded(page)
    page.tap("#panel-bar")
    rows = _panel_rows(page)
    assert [r.splitlines()[0] for r in rows] == ["Nodule", "Scar"] and all("Reviewed by a physician" in r for r in rows)
    page.locator("#findings-list li").nth(1).tap()
    page.wait_for_function("() => document.getElementById('viewport').dataset.findingsShown === '2'")
    points = page.locator("#overlay polygon.finding").get_attribute("points") or ""
    xs = [float(p.split(",")[0]) for p in points.split()]
    ys = [float(p.split(",")[1]) for p in points.split()]
    assert abs(sum(xs) / len(xs) - target[0]) < 1.0 and abs(sum(ys) / len(ys) - target[1]) < 1.0
    page.screenshot(path=str(ARTIFACTS / "phone-share-edited-finding.png"))
    phone.close()
