"""The built-in viewer's in-browser decoders: first decoded frame per stored transfer syntax, bundle sizes.

    .venv/bin/python benchmarks/viewer_codecs_bench.py [--slices 20] [--size 512] [--runs 5]

One CT study per transfer syntax (native Explicit VR Little Endian and the compressed syntaxes of
tests/viewer_api/portal/test_viewer_codecs.py; JPEG baseline: one 8-bit image) is ingested into a
fresh archive (SQLite + filesystem) with the decoders of scripts/fetch_codecs.sh, served by uvicorn
on loopback. Debian Chromium (Playwright, 375x667, touch, device scale 2) opens each study's share
link in a fresh browser context (cold HTTP cache: the decoder's download and WebAssembly compile are
in the figure) per run. Timed in the page from navigation start: the rendered JPEG on screen and the
first frame decoded in the browser and drawn on the canvas; also the worker's time for that frame
(loading the decoder, first time in that context, and decoding).
Medians over the runs. The decoder files are listed with their sizes (raw and gzip).
"""

from __future__ import annotations

import argparse
import gzip
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from playwright.sync_api import Browser, sync_playwright  # noqa: E402

from benchmarks.viewer_bench import CHROMIUM, PHONE, PROBE  # noqa: E402
from pacs.accounts.shares import create_share  # noqa: E402
from pacs.accounts.users import create_user  # noqa: E402
from pacs.archive import Archive  # noqa: E402
from pacs.settings import Settings  # noqa: E402
from tests.factories import to_bytes  # noqa: E402
from tests.net import app_in_thread  # noqa: E402
from tests.viewer_api.portal.test_viewer_codecs import CASES, Case, make_case  # noqa: E402
from viewer_api.app import create_app  # noqa: E402

NATIVE = Case("native (explicit VR LE)", "1.2.840.10008.1.2.1", None, True)
WORKER = ROOT / "viewer_api" / "static" / "decode-worker.js"


def codecs_dir() -> Path:
    out = subprocess.run(["sh", str(ROOT / "scripts" / "fetch_codecs.sh")], capture_output=True, text=True,
                         check=True, timeout=300)  # fmt: skip
    return Path(out.stdout.strip().splitlines()[-1])


@contextmanager
def serve(slices: int, size: int, codecs: Path) -> Iterator[dict[str, str]]:
    """A fresh archive holding one study per syntax; each case's share link URL."""
    with tempfile.TemporaryDirectory(prefix="viewer-codecs-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp) / "data", http_port=0, dicom_port=0, codecs_dir=codecs,
                            secret_key="bench-secret-key-0123456789")  # fmt: skip
        with Archive.open(settings) as archive:
            admin = create_user(archive.engine, "admin", "bench password 123", "admin")
            app = create_app(archive)
            links = {}
            for seed, case in enumerate([NATIVE, *CASES], start=900):
                datasets = make_case(case, seed, n_slices=slices, rows=size, cols=size)
                for ds in datasets:
                    assert archive.ingest.store_bytes(to_bytes(ds)).ok
                share = create_share(archive.engine, app.state.authenticator.key, str(datasets[0].StudyInstanceUID),
                                     created_by=admin.id, expires_in_days=1, max_days=365)  # fmt: skip
                links[case.name] = share.token
            with app_in_thread(app) as port:
                yield {name: f"http://127.0.0.1:{port}/s/{token}" for name, token in links.items()}


def one_run(browser: Browser, url: str) -> dict[str, float]:
    context = browser.new_context(**PHONE)  # type: ignore[arg-type]
    page = context.new_page()
    page.add_init_script(PROBE)
    page.goto(url)
    page.wait_for_function("() => window.__bench.jpeg && window.__bench.decoded", timeout=60_000)
    first = page.evaluate("() => window.__bench")
    shown = page.evaluate("() => { const e = window.cloudfilmPixels.shown();"
                          " return e ? { ts: e.header.ts || null, ms: e.header.decodeMs || 0 } : null; }")
    context.close()
    return {"jpeg": first["jpeg"], "decoded": first["decoded"], "worker": shown["ms"] if shown else 0.0}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slices", type=int, default=20)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--runs", type=int, default=5)
    args = parser.parse_args()
    codecs = codecs_dir()
    results: dict[str, list[dict[str, float]]] = {}
    with serve(args.slices, args.size, codecs) as links, sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM,
                                     args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        try:
            for name, url in links.items():
                results[name] = [one_run(browser, url) for _ in range(args.runs)]
                print(f"{name}: " + ", ".join(f"{r['decoded']:.0f}" for r in results[name]), file=sys.stderr)
        finally:
            browser.close()
    print(f"\nbuilt-in viewer, {args.slices}-slice {args.size}x{args.size} CT per syntax (JPEG baseline: one "
          f"8-bit image), 375x667 phone, loopback, fresh context each run, median of {args.runs}\n")
    print("| stored syntax | first rendered JPEG (ms) | first decoded frame drawn (ms) "
          "| in the worker: decoder load + decode (ms) |")
    print("|---|---:|---:|---:|")
    for name, runs in results.items():
        ts = next(c.transfer_syntax for c in [NATIVE, *CASES] if c.name == name)
        med = {k: statistics.median(r[k] for r in runs) for k in ("jpeg", "decoded", "worker")}
        print(f"| {name} ({ts}) | {med['jpeg']:.0f} | {med['decoded']:.0f} | {med['worker']:.1f} |")
    print(f"\ndecoders ({codecs}):\n")
    print("| file | KiB | KiB gzip |")
    print("|---|---:|---:|")
    files = [WORKER, *sorted(p for p in codecs.iterdir() if p.suffix in (".js", ".wasm"))]
    total = total_gz = 0
    for path in files:
        raw = path.read_bytes()
        packed = len(gzip.compress(raw, 9))
        total, total_gz = total + len(raw), total_gz + packed
        print(f"| {path.name} | {len(raw) / 1024:.1f} | {packed / 1024:.1f} |")
    print(f"| all | {total / 1024:.1f} | {total_gz / 1024:.1f} |")


if __name__ == "__main__":
    main()
