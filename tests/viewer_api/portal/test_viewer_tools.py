"""The viewer's decoded pixels and measuring tools in headless Chromium against a known phantom.

Frames are decoded in the page (pixels.js): dragging the window repaints the canvas without asking
the server for an image. Tools (measure.js) measure the phantom of :mod:`phantoms`: a 20 mm line on
0.5 mm pixels, a 100 HU disk, a right angle; lengths say how they are calibrated; orientation
markers (overlays.js) name the edges of axial, coronal and sagittal slices. Screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageChops, ImageStat
from playwright.sync_api import Browser, Page, Request, sync_playwright

from tests.viewer_api.portal.conftest import PASSWORD, Server, build_site, serve_site, store
from tests.viewer_api.portal.phantoms import CENTRE_PX, DISK_HU, Phantom, make_phantom

ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"viewport": {"width": 1366, "height": 800}}
PHONE = {"viewport": {"width": 375, "height": 667}, "has_touch": True, "is_mobile": True, "device_scale_factor": 2}


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    return make_phantom()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, phantom: Phantom) -> Iterator[Server]:
    for built in build_site(Path(tmp_path_factory.mktemp("tools"))):
        store(built.archive, phantom.datasets)
        yield from serve_site(built)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def _open(browser: Browser, server: Server, phantom: Phantom, context: dict[str, Any]) -> Page:
    """Signed in as a physician, the phantom study open and its middle frame decoded."""
    page = browser.new_context(**context).new_page()  # type: ignore[arg-type]
    errors: list[str] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.goto(f"{server.url}/login?next=/viewer/studies/{phantom.study_uid}")
    page.fill("input[name=username]", "doc")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/viewer/studies/{phantom.study_uid}")
    _decoded(page)
    assert not errors, errors
    return page


def _decoded(page: Page) -> None:
    page.wait_for_function("() => document.getElementById('viewport').dataset.pixels === 'decoded'"
                           " && !document.getElementById('pixels').hidden", timeout=10_000)


def _select(page: Page, phantom: Phantom, role: str) -> None:
    index = page.evaluate("uid => JSON.parse(document.getElementById('study-data').textContent).series"
                          ".findIndex(s => s.uid === uid)", phantom.series[role])
    assert index >= 0
    page.evaluate("k => window.cloudfilmViewer.selectSeries(k)", index)
    _decoded(page)


def _screen(page: Page, x: float, y: float) -> tuple[float, float]:
    """The page position of image point (x, y) (image pixel coordinates)."""
    box = page.evaluate("() => { const r = document.getElementById('frame').getBoundingClientRect();"
                        " const s = window.cloudfilmViewer.state;"
                        " return [r.left, r.top, r.width / s.natW, r.height / s.natH]; }")
    return box[0] + x * box[2], box[1] + y * box[3]


def _tool(page: Page, mode: str) -> None:
    page.click(f".modes .mode[data-mode={mode}]")


def _drag(page: Page, points: list[tuple[float, float]]) -> None:
    page.mouse.move(*_screen(page, *points[0]))
    page.mouse.down()
    for p in points[1:]:
        page.mouse.move(*_screen(page, *p), steps=4)
    page.mouse.up()


def _last(page: Page, kind: str) -> dict[str, Any]:
    items = [m for m in page.evaluate("() => window.cloudfilmTools.measurements()") if m["kind"] == kind]
    assert items, f"no {kind} measurement"
    return dict(items[-1])


def _viewport(page: Page) -> Image.Image:
    return Image.open(io.BytesIO(page.locator("#viewport").screenshot())).convert("L")


def test_window_drag_repaints_decoded_pixels_without_an_image_request(browser: Browser, server: Server,
                                                                      phantom: Phantom) -> None:
    page = _open(browser, server, phantom, DESKTOP)
    page.wait_for_load_state("networkidle")
    before = _viewport(page)
    painted = page.locator("#viewport").get_attribute("data-painted")
    requests: list[str] = []

    def seen(r: Request) -> None:
        if "/frames/" in r.url or "/rendered" in r.url or r.resource_type == "image":
            requests.append(r.url)

    page.on("request", seen)
    page.click(".modes .mode[data-mode=window]")
    box = page.locator("#viewport").bounding_box()
    assert box
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 150, cy + 60, steps=10)
    page.mouse.up()
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.painted !== {json.dumps(painted)}")
    page.wait_for_timeout(300)  # any debounced request would be out by now
    after = _viewport(page)
    page.screenshot(path=str(ARTIFACTS / "viewer-tools-window-drag.png"))
    assert ImageStat.Stat(ImageChops.difference(before, after)).mean[0] > 2, "the window drag changed nothing"
    assert page.locator("#viewport").get_attribute("data-window") != "40,400"
    assert requests == [], requests
    # Invert is a lookup-table change too.
    page.click("#invert")
    page.wait_for_function("() => document.getElementById('viewport').dataset.painted.endsWith('!')")
    assert ImageStat.Stat(ImageChops.difference(after, _viewport(page))).mean[0] > 10  # the letterbox stays black
    assert requests == [], requests
    page.context.close()


def test_the_rendered_jpeg_is_fetched_before_any_metadata_or_frame(browser: Browser, server: Server,
                                                                    phantom: Phantom) -> None:
    """The decoder waits for the first paint: no request of pixels.js, measure.js or overlays.js competes with it,
    even when the rendered JPEG is slow (held here for half a second)."""
    page = browser.new_context(**DESKTOP).new_page()  # type: ignore[arg-type]
    page.goto(f"{server.url}/login?next=/viewer/studies/{phantom.study_uid}")
    page.fill("input[name=username]", "doc")
    page.fill("input[name=password]", PASSWORD)

    def slow(route: Any) -> None:
        time.sleep(0.5)
        route.continue_()

    page.route("**/rendered", slow)
    page.click("button[type=submit]")
    page.wait_for_url(f"**/viewer/studies/{phantom.study_uid}")
    _decoded(page)
    entries = page.evaluate("() => performance.getEntriesByType('resource').map((e) =>"
                            " ({ url: e.name, start: e.startTime, end: e.responseEnd }))")
    first = page.evaluate("() => document.getElementById('frame').src")
    jpeg = [e for e in entries if e["url"] == first]
    assert jpeg, first
    decoder = [e for e in entries
               if e["url"].endswith("/metadata") or ("/frames/" in e["url"] and "/rendered" not in e["url"])]
    assert decoder, "nothing decoded"
    assert min(e["start"] for e in decoder) >= jpeg[0]["end"], (jpeg[0], decoder[:3])
    page.context.close()


def test_length_roi_probe_and_angle_on_the_phantom(browser: Browser, server: Server, phantom: Phantom) -> None:
    page = _open(browser, server, phantom, DESKTOP)
    c = CENTRE_PX
    _tool(page, "length")
    _drag(page, [(c - 20, c + 5), (c + 20, c + 5)])  # 40 px of 0.5 mm
    length = _last(page, "length")
    assert length["result"]["unit"] == "mm" and length["result"]["calibration"] == "patient"
    assert abs(length["result"]["value"] - 20.0) <= 0.1, length
    assert length["text"] == "20.0 mm"

    _tool(page, "ellipse")
    _drag(page, [(c - 12, c - 12), (c + 12, c + 12)])  # inside the disk of radius 20
    roi = _last(page, "ellipse")["result"]
    assert abs(roi["mean"] - DISK_HU) <= 1, roi
    assert roi["sd"] < 1 and roi["min"] == DISK_HU and roi["max"] == DISK_HU and roi["unit"] == "HU"
    assert abs(roi["area"] - 3.14159 * 6 * 6) < 1.5  # radius 12 px = 6 mm

    _drag(page, [(c - 30, c - 30), (c + 30, c + 30)])  # half disk, half background
    wide = _last(page, "ellipse")["result"]
    assert wide["min"] == 0 and wide["max"] == DISK_HU and wide["sd"] > 20

    _tool(page, "probe")
    _drag(page, [(c + 0.5, c + 0.5)])
    assert _last(page, "probe")["result"]["value"] == DISK_HU
    _drag(page, [(10.5, 10.5)])
    assert _last(page, "probe")["result"]["value"] == 0

    _tool(page, "angle")
    _drag(page, [(c - 40, c - 40), (c, c - 40)])  # first arm, ending at the vertex
    _drag(page, [(c, c - 40), (c, c)])  # the second arm
    assert abs(_last(page, "angle")["result"]["value"] - 90) < 0.5
    page.screenshot(path=str(ARTIFACTS / "viewer-tools-measurements.png"))
    labels = page.locator("#measurements .measure-label").all_text_contents()
    assert any("20.0 mm" in t for t in labels) and any("Mean 100.0 HU" in t for t in labels)

    # Measurements stay with their slice.
    page.evaluate("() => window.cloudfilmViewer.go(window.cloudfilmViewer.state.i + 1)")
    assert page.locator("#measurements .measure").count() == 0
    page.evaluate("() => window.cloudfilmViewer.go(window.cloudfilmViewer.state.i - 1)")
    assert page.locator("#measurements .measure").count() == 6

    _select(page, phantom, "detector")
    _tool(page, "length")
    _drag(page, [(c - 20, c), (c + 20, c)])
    detector = _last(page, "length")
    assert detector["result"]["calibration"] == "calibrated at detector"
    assert detector["text"] == "20.0 mm (calibrated at detector)"

    _select(page, phantom, "uncalibrated")
    _drag(page, [(c - 20, c), (c + 20, c)])
    bare = _last(page, "length")
    assert bare["result"]["unit"] == "px" and bare["text"] == "40 px (uncalibrated px)"
    page.context.close()


@pytest.mark.parametrize(("role", "left", "right", "top", "bottom"), [
    ("axial", "R", "L", "A", "P"), ("coronal", "R", "L", "H", "F"), ("sagittal", "A", "P", "H", "F")])
def test_orientation_markers_and_slice_position(browser: Browser, server: Server, phantom: Phantom,
                                                role: str, left: str, right: str, top: str, bottom: str) -> None:
    page = _open(browser, server, phantom, PHONE)
    _select(page, phantom, role)
    page.wait_for_function("() => document.getElementById('orient-left').textContent !== ''")
    edges = {side: page.locator(f"#orient-{side}").inner_text() for side in ("left", "right", "top", "bottom")}
    assert edges == {"left": left, "right": right, "top": top, "bottom": bottom}
    position = page.locator("#position-label").inner_text()
    assert "Th 2.5 mm" in position and "Loc " in position
    page.screenshot(path=str(ARTIFACTS / f"viewer-tools-phone-{role}.png"))
    page.click("#info-toggle")
    assert not page.locator("#orient-left").is_visible() and not page.locator("#position-label").is_visible()
    page.context.close()
