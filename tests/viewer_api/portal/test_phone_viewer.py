"""The built-in viewer's manners on a phone and at a desk (issue 14, item 4), in headless Chromium.

Debian ``chromium`` driven by Playwright at 375×667 with touch (``has_touch``, ``is_mobile``) and at
1366×800. A 60-slice CT of the patient account's: one wheel notch moves one slice; a slow swipe steps
one slice and a fling runs through many; pinch zooms and a double tap fits; at 375 px the toolbar
is fully on screen, the report and findings panels start folded behind their bars, and no page
scrolls sideways; patients start with the simple toolbar and can switch to all tools. Screenshots
go to ``test-artifacts/``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, CDPSession, Page

from tests.factories import make_ct_study
from tests.viewer_api.portal import test_browser
from tests.viewer_api.portal.conftest import OWNER, PASSWORD, Server, store
from tests.viewer_api.portal.test_browser import ARTIFACTS, PHONE, _image_loaded, _watch

browser = test_browser.browser  # the module-scoped Chromium of the other browser tests
DESK = {"viewport": {"width": 1366, "height": 800}}
SLICES = 60


@pytest.fixture(scope="module")
def tall(live_site: Server) -> str:
    """A 60-slice CT of the patient account's (room to scroll)."""
    study = make_ct_study(OWNER, n_slices=SLICES, rows=64, cols=64, seed=1401, study_date="20240401",
                          study_description="CT CHEST 60")  # fmt: skip
    store(live_site.site.archive, study)
    return str(study[0].StudyInstanceUID)


def _open(context: BrowserContext, server: Server, path: str, username: str) -> tuple[Page, list[str]]:
    page = context.new_page()
    problems = _watch(page)
    page.goto(f"{server.url}/login?next={path}")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**{path}")
    if path.startswith("/viewer/studies/"):
        _image_loaded(page)
    return page, problems


