"""The built-in viewer on a phone-sized screen: first image, slice change, window drag, bundle size.

    .venv/bin/python benchmarks/viewer_bench.py [--slices 200] [--size 512] [--runs 3]

One 200-slice 512x512 CT is ingested into a fresh archive (SQLite + filesystem) served by uvicorn
on loopback; Debian Chromium (Playwright, 375x667, touch, device scale 2) opens its share link in a
fresh browser context each run. Timed in the page (performance.now() from navigation start):
the rendered JPEG on screen (first paint), the first frame decoded in the browser and drawn on the
canvas (pixels.js); then, once the neighbouring frames are fetched, 40 slice changes (call to the
next animation frame after the canvas was drawn) and a 60-step window drag by the mouse (pointer
move to the next animation frame after the repaint, and the lookup-table paint alone). Figures are
medians over the runs of each run's p50 / p95. The JS and CSS the viewer page loads are summed
(raw and gzip).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from playwright.sync_api import Browser, sync_playwright  # noqa: E402

from pacs.accounts.shares import create_share  # noqa: E402
from pacs.accounts.users import create_user  # noqa: E402
from pacs.archive import Archive  # noqa: E402
from pacs.settings import Settings  # noqa: E402
from tests.factories import PATIENTS, make_ct_study, to_bytes  # noqa: E402
from tests.net import app_in_thread  # noqa: E402
from viewer_api.app import create_app  # noqa: E402

CHROMIUM = "/usr/bin/chromium"
PHONE = {"viewport": {"width": 375, "height": 667}, "has_touch": True, "is_mobile": True, "device_scale_factor": 2}
STATIC = Path(__file__).resolve().parents[1] / "viewer_api" / "static"
BUNDLE = ["common.js", "gestures.js", "panels.js", "tools.js", "viewer.js", "pixels.js", "decode-worker.js",
          "measure.js", "overlays.js", "segs.js", "corners.js", "layouts.js", "report.js", "app.css", "layers.css"]

# Recorded in the page from its first script on: when the rendered JPEG and the first decoded frame arrived.
PROBE = """
window.__bench = { jpeg: 0, decoded: 0 };
document.addEventListener('load', function (e) {
  if (e.target && e.target.id === 'frame' && !window.__bench.jpeg) {
    requestAnimationFrame(function () { window.__bench.jpeg = performance.now(); });
  }
}, true);
document.addEventListener('cloudfilm:painted', function () {
  if (!window.__bench.decoded) requestAnimationFrame(function () { window.__bench.decoded = performance.now(); });
}, true);
"""

SLICES = """async (steps) => {
  const v = window.cloudfilmViewer, vp = document.getElementById('viewport'), out = [];
  for (let k = 0; k < steps; k++) {
    const painted = new Promise(r => vp.addEventListener('cloudfilm:painted', r, { once: true }));
    const t0 = performance.now();
    v.go(v.state.i + (k % 2 ? -1 : 1) * (1 + (k % 5)));
    await painted;
    await new Promise(r => requestAnimationFrame(r));
    out.push(performance.now() - t0);
  }
  return out;
}"""

DRAG_PROBE = """() => {
  const vp = document.getElementById('viewport');
  window.__drag = { frame: [], paint: [] };
  let t0 = 0;
  vp.addEventListener('pointermove', () => { t0 = performance.now(); }, true);
  vp.addEventListener('cloudfilm:painted', (e) => {
    if (!t0) return;
    const start = t0; t0 = 0;
    window.__drag.paint.push(e.detail.ms);
    requestAnimationFrame(() => window.__drag.frame.push(performance.now() - start));
  });
}"""


@contextmanager
def serve(slices: int, size: int) -> Iterator[str]:
    """A fresh archive holding one CT; the URL of its share link."""
    with tempfile.TemporaryDirectory(prefix="viewer-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", http_port=0, dicom_port=0,
                            secret_key="bench-secret-key-0123456789")  # fmt: skip
        with Archive.open(settings) as archive:
            datasets = make_ct_study(PATIENTS[0], n_slices=slices, rows=size, cols=size, seed=14)
            for ds in datasets:
                assert archive.ingest.store_bytes(to_bytes(ds)).ok
            admin = create_user(archive.engine, "admin", "bench password 123", "admin")
            app = create_app(archive)
            share = create_share(archive.engine, app.state.authenticator.key, str(datasets[0].StudyInstanceUID),
                                 created_by=admin.id, expires_in_days=1, max_days=365)  # fmt: skip
            with app_in_thread(app) as port:
                yield f"http://127.0.0.1:{port}/s/{share.token}"


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


def one_run(browser: Browser, url: str) -> dict[str, float]:
    context = browser.new_context(**PHONE)  # type: ignore[arg-type]
    page = context.new_page()
    page.add_init_script(PROBE)
    page.goto(url)
    page.wait_for_function("() => window.__bench.jpeg && window.__bench.decoded", timeout=30_000)
    first = page.evaluate("() => window.__bench")
    page.wait_for_load_state("networkidle")
    slices = page.evaluate(SLICES, 40)
    if page.locator("main.viewer.tools-simple").count():  # a share link starts with the patient's tools
        page.click("#tools-toggle")
    page.click(".modes .mode[data-mode=window]")
    page.evaluate(DRAG_PROBE)
    box = page.locator("#viewport").bounding_box()
    assert box
    x, y = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(x, y)
    page.mouse.down()
    for k in range(1, 61):
        page.mouse.move(x + 2 * k, y + (k % 7))
    page.mouse.up()
    page.wait_for_timeout(100)
    drag = page.evaluate("() => window.__drag")
    context.close()
    return {
        "first paint, rendered JPEG (ms)": first["jpeg"],
        "first frame decoded in the browser (ms)": first["decoded"],
        "slice change p50 (ms)": percentile(slices, 0.5),
        "slice change p95 (ms)": percentile(slices, 0.95),
        "window drag frame p50 (ms)": percentile(drag["frame"], 0.5),
        "window drag frame p95 (ms)": percentile(drag["frame"], 0.95),
        "window drag repaint (LUT + putImageData) p50 (ms)": percentile(drag["paint"], 0.5),
        "window drag repaints / moves": len(drag["frame"]) / 60,
    }


def bundle() -> tuple[int, int]:
    raw = b"".join((STATIC / name).read_bytes() for name in BUNDLE)
    return len(raw), len(gzip.compress(raw, 9))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=200)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs: list[dict[str, float]] = []
    with serve(args.slices, args.size) as url, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            for k in range(args.runs):
                runs.append(one_run(browser, url))
                print(f"run {k + 1}: " + ", ".join(f"{v:.1f}" for v in runs[-1].values()), file=sys.stderr)
        finally:
            browser.close()
    print(f"\nbuilt-in viewer, {args.slices}-slice {args.size}x{args.size} CT, 375x667 phone, loopback, "
          f"median of {args.runs} runs\n")
    print(f"| {'metric':<52} | {'median':>8} | runs |")
    print(f"|{'-' * 54}|{'-' * 10}|------|")
    for name in runs[0]:
        values: list[Any] = [r[name] for r in runs]
        print(f"| {name:<52} | {statistics.median(values):>8.1f} | {' / '.join(f'{v:.1f}' for v in values)} |")
    raw, packed = bundle()
    print(f"\nviewer JS + CSS ({', '.join(BUNDLE)}): {raw / 1024:.1f} KiB, {packed / 1024:.1f} KiB gzip")


if __name__ == "__main__":
    main()
