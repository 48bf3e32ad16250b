"""The viewer in headless Chromium (Debian ``chromium`` driven by Playwright; nothing downloaded).

A patient opens a share link on a 375×667 touch phone, enters the PIN, sees the image, swipes to
another slice and changes the window; expired and revoked links show their pages; a physician finds
a study by name in the worklist and opens it. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import io
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat
from playwright.sync_api import Browser, BrowserContext, Page, sync_playwright
from sqlalchemy import text

from pacs.accounts.shares import create_share, revoke_share
from pacs.index.db import utcnow
from tests.viewer_api.portal.conftest import PASSWORD, XSS_NAME, Server

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
PHONE = {"viewport": {"width": 375, "height": 667}, "has_touch": True, "is_mobile": True, "device_scale_factor": 2}


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


@pytest.fixture
def phone(browser: Browser) -> Iterator[BrowserContext]:
    context = browser.new_context(**PHONE)  # type: ignore[arg-type]
    yield context
    context.close()


def _watch(page: Page) -> list[str]:
    """Script errors and dialogs on ``page`` (an injected ``alert`` would land here)."""
    problems: list[str] = []
    page.on("pageerror", lambda exc: problems.append(f"error: {exc}"))
    page.on("dialog", lambda d: (problems.append(f"dialog: {d.message}"), d.dismiss()))
    return problems


def _image_loaded(page: Page) -> None:
    page.wait_for_function("() => { const i = document.getElementById('frame');"
                           " return i && i.complete && i.naturalWidth > 0 && document.getElementById('viewport')"
                           ".dataset.loaded === i.getAttribute('src'); }", timeout=10_000)


def _viewport_png(page: Page, name: str) -> bytes:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"))
    return page.locator("#viewport").screenshot()


def _spread(png: bytes) -> float:
    """Grey-level standard deviation: ~0 for a blank (black or uniform) viewport."""
    return float(ImageStat.Stat(Image.open(io.BytesIO(png)).convert("L")).stddev[0])


def _difference(a: bytes, b: bytes) -> float:
    """Mean absolute grey-level difference of two same-sized screenshots."""
    ia, ib = (Image.open(io.BytesIO(x)).convert("L") for x in (a, b))
    assert ia.size == ib.size
    return float(ImageStat.Stat(ImageChops.difference(ia, ib)).mean[0])


def _swipe(page: Page, dy: float) -> None:
    """A one-finger vertical swipe on the viewport, as touch events (Chromium makes pointer events)."""
    box = page.locator("#viewport").bounding_box()
    assert box is not None
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2 - dy / 2
    cdp = page.context.new_cdp_session(page)
    cdp.send("Input.dispatchTouchEvent", {"type": "touchStart", "touchPoints": [{"x": x, "y": y}]})
    for k in range(1, 11):
        cdp.send("Input.dispatchTouchEvent", {"type": "touchMove", "touchPoints": [{"x": x, "y": y + dy * k / 10}]})
    cdp.send("Input.dispatchTouchEvent", {"type": "touchEnd", "touchPoints": []})
    cdp.detach()


def _new_share(server: Server, **options: object) -> str:
    site = server.site
    share = create_share(site.archive.engine, site.app.state.authenticator.key, site.owned_uid, created_by=None,
                         expires_in_days=7, max_days=365, **options)  # type: ignore[arg-type]
    return f"{server.url}/s/{share.token}"


def test_first_image_within_one_second_on_a_phone(live_site: Server, phone: BrowserContext) -> None:
    url = _new_share(live_site)
    page = phone.new_page()
    problems = _watch(page)
    page.goto(f"{live_site.url}/static/app.css")  # a warm connection, as a phone that just scanned the code
    started = time.monotonic()
    page.goto(url, wait_until="commit")
    _image_loaded(page)
    elapsed = time.monotonic() - started
    png = _viewport_png(page, "phone-share-first-image")
    assert elapsed < 1.0, f"first image after {elapsed:.2f} s"
    assert _spread(png) > 10
    assert not problems, problems


def test_share_link_with_pin_swipe_and_window_on_a_phone(live_site: Server, phone: BrowserContext) -> None:
    url = _new_share(live_site, pin="2580")
    page = phone.new_page()
    problems = _watch(page)
    page.goto(url)
    page.screenshot(path=str(ARTIFACTS / "phone-share-pin.png"))
    assert page.locator("#pin").is_visible()
    page.fill("#pin", "1111")
    page.click("button[type=submit]")
    assert "Wrong PIN" in page.content()
    page.fill("#pin", "2580")
    page.click("button[type=submit]")
    _image_loaded(page)
    first = _viewport_png(page, "phone-share-after-pin")
    assert _spread(first) > 10, "the image is blank"
    start_index = page.locator("#viewport").get_attribute("data-index")
    assert page.locator("#patient-name").inner_text() == "Müller Jürgen"

    _swipe(page, 160)
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.index !== '{start_index}'")
    _image_loaded(page)
    swiped = _viewport_png(page, "phone-share-swiped")
    assert _difference(first, swiped) > 0.5, "swiping did not change the image"
    assert page.locator("#slice-label").inner_text() != ""

    page.select_option("#preset", label="Lung (-600/1500)")
    # Decoded in the browser (pixels.js) the canvas takes the window; else the rendered JPEG carries it.
    page.wait_for_function("() => { const d = document.getElementById('viewport').dataset;"
                           " return (d.pixels === 'decoded' && (d.painted || '').includes('@-600,1500'))"
                           " || (d.loaded || '').includes('window=-600,1500'); }")
    _image_loaded(page)
    lung = _viewport_png(page, "phone-share-lung-window")
    assert _difference(swiped, lung) > 0.5, "the window change did not change the image"
    assert "C -600" in page.locator("#window-label").inner_text()

    assert page.locator("button[data-mode=window]").is_hidden()  # a visitor starts with the simple tools
    page.click("#tools-toggle")
    page.click("button[data-mode=window]")
    before = page.locator("#viewport").get_attribute("data-window")
    _swipe(page, -120)
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.window !== '{before}'")
    _image_loaded(page)
    _viewport_png(page, "phone-share-dragged-window")
    assert not problems, problems


def test_expired_and_revoked_links_show_their_pages(live_site: Server, phone: BrowserContext) -> None:
    site = live_site.site
    expired = _new_share(live_site)
    with site.archive.engine.begin() as conn:
        conn.execute(text("UPDATE shares SET expires_at = :t WHERE id = (SELECT MAX(id) FROM shares)"),
                     {"t": utcnow() - timedelta(days=1)})
    revoked = create_share(site.archive.engine, site.app.state.authenticator.key, site.owned_uid, created_by=None,
                           expires_in_days=7, max_days=365)
    revoke_share(site.archive.engine, site.owned_uid, revoked.id)
    page = phone.new_page()
    response = page.goto(expired)
    assert response is not None and response.status == 410
    assert page.locator("h1").inner_text() == "Link expired"
    page.screenshot(path=str(ARTIFACTS / "phone-share-expired.png"))
    response = page.goto(f"{live_site.url}/s/{revoked.token}")
    assert response is not None and response.status == 410
    assert page.locator("h1").inner_text() == "Link revoked"
    page.screenshot(path=str(ARTIFACTS / "phone-share-revoked.png"))


def test_worklist_finds_a_study_by_name_and_opens_it(live_site: Server, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems = _watch(page)
    page.goto(f"{live_site.url}/viewer/worklist")
    page.fill("input[name=username]", "doc")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/viewer/worklist")
    page.fill("input[name=name]", "muller")  # case and accents do not matter
    page.click("form.search button[type=submit]")
    page.wait_for_url("**name=muller**")
    results = page.locator("#results .study")
    assert results.count() == 1 and "Müller Jürgen" in results.inner_text()
    page.screenshot(path=str(ARTIFACTS / "desktop-worklist-search.png"))
    results.locator("a").click()
    page.wait_for_url(f"**/viewer/studies/{live_site.site.owned_uid}")
    _image_loaded(page)
    first = _viewport_png(page, "desktop-viewer")
    assert _spread(first) > 10
    index = page.locator("#viewport").get_attribute("data-index")
    page.locator("#viewport").focus()
    page.keyboard.press("ArrowDown")
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.index !== '{index}'")
    page.mouse.move(700, 400)
    page.mouse.wheel(0, 120)
    page.click("#zoom-in")
    _image_loaded(page)
    playing_from = page.locator("#viewport").get_attribute("data-index")
    page.click("#cine")
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.index !== '{playing_from}'")
    page.click("#cine")
    assert page.locator("#cine").get_attribute("aria-pressed") == "false"
    page.screenshot(path=str(ARTIFACTS / "desktop-viewer-zoomed.png"))
    assert not problems, problems
    context.close()


def test_patient_name_with_markup_shows_as_text(live_site: Server, browser: Browser) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    problems = _watch(page)
    page.goto(f"{live_site.url}/login")
    page.fill("input[name=username]", "doc")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/viewer/worklist")
    page.goto(f"{live_site.url}/viewer/studies/{live_site.site.xss[0].StudyInstanceUID}")
    _image_loaded(page)
    assert page.locator("#patient-name").inner_text() == XSS_NAME.replace("^", " ")
    page.goto(f"{live_site.url}/viewer/worklist?name=script")
    assert XSS_NAME.split("^")[0] in page.locator("#results").inner_text()
    page.screenshot(path=str(ARTIFACTS / "desktop-markup-as-text.png"))
    assert not problems, problems  # no alert() ran
    context.close()


def test_patient_home_on_a_phone(live_site: Server, phone: BrowserContext) -> None:
    page = phone.new_page()
    problems = _watch(page)
    page.goto(f"{live_site.url}/viewer/")
    page.fill("input[name=username]", "pat")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/viewer/home")
    studies = page.locator(".studies .study")
    assert studies.count() == 1 and "CT THORAX" in studies.inner_text()
    page.screenshot(path=str(ARTIFACTS / "phone-patient-home.png"), full_page=True)
    studies.locator("a.study-link").click()
    page.wait_for_url(f"**/viewer/studies/{live_site.site.owned_uid}")
    _image_loaded(page)
    assert page.locator("#share").is_visible()  # the patient may share the study
    page.click("#share")
    page.fill("input[name=pin]", "86420")
    page.click("#share-create")
    page.wait_for_function("() => document.getElementById('share-url').value.includes('/s/')")
    page.wait_for_function("() => { const q = document.getElementById('share-qr');"
                           " return q.complete && q.naturalWidth > 0; }")
    # The live site listens on loopback with no CLOUDFILM_PUBLIC_URL: the dialog says the link works here only.
    warning = page.locator("#share-warning")
    assert warning.is_visible() and "only this computer can open" in warning.inner_text()
    assert "CLOUDFILM_PUBLIC_URL" in warning.inner_text()
    assert page.locator("input[name=email]").count() == 0  # no e-mail field without CLOUDFILM_SMTP_HOST
    page.screenshot(path=str(ARTIFACTS / "phone-patient-share-dialog.png"))
    assert page.locator("#share-dicomweb").is_hidden()  # a link for the phone only
    page.check("input[name=for_clinician]")  # the same dialog, for the next hospital's doctor
    page.fill("input[name=recipient]", "Dr. Ana Ruiz, Hospital del Mar")
    page.click("#share-create")
    page.wait_for_function("() => document.getElementById('share-dicomweb-token').value.startsWith('cfs_')")
    assert page.locator("#share-dicomweb-url").input_value() == f"{live_site.url}/dicomweb"
    page.wait_for_function("() => document.getElementById('share-list').textContent.includes('DICOMweb for Dr. Ana')")
    page.screenshot(path=str(ARTIFACTS / "phone-patient-clinician-share.png"), full_page=True)
    assert not problems, problems
