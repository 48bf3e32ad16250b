"""OHIF 3 shows the archive's AI results over the CT: the built-in lesion detector's SEG as a
segmentation overlay (coloured pixels over the grey CT), and a TID 1500 SR's planar (SCOORD) outline
as a measurement: opening the SR loads it into OHIF's measurement tracking (the region's TID 1410
group becomes a rectangle ROI over the CT, on its own slice, where the viewport goes), the
measurements panel lists it under its finding with the slice, and choosing it there brings the
viewport back to that slice. The app config's ``disableConfirmationPrompts`` makes opening the
series enough (no "load?" or "track?" prompt).

Headless Debian Chromium driven by Playwright against the real server; OHIF is the pinned
``@ohif/app`` build (``tests/viewer_api/test_ohif.py``). Screenshots go to ``test-artifacts/``.
"""

from __future__ import annotations

import io
import re
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, sync_playwright
from pydicom.dataset import Dataset

from ai_plugins.builtin.lesion_detector import LesionDetector
from ai_plugins.sdk import Finding, Findings, PluginInfo, Polygon, StudyInput, codes
from ai_plugins.sr import build_measurement_report, build_result_objects
from pacs.archive import Archive
from tests.factories import PATIENTS, Lesion, make_ct_case
from tests.viewer_api.conftest import RunningServer, dicomweb_settings, store_all
from tests.viewer_api.test_ohif import ARTIFACTS, CHROMIUM, ohif_dist

pytestmark = pytest.mark.slow
__all__ = ["ohif_dist"]
LESION = Lesion((0.0, 0.0, 0.0), 20.0)


OUTLINE_SERIES = 9101
OUTLINE_SLICE = 5  # 0-based, head first: the slice the 2D outline is drawn on
OUTLINE = [(40, 40), (80, 40), (80, 70), (40, 70)]  # a 40 × 30 pixel rectangle


@dataclass
class AiStudy:
    url: str
    study_uid: str
    n_slices: int
    pixel_mm: float


def _outline_report(datasets: list[Dataset]) -> Dataset:
    """A TID 1500 SR with one planar (SCOORD) polygon on one CT slice, as a reading tool would store."""
    findings = Findings(
        evaluated_series=[str(datasets[0].SeriesInstanceUID)],
        findings=[Finding(code=codes.MASS, probability=0.8, label="Outline 1",
                          region=Polygon(sop_instance_uid=str(datasets[OUTLINE_SLICE].SOPInstanceUID),
                                         points=OUTLINE))],
    )  # fmt: skip
    return build_measurement_report(findings, datasets, PluginInfo(name="outliner", version="1.0", vendor="tests"),
                                    series_number=OUTLINE_SERIES)  # fmt: skip


@pytest.fixture
def ai_site(tmp_path: Path, ohif_dist: Path, serve: Callable[[Archive], RunningServer]) -> Iterator[AiStudy]:
    """A CT with a lesion, the built-in lesion detector's SR and SEG (as the runner builds them) and a 2D SR."""
    with Archive.open(dicomweb_settings(tmp_path, ohif_dir=ohif_dist)) as archive:
        case = make_ct_case(PATIENTS[0], n_slices=24, rows=128, cols=128, lesion=LESION, seed=1402,
                            study_description="CT CHEST AI")  # fmt: skip
        study = StudyInput.from_datasets(case.datasets)
        detector = LesionDetector()
        sr, seg = build_result_objects(detector.run(study), study, detector.info())
        assert seg.Modality == "SEG" and sr.Modality == "SR"
        store_all(archive, [*case.datasets, sr, seg, _outline_report(case.datasets)])
        yield AiStudy(serve(archive).url, case.study_uid, len(case.datasets), float(case.datasets[0].PixelSpacing[0]))


def _viewport(page: Page) -> np.ndarray:
    """The largest canvas on screen (the image viewport) as RGB, cut from one page screenshot."""
    box = page.evaluate("""() => { let best = null;
        for (const c of document.querySelectorAll('canvas')) { const r = c.getBoundingClientRect();
          if (r.width > 200 && r.height > 200 && (!best || r.width * r.height > best.width * best.height)) best = r; }
        return best && { x: best.x, y: best.y, width: best.width, height: best.height }; }""")
    if not box:
        return np.zeros((1, 1, 3), dtype=np.uint8)
    return np.asarray(Image.open(io.BytesIO(page.screenshot(clip=box))).convert("RGB"))


