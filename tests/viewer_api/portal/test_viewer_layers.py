"""The viewer's overlays and layouts in headless Chromium against the measuring phantom.

A SEG over the axial series (segs.js) is drawn in its recommended colour on the slice it
references and switched off from the legend; the freehand ROI (measure.js) reads the 100 HU disk;
patient corners (corners.js) follow the Info switch; a 1×2 layout (layouts.js) shows two series
and scrolls a second series of the same frame of reference to the same position, at its own
slice index. Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import io
import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from playwright.sync_api import Browser, Page, sync_playwright
from pydicom.dataset import Dataset

from tests.factories import make_ct_study
from tests.viewer_api.portal.conftest import PASSWORD, Server, build_site, serve_site, store
from tests.viewer_api.portal.phantoms import (
    CENTRE_PX,
    DISK_HU,
    PATIENT,
    SEG_SQUARE,
    Phantom,
    make_partial_series,
    make_phantom,
    make_phantom_seg,
)
from tests.viewer_api.test_findings import LesionStudy, add_lesion_study

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"viewport": {"width": 1366, "height": 800}}


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom()


@pytest.fixture(scope="module")
def partial_series(phantom: Phantom) -> list[Dataset]:
    return make_partial_series(phantom)


@pytest.fixture(scope="module")
def partial_uid(partial_series: list[Dataset]) -> str:
    return str(partial_series[0].SeriesInstanceUID)


@pytest.fixture(scope="module")
def prior() -> list[Dataset]:
    """An earlier CT of the phantom's patient (four slices, its own frame of reference)."""
    return make_ct_study(PATIENT, n_slices=4, rows=64, cols=64, seed=1402, study_date="20230110",
                         study_description="PRIOR CT")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, phantom: Phantom, partial_series: list[Dataset],
           prior: list[Dataset]) -> Iterator[Server]:
    for built in build_site(Path(tmp_path_factory.mktemp("layers"))):
        store(built.archive, [*phantom.datasets, *partial_series, make_phantom_seg(phantom), *prior])
        yield from serve_site(built)


@pytest.fixture(scope="module")
def lesion(server: Server) -> LesionStudy:
    """A CT with AI findings (TID 1500 SRs) of another patient."""
    return add_lesion_study(server.site)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def _open(browser: Browser, server: Server, phantom: Phantom, errors: list[str]) -> Page:
    page = browser.new_context(**DESKTOP).new_page()  # type: ignore[arg-type]
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/login?next=/viewer/studies/{phantom.study_uid}")
    page.fill("input[name=username]", "doc")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/viewer/studies/{phantom.study_uid}")
    _select(page, phantom.series["axial"])
    return page


def _decoded(page: Page) -> None:
    page.wait_for_function("() => document.getElementById('viewport').dataset.pixels === 'decoded'"
                           " && !document.getElementById('pixels').hidden", timeout=10_000)


def _select(page: Page, series_uid: str, index: int | None = None) -> None:
    k = page.evaluate("uid => JSON.parse(document.getElementById('study-data').textContent).series"
                      ".findIndex(s => s.uid === uid)", series_uid)
    assert k >= 0
    page.evaluate("([k, i]) => window.cloudfilmViewer.selectSeries(k, i)", [k, index])
    _decoded(page)


def _screen(page: Page, x: float, y: float) -> tuple[float, float]:
    box = page.evaluate("() => { const r = document.getElementById('frame').getBoundingClientRect();"
                        " const s = window.cloudfilmViewer.state;"
                        " return [r.left, r.top, r.width / s.natW, r.height / s.natH]; }")
    return box[0] + x * box[2], box[1] + y * box[3]


def _pixel(page: Page, x: float, y: float) -> tuple[int, int, int]:
    """The colour on screen at image point (x, y)."""
    sx, sy = _screen(page, x, y)
    shot = Image.open(io.BytesIO(page.screenshot(clip={"x": sx - 1, "y": sy - 1, "width": 3, "height": 3})))
    r, g, b = shot.convert("RGB").getpixel((1, 1))
    return int(r), int(g), int(b)


def test_seg_masks_are_coloured_overlays_switched_per_segment(browser: Browser, server: Server,
                                                              phantom: Phantom) -> None:
    errors: list[str] = []
    page = _open(browser, server, phantom, errors)
    page.wait_for_function("() => document.querySelectorAll('#layers input').length === 2", timeout=10_000)
    labels = page.locator("#layers label").all_text_contents()
    assert [t.strip() for t in labels] == ["Lesion", "Tissue"]
    # The SEG is a layer, not a grey series to page through.
    assert page.locator(".series-strip button:visible").count() == 6
    middle = 1  # the lesion is on the middle slice of three
    page.evaluate(f"() => window.cloudfilmViewer.go({middle})")
    page.wait_for_function("() => document.getElementById('viewport').dataset.segments === '2'")
    centre = (SEG_SQUARE[0] + SEG_SQUARE[1]) / 2
    r, g, b = _pixel(page, centre, centre)
    # 45 % of red over the background's grey (0 HU in a 40/400 window: about 102).
    assert r > 150 and g < 90 and b < 90, (r, g, b)
    tr, tg, tb = _pixel(page, 100, 100)
    assert (tr, tg, tb) != (r, g, b) and max(tr, tg, tb) - min(tr, tg, tb) > 40, (tr, tg, tb)
    grey = _pixel(page, 60, 10)
    assert max(grey) - min(grey) < 6, grey
    page.screenshot(path=str(ARTIFACTS / "viewer-layers-seg.png"))

    page.click("#layers label:has-text('Lesion')")
    page.wait_for_function("() => document.getElementById('viewport').dataset.segments === '1'")
    off = _pixel(page, centre, centre)
    assert max(off) - min(off) < 6, off
    page.screenshot(path=str(ARTIFACTS / "viewer-layers-seg-off.png"))
    # The lesion is not on the first slice; the tissue square is on every slice.
    page.click("#layers label:has-text('Lesion')")
    page.evaluate("() => window.cloudfilmViewer.go(0)")
    page.wait_for_function("() => document.getElementById('viewport').dataset.segments === '1'")
    assert not errors, errors
    page.context.close()