@pytest.fixture
def phone(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(**PHONE)  # type: ignore[arg-type]
    yield context
    context.close()


@pytest.fixture
def desk(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(**DESK)  # type: ignore[arg-type]
    yield context
    context.close()


def _index(page: Page) -> int:
    return int(page.locator("#viewport").get_attribute("data-index") or "-1")


def _settled_index(page: Page, quiet_s: float = 0.4) -> int:
    """The slice index once it has stopped changing (a fling has ended) for ``quiet_s``."""
    page.wait_for_function("() => !document.getElementById('viewport').dataset.fling", timeout=10_000)
    last, since = _index(page), time.monotonic()
    while time.monotonic() - since < quiet_s:
        time.sleep(0.05)
        now = _index(page)
        if now != last:
            last, since = now, time.monotonic()
    return last


def _centre(page: Page) -> tuple[float, float]:
    box = page.locator("#viewport").bounding_box()
    assert box is not None
    return box["x"] + box["width"] / 2, box["y"] + box["height"] / 2


def _touch(cdp: CDPSession, kind: str, points: list[tuple[float, float]]) -> None:
    cdp.send("Input.dispatchTouchEvent", {"type": kind, "touchPoints": [{"x": x, "y": y, "id": k}
                                                                       for k, (x, y) in enumerate(points)]})


def _swipe(page: Page, dy: float, steps: int, step_s: float, hold_s: float = 0.0) -> None:
    """One finger from the viewport centre, ``dy`` px down in ``steps`` moves ``step_s`` apart."""
    x, y = _centre(page)
    y -= dy / 2
    cdp = page.context.new_cdp_session(page)
    _touch(cdp, "touchStart", [(x, y)])
    for k in range(1, steps + 1):
        time.sleep(step_s)
        _touch(cdp, "touchMove", [(x, y + dy * k / steps)])
    time.sleep(hold_s)
    _touch(cdp, "touchEnd", [])
    cdp.detach()


def _zoom_label(page: Page) -> str:
    return page.locator("#zoom-label").inner_text()


def _screen(page: Page) -> dict[str, int]:
    """The device's screen in CSS px (a phone widens its layout viewport to fit content that overflows)."""
    size = page.viewport_size
    assert size is not None
    return size


def _off_screen(page: Page, selector: str) -> list[dict[str, Any]]:
    """Visible elements matching ``selector`` that are not wholly on the device's screen."""
    return page.evaluate("""([sel, w, h]) => Array.from(document.querySelectorAll(sel)).filter((el) => {
        const r = el.getBoundingClientRect();
        return r.width > 0 && r.height > 0 && (r.left < 0 || r.top < 0 || r.right > w + 0.5 || r.bottom > h + 0.5);
      }).map((el) => ({ id: el.id || el.textContent.trim(), left: el.getBoundingClientRect().left,
                        right: el.getBoundingClientRect().right, bottom: el.getBoundingClientRect().bottom }))""",
                         [selector, _screen(page)["width"], _screen(page)["height"]])  # fmt: skip


def _sideways(page: Page) -> int:
    """How far the page reaches past the right edge of the screen (0 or less: no sideways scrolling)."""
    width = page.evaluate("() => Math.max(document.documentElement.scrollWidth, window.innerWidth)")
    return int(width) - _screen(page)["width"]


def _image_inside_viewport(page: Page) -> dict[str, float]:
    """The image box relative to the viewport box; the image is fitted: inside, touching two sides."""
    box = page.evaluate("""() => { const v = document.getElementById('viewport').getBoundingClientRect();
        const i = document.getElementById('frame').getBoundingClientRect();
        return { left: i.left - v.left, top: i.top - v.top, right: v.right - i.right, bottom: v.bottom - i.bottom,
                 vw: v.width, vh: v.height }; }""")  # fmt: skip
    assert min(box["left"], box["top"], box["right"], box["bottom"]) > -1.0, box
    assert min(abs(box["left"]) + abs(box["right"]), abs(box["top"]) + abs(box["bottom"])) < 2.0, box
    return dict(box)


def test_one_wheel_notch_is_one_slice(live_site: Server, desk: BrowserContext, tall: str) -> None:
    page, problems = _open(desk, live_site, f"/viewer/studies/{tall}", "doc")
    assert page.locator("#findings").is_hidden()  # no AI findings: no panel
    start = _index(page)
    page.mouse.move(*_centre(page))
    for notch, expected in ((100, 1), (100, 2), (100, 3), (-100, 2), (120, 3)):
        page.mouse.wheel(0, notch)
        page.wait_for_function(f"() => document.getElementById('viewport').dataset.index === '{start + expected}'")
    time.sleep(0.2)
    assert _index(page) == start + 3
    for _ in range(10):  # a touchpad: ten small deltas of 10 px make two slices
        page.mouse.wheel(0, 10)
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.index === '{start + 5}'")
    time.sleep(0.2)
    assert _index(page) == start + 5
    _image_inside_viewport(page)
    page.screenshot(path=str(ARTIFACTS / "desk-1366-viewer-wheel.png"))
    # At most two rows at a desk. A physician's full toolbar (window presets, drag modes, the measuring tools,
    # zoom, fit, invert, reset, info, cine, film, PDF, ZIP, share) is about 1290 px of buttons; the image column
    # beside the series strip and the report column is 956 px wide at 1366, so one row would need buttons too
    # small to hit. The study's actions (cine, film, ZIP, share) take the second row.
    toolbar = page.locator(".toolbar").bounding_box()
    assert toolbar is not None and toolbar["height"] < 100, toolbar
    rows = page.evaluate("() => new Set(Array.from(document.querySelectorAll('.toolbar > *'))"
                         ".filter((el) => el.offsetParent)"
                         ".map((el) => Math.round(el.getBoundingClientRect().top))).size")
    assert rows <= 2, rows
    assert not problems, problems


def test_slow_swipe_steps_one_slice_and_a_fling_runs_through(live_site: Server, phone: BrowserContext,
                                                               tall: str) -> None:  # fmt: skip
    page, problems = _open(phone, live_site, f"/viewer/studies/{tall}", "pat")
    start = _index(page)
    _swipe(page, 30, steps=10, step_s=0.05)  # 30 px in half a second, lifted at once
    assert _settled_index(page) == start + 1
    _swipe(page, -30, steps=10, step_s=0.05, hold_s=0.15)
    assert _settled_index(page) == start
    _swipe(page, 80, steps=16, step_s=0.05, hold_s=0.15)  # slow 80 px: 3 slices, not 20
    assert _settled_index(page) == start + 3
    page.screenshot(path=str(ARTIFACTS / "phone-375-viewer-slow-swipe.png"))

    before = _settled_index(page)
    _swipe(page, -300, steps=6, step_s=0)  # a fling up (as fast as CDP goes): runs on after the finger leaves
    after = _settled_index(page)
    assert before - after >= 12, (before, after)
    _image_loaded(page)
    page.screenshot(path=str(ARTIFACTS / "phone-375-viewer-after-fling.png"))
    assert not problems, problems


def test_pinch_zooms_and_double_tap_fits(live_site: Server, phone: BrowserContext, tall: str) -> None:
    page, problems = _open(phone, live_site, f"/viewer/studies/{tall}", "pat")
    start = _index(page)
    x, y = _centre(page)
    cdp = page.context.new_cdp_session(page)
    _touch(cdp, "touchStart", [(x - 30, y), (x + 30, y)])
    for k in range(1, 11):
        _touch(cdp, "touchMove", [(x - 30 - 6 * k, y), (x + 30 + 6 * k, y)])  # 60 px apart -> 180 px apart
    _touch(cdp, "touchEnd", [])
    page.wait_for_function("() => document.getElementById('zoom-label').textContent !== ''")
    assert _zoom_label(page) == "3.0×"
    assert _index(page) == start  # pinching does not scroll
    page.screenshot(path=str(ARTIFACTS / "phone-375-viewer-pinched.png"))
    for _ in range(2):
        _touch(cdp, "touchStart", [(x, y)])
        _touch(cdp, "touchEnd", [])
        time.sleep(0.08)
    page.wait_for_function("() => document.getElementById('zoom-label').textContent === ''")
    cdp.detach()
    _image_inside_viewport(page)
    assert _index(page) == start
    assert not problems, problems


def test_phone_toolbar_on_screen_and_panels_folded_for_a_physician(live_site: Server, phone: BrowserContext,
                                                                    tall: str) -> None:  # fmt: skip
    page, problems = _open(phone, live_site, f"/viewer/studies/{tall}", "doc")
    assert page.get_attribute("#tools-toggle", "aria-pressed") == "true"  # staff: all tools
    assert page.locator("#zoom-in").is_visible() and page.locator("button[data-mode=window]").is_visible()
    assert _off_screen(page, ".toolbar, .toolbar > *, .toolbar .mode") == []
    editor = page.locator("#report-editor")
    assert editor.is_visible() and page.get_attribute("#editor-bar", "aria-expanded") == "false"
    assert page.locator("#editor-body").is_hidden()
    fitted = _image_inside_viewport(page)
    assert fitted["vw"] == 375 and fitted["vh"] > 250, fitted  # the image has the screen
    assert _sideways(page) <= 0
    page.screenshot(path=str(ARTIFACTS / "phone-375-viewer-physician.png"))

    page.click("#editor-bar")
    assert page.get_attribute("#editor-bar", "aria-expanded") == "true"
    assert page.locator("#report-new").is_visible()
    page.screenshot(path=str(ARTIFACTS / "phone-375-viewer-physician-report-open.png"))
    page.click("#editor-bar")
    assert page.locator("#editor-body").is_hidden()
    assert not problems, problems


def test_patient_starts_simple_with_the_report_folded(live_site: Server, phone: BrowserContext, tall: str) -> None:
    page, problems = _open(phone, live_site, f"/viewer/studies/{tall}", "pat")
    bar = page.locator("#panel-bar")
    assert bar.is_visible() and bar.get_attribute("aria-expanded") == "false"
    assert page.locator("#panel-body").is_hidden()
    assert "not ready" in page.locator("#panel-sum").inner_text()
    for full in ("#zoom-in", "#zoom-out", "#reset", "button[data-mode=window]", "button[data-mode=pan]"):
        assert page.locator(full).is_hidden(), full  # the simple toolbar
    assert page.locator("#fit").is_visible() and page.locator("#preset").is_visible()
    assert page.get_attribute("#tools-toggle", "aria-pressed") == "false"
    assert _off_screen(page, ".toolbar, .toolbar > *") == []
    fitted = _image_inside_viewport(page)
    page.screenshot(path=str(ARTIFACTS / "phone-375-viewer-patient-simple.png"))

    bar.click()
    assert bar.get_attribute("aria-expanded") == "true" and page.locator("#report-status").is_visible()
    page.wait_for_function(f"() => document.getElementById('viewport').clientHeight < {fitted['vh']}")
    _image_inside_viewport(page)  # refitted to the smaller viewport
    page.screenshot(path=str(ARTIFACTS / "phone-375-viewer-patient-report-open.png"))
    bar.click()

    page.click("#tools-toggle")
    assert page.locator("#zoom-in").is_visible() and page.locator("button[data-mode=window]").is_visible()
    assert _off_screen(page, ".toolbar, .toolbar > *, .toolbar .mode") == []
    page.screenshot(path=str(ARTIFACTS / "phone-375-viewer-patient-all-tools.png"))
    page.reload()
    _image_loaded(page)
    assert page.locator("#zoom-in").is_visible()  # the choice is kept
    page.click("#tools-toggle")
    assert page.locator("#zoom-in").is_hidden()
    assert not problems, problems


def test_no_page_scrolls_sideways_at_375(live_site: Server, phone: BrowserContext, browser: Browser,
                                        tall: str) -> None:  # fmt: skip
    page, problems = _open(phone, live_site, "/viewer/worklist", "doc")
    assert _sideways(page) <= 0
    assert _off_screen(page, "form.search input, form.search select, form.search button") == []
    page.screenshot(path=str(ARTIFACTS / "phone-375-worklist.png"), full_page=True)
    page.fill("input[name=name]", "muller")
    page.click("form.search button[type=submit]")
    page.wait_for_url("**name=muller**")
    assert _sideways(page) <= 0
    page.screenshot(path=str(ARTIFACTS / "phone-375-worklist-results.png"), full_page=True)
    page.goto(f"{live_site.url}/viewer/studies/{tall}")
    _image_loaded(page)
    assert _sideways(page) <= 0
    assert not problems, problems

    patient = browser.new_context(**PHONE)  # type: ignore[arg-type]
    page, problems = _open(patient, live_site, "/viewer/home", "pat")
    assert _sideways(page) <= 0
    page.screenshot(path=str(ARTIFACTS / "phone-375-patient-home.png"), full_page=True)
    page.goto(f"{live_site.url}/viewer/studies/{tall}")
    _image_loaded(page)
    assert _sideways(page) <= 0
    assert not problems, problems
    patient.close()


def test_desk_opens_the_panels(live_site: Server, desk: BrowserContext, tall: str) -> None:
    page, problems = _open(desk, live_site, f"/viewer/studies/{tall}", "pat")
    assert page.get_attribute("#panel-bar", "aria-expanded") == "true"
    assert page.locator("#report-status").is_visible()
    assert page.locator("#zoom-in").is_hidden()  # patients start simple at a desk too
    _image_inside_viewport(page)
    page.screenshot(path=str(ARTIFACTS / "desk-1366-viewer-patient.png"))
    assert not problems, problems