def _wait_for(check: Callable[[], bool], what: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.5)


def _coloured(rgb: np.ndarray) -> int:
    """Pixels clearly not grey in the middle of the viewport (clear of OHIF's coloured corner icons and
    scroll bar): a CT alone has none; a segment or an annotation has many."""
    h, w = rgb.shape[:2]
    channels = rgb[h // 5: h - h // 5, w // 5: w - w // 5].astype(np.int16)
    return int(((channels.max(axis=2) - channels.min(axis=2)) > 60).sum())


def _image_number(page: Page) -> str:
    """OHIF's "I: n (n/N)" corner text of the viewport."""
    text = page.locator("body").inner_text()
    match = re.search(r"I:\s*(\d+)\s*\((\d+)/(\d+)\)", text)
    return match.group(2) if match else ""


def test_ohif_draws_the_seg_and_lists_an_sr_measurement(ai_site: AiStudy) -> None:
    ARTIFACTS.mkdir(exist_ok=True)
    problems: list[str] = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("response", lambda r: problems.append(f"{r.status} {r.url}") if r.status >= 400 else None)
            page.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            page.goto(f"{ai_site.url}/ohif/viewer?StudyInstanceUIDs={ai_site.study_uid}", wait_until="networkidle",
                      timeout=90_000)  # fmt: skip
            _wait_for(lambda: _viewport(page).std() > 10, "the CT never showed")
            skip = page.get_by_text("Skip all")
            if skip.count():
                skip.first.click()
                skip.first.wait_for(state="detached")
            before = _viewport(page)
            Image.fromarray(before).save(ARTIFACTS / "ohif-ct-viewport.png")
            assert _coloured(before) < 20, "the CT alone is grey"

            page.get_by_text("SEG", exact=True).first.dblclick()  # open the AI segmentation, as a user does
            _wait_for(lambda: _coloured(_viewport(page)) > 100, "no segment was drawn over the CT")
            seg = _viewport(page)
            page.screenshot(path=str(ARTIFACTS / "ohif-seg-overlay.png"))
            Image.fromarray(seg).save(ARTIFACTS / "ohif-seg-viewport.png")

            page.get_by_text(f"S:{OUTLINE_SERIES}").first.dblclick()  # the SR with the 2D outline
            _wait_for(lambda: _image_number(page) == str(OUTLINE_SLICE + 1),
                      f"the SR did not take the viewport to slice {OUTLINE_SLICE + 1}")  # fmt: skip
            _wait_for(lambda: _coloured(_viewport(page)) > 50, "the SR outline was not drawn")
            page.screenshot(path=str(ARTIFACTS / "ohif-sr-measurement.png"))

            page.locator('[data-cy="trackedMeasurements-btn"]').click()  # the measurements panel
            row = page.locator('[data-cy="measurement-table-row-0"]')
            row.wait_for(timeout=60_000)
            _wait_for(lambda: f"I: {OUTLINE_SLICE + 1}" in row.inner_text(), "the measurement does not name its slice")
            listed = row.inner_text()
            assert "Mass" in listed  # the finding's code names the measurement
            area = re.search(r"([\d.]+)\s*mm²", listed)
            assert area, listed
            (x0, y0), (x1, y1) = OUTLINE[0], OUTLINE[2]
            expected = abs(x1 - x0) * abs(y1 - y0) * ai_site.pixel_mm**2
            assert float(area.group(1)) == pytest.approx(expected, rel=0.02)  # the outline lies where it was drawn
            assert page.locator('[data-cy^="measurement-table-row-"]').count() == 1  # one finding, listed once
            page.screenshot(path=str(ARTIFACTS / "ohif-sr-measurement-listed.png"))

            box = page.locator('[data-cy="viewport-pane"]').first.bounding_box()
            assert box
            page.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
            for _ in range(4):  # scroll away from the measurement's slice
                page.mouse.wheel(0, 120)
            _wait_for(lambda: _image_number(page) not in ("", str(OUTLINE_SLICE + 1)), "scrolling did not move")
            page.locator('[data-cy="measurement-table-row-0"] [data-cy="data-row-title"]').click()
            _wait_for(lambda: _image_number(page) == str(OUTLINE_SLICE + 1),
                      f"choosing the measurement did not go back to slice {OUTLINE_SLICE + 1}")  # fmt: skip
            _wait_for(lambda: _coloured(_viewport(page)) > 50, "the outline is not drawn on its slice")
        finally:
            browser.close()
    assert problems == []
