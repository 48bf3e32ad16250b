"""The OHIF viewer 3.x, served same-origin at /ohif/, lists the stored studies and shows an image.

Headless Debian Chromium driven by Playwright. OHIF itself is the npm package ``@ohif/app``,
fetched by ``scripts/fetch_ohif.sh`` (or taken from ``CLOUDFILM_OHIF_DIR``); screenshots go to
``test-artifacts/``.
"""

from __future__ import annotations

import io
import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from playwright.sync_api import Page, Response, sync_playwright

from pacs.archive import Archive
from tests.factories import PATIENTS, make_ct_study
from tests.viewer_api.conftest import RunningServer, dicomweb_settings, store_all

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"


@pytest.fixture(scope="session")
def ohif_dist() -> Path:
    """A built OHIF: ``CLOUDFILM_OHIF_DIR`` when it holds one, else fetched by the project's script."""
    given = os.environ.get("CLOUDFILM_OHIF_DIR")
    if given and (Path(given) / "index.html").is_file():
        return Path(given)
    done = subprocess.run([str(ROOT / "scripts" / "fetch_ohif.sh")], capture_output=True, text=True, timeout=600,
                          check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"scripts/fetch_ohif.sh failed (npm and the npm registry are needed):\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


@pytest.fixture
def ohif_site(tmp_path: Path, ohif_dist: Path,
              serve: Callable[[Archive], RunningServer]) -> Iterator[tuple[str, list[str]]]:  # fmt: skip
    with Archive.open(dicomweb_settings(tmp_path, ohif_dir=ohif_dist)) as archive:
        ct = make_ct_study(PATIENTS[0], n_slices=10, rows=128, cols=128, seed=51, lesion="random")
        mr = make_ct_study(PATIENTS[1], n_slices=4, rows=64, cols=64, seed=52, modality="MR",
                           study_description="MR BRAIN")  # fmt: skip
        store_all(archive, ct + mr)
        yield serve(archive).url, [ct[0].StudyInstanceUID, mr[0].StudyInstanceUID]


def viewport_pixels(page: Page) -> np.ndarray:
    """The largest canvas on the page (the image viewport) as grey levels; empty while there is none."""
    sized = [(c.bounding_box(), c) for c in page.locator("canvas").all()]
    sized = [(box, c) for box, c in sized if box and box["width"] > 200 and box["height"] > 200]
    if not sized:
        return np.zeros((1, 1), dtype=np.uint8)
    _box, canvas = max(sized, key=lambda bc: bc[0]["width"] * bc[0]["height"])  # type: ignore[index]
    return np.asarray(Image.open(io.BytesIO(canvas.screenshot())).convert("L"))


def test_ohif_lists_the_studies_and_shows_an_image(ohif_site: tuple[str, list[str]]) -> None:
    url, (ct_uid, _mr_uid) = ohif_site
    ARTIFACTS.mkdir(exist_ok=True)
    failures: list[str] = []
    dicomweb: list[str] = []

    def on_response(resp: Response) -> None:
        if resp.url.startswith(url):
            if "/dicomweb/" in resp.url or "/wado" in resp.url:
                dicomweb.append(resp.url)
            if resp.status >= 400:
                failures.append(f"{resp.status} {resp.url}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            page = browser.new_page(viewport={"width": 1400, "height": 900})
            page.on("response", on_response)
            page.on("requestfailed", lambda req: failures.append(f"failed {req.url} {req.failure}")
                    if req.url.startswith(url) else None)  # fmt: skip
            page.on("pageerror", lambda exc: failures.append(f"page error: {exc}"))

            page.goto(f"{url}/ohif/", wait_until="networkidle", timeout=90_000)
            page.get_by_text("Doe, John").wait_for(timeout=60_000)
            page.get_by_text("Müller, Jürgen").wait_for(timeout=10_000)
            assert page.get_by_text("MR BRAIN").count() >= 1
            page.screenshot(path=str(ARTIFACTS / "ohif-study-list.png"))

            page.goto(f"{url}/ohif/viewer?StudyInstanceUIDs={ct_uid}", wait_until="networkidle", timeout=90_000)
            deadline = time.monotonic() + 60
            while True:
                pixels = viewport_pixels(page)
                if pixels.std() > 10 and pixels.max() > 200:  # the bright lesion and body, not a blank canvas
                    break
                assert time.monotonic() < deadline, "the viewport stayed blank"
                time.sleep(1)
            skip = page.get_by_text("Skip all")
            if skip.count():
                skip.first.click()
            page.screenshot(path=str(ARTIFACTS / "ohif-viewer.png"))
            Image.fromarray(pixels).save(ARTIFACTS / "ohif-viewport.png")
        finally:
            browser.close()

    assert failures == []
    assert any("/metadata" in u for u in dicomweb) and any("/frames/" in u for u in dicomweb), dicomweb