def _last(page: Page, kind: str) -> dict[str, Any]:
    items = [m for m in page.evaluate("() => window.cloudfilmTools.measurements()") if m["kind"] == kind]
    assert items, f"no {kind} measurement"
    return dict(items[-1])


def _outline(radius: float, n: int = 48) -> list[tuple[float, float]]:
    c = CENTRE_PX
    turn = [2 * math.pi * k / n for k in range(n + 1)]
    return [(c + radius * math.cos(t), c + radius * math.sin(t)) for t in turn]


def test_freehand_roi_reads_the_disk(browser: Browser, server: Server, phantom: Phantom) -> None:
    errors: list[str] = []
    page = _open(browser, server, phantom, errors)
    page.click(".modes .mode[data-mode=freehand]")
    points = _outline(12)
    page.mouse.move(*_screen(page, *points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*_screen(page, *p), steps=2)
    page.mouse.up()
    roi = _last(page, "freehand")["result"]
    assert abs(roi["mean"] - DISK_HU) <= 1, roi
    assert roi["sd"] < 1 and roi["min"] == DISK_HU and roi["max"] == DISK_HU and roi["unit"] == "HU"
    # A 48-gon of radius 12 px (6 mm) on 0.5 mm pixels: 99.7 % of the circle's 113.1 mm².
    assert abs(roi["area"] - math.pi * 36 * 0.997) < 1.0, roi
    assert page.locator("#measurements .measure.freehand polygon").count() == 1
    labels = page.locator("#measurements .measure-label").all_text_contents()
    assert any("Mean 100.0 HU" in t for t in labels), labels
    page.screenshot(path=str(ARTIFACTS / "viewer-layers-freehand.png"))

    # Half in the disk, half outside: both values, a wide spread.
    wide = _outline(30)
    page.mouse.move(*_screen(page, *wide[0]))
    page.mouse.down()
    for p in wide[1:]:
        page.mouse.move(*_screen(page, *p), steps=2)
    page.mouse.up()
    spread = _last(page, "freehand")["result"]
    assert spread["min"] == 0 and spread["max"] == DISK_HU and spread["sd"] > 20, spread
    assert not errors, errors
    page.context.close()


def test_patient_corner_follows_the_info_switch(browser: Browser, server: Server, phantom: Phantom) -> None:
    errors: list[str] = []
    page = _open(browser, server, phantom, errors)
    corner = page.locator("#patient-corner")
    assert corner.is_visible()
    text = corner.inner_text().splitlines()
    assert text == ["Phantom Measuring", "ID CF-PHANTOM", "2024-01-15 · MEASURING PHANTOM",
                    "Se 1 · Phantom axial"], text
    page.click("#info-toggle")
    assert not corner.is_visible()
    page.click("#info-toggle")
    _select(page, phantom.series["coronal"])
    assert corner.inner_text().splitlines()[-1] == "Se 2 · Phantom coronal"
    assert not errors, errors
    page.context.close()


def _panes(page: Page) -> list[dict[str, Any]]:
    return list(page.evaluate("() => window.cloudfilmLayouts.panes()"))


def test_side_by_side_series_scroll_together_by_position(browser: Browser, server: Server, phantom: Phantom,
                                                         partial_uid: str) -> None:
    errors: list[str] = []
    page = _open(browser, server, phantom, errors)
    page.click(".layouts button[data-layout='1x2']")
    assert page.locator("#pane-1").is_visible() and page.locator("#viewport").is_visible()
    main_box, pane_box = page.locator("#viewport").bounding_box(), page.locator("#pane-1").bounding_box()
    assert main_box and pane_box and pane_box["x"] >= main_box["x"] + main_box["width"] - 1  # side by side
    # The second viewport starts on the next series (coronal: not parallel, so it keeps its place).
    assert _panes(page)[0]["series"] == phantom.series["coronal"]
    page.select_option("#pane-1 .pane-series", f"{phantom.study_uid}/{partial_uid}")
    # Main slices lie at z = 2.5, 0, -2.5 (top to bottom); the partial series has z = 0, -2.5 only.
    page.evaluate("() => window.cloudfilmViewer.go(2)")
    page.wait_for_function("() => window.cloudfilmLayouts.panes()[0].index === 1")
    page.evaluate("() => window.cloudfilmViewer.go(1)")
    page.wait_for_function("() => window.cloudfilmLayouts.panes()[0].index === 0")
    page.wait_for_function("() => document.querySelector('#pane-1 .pane-img').complete"
                           " && document.querySelector('#pane-1 .pane-img').naturalWidth > 0")
    page.screenshot(path=str(ARTIFACTS / "viewer-layers-1x2-sync.png"))
    # No slice of the partial series at z = 2.5: it stays where it is.
    page.evaluate("() => window.cloudfilmViewer.go(0)")
    page.wait_for_timeout(300)
    assert _panes(page)[0]["index"] == 0
    # Scrolling the second viewport moves the first: one wheel notch down is z = -2.5, main slice 3.
    box = page.locator("#pane-1").bounding_box()
    assert box
    page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    page.mouse.wheel(0, 100)
    page.wait_for_function("() => window.cloudfilmLayouts.panes()[0].index === 1")
    page.wait_for_function("() => window.cloudfilmViewer.state.i === 2")
    assert page.locator("#viewport").get_attribute("data-index") == "2"
    page.mouse.wheel(0, -100)
    page.wait_for_function("() => window.cloudfilmViewer.state.i === 1")
    # Without sync the second viewport stays where it is.
    page.click("#sync")
    page.evaluate("() => window.cloudfilmViewer.go(2)")
    page.wait_for_timeout(300)
    assert _panes(page)[0]["index"] == 0
    # 2×2: three viewports beside the main one; back to 1×1 hides them.
    page.click(".layouts button[data-layout='2x2']")
    assert page.locator(".panes > .viewport:visible").count() == 4
    page.screenshot(path=str(ARTIFACTS / "viewer-layers-2x2.png"))
    page.click(".layouts button[data-layout='1x1']")
    assert page.locator(".panes > .viewport:visible").count() == 1
    assert not errors, errors
    page.context.close()


def test_prior_study_of_the_patient_beside_the_current_one(browser: Browser, server: Server, phantom: Phantom,
                                                           prior: list[Dataset]) -> None:
    errors: list[str] = []
    page = _open(browser, server, phantom, errors)
    page.click("#compare")
    prior_study, prior_series = str(prior[0].StudyInstanceUID), str(prior[0].SeriesInstanceUID)
    page.wait_for_function("uid => (window.cloudfilmLayouts.panes()[0] || {}).study === uid", arg=prior_study)
    pane = _panes(page)[0]
    assert pane["series"] == prior_series and not pane["hidden"]
    page.wait_for_function("() => document.querySelector('#pane-1 .pane-img').complete"
                           " && document.querySelector('#pane-1 .pane-img').naturalWidth > 0")
    assert "/studies/" + prior_study + "/" in str(page.locator("#pane-1 .pane-img").get_attribute("src"))
    assert "2023-01-10" in page.locator("#pane-1 .pane-label").inner_text()
    groups = page.locator("#pane-1 .pane-series optgroup").evaluate_all("els => els.map(e => e.label)")
    assert groups == ["This study", "Prior 2023-01-10 · PRIOR CT"], groups
    page.screenshot(path=str(ARTIFACTS / "viewer-layers-prior.png"))
    # Another frame of reference: the prior keeps its slice while the current study scrolls.
    before = _panes(page)[0]["index"]
    page.evaluate("() => window.cloudfilmViewer.go(0)")
    page.wait_for_timeout(300)
    assert _panes(page)[0]["index"] == before
    page.locator("#pane-1").focus()
    page.keyboard.press("ArrowDown")
    assert _panes(page)[0]["index"] == before + 1
    assert page.evaluate("() => window.cloudfilmViewer.state.i") == 0
    assert not errors, errors
    page.context.close()


def test_ai_regions_switch_off_and_on_in_the_same_legend(browser: Browser, server: Server,
                                                         lesion: LesionStudy) -> None:
    page = browser.new_context(**DESKTOP).new_page()  # type: ignore[arg-type]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/login?next=/viewer/studies/{lesion.study_uid}")
    page.fill("input[name=username]", "doc")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/viewer/studies/{lesion.study_uid}")
    page.wait_for_function("() => document.querySelectorAll('#findings-list li').length > 0", timeout=10_000)
    page.locator("#findings-list li").nth(1).click()
    page.wait_for_function("() => document.getElementById('viewport').dataset.findingsShown === '2'")
    regions = page.locator("#layer-regions")
    assert regions.is_checked() and page.locator("#overlay").is_visible()
    assert page.locator("#layers label").all_text_contents() == [" AI regions"]  # no SEG in this study
    page.click("label:has(#layer-regions)")
    assert not regions.is_checked() and not page.locator("#overlay").is_visible()
    page.screenshot(path=str(ARTIFACTS / "viewer-layers-regions-off.png"))
    page.click("label:has(#layer-regions)")
    assert page.locator("#overlay").is_visible()
    assert not errors, errors
    page.context.close()
