"""The viewer decodes compressed frames in the browser (decode-worker.js, issue 14 item 2).

One study per stored transfer syntax (JPEG baseline, JPEG lossless P14 and SV1, JPEG-LS lossless and
near-lossless, JPEG 2000 lossless and lossy, HTJ2K lossless and lossy, RLE), opened in headless
Debian Chromium: the frame comes over WADO-RS in its stored syntax (no transcoding), is decoded in a
Web Worker with the WebAssembly decoders the archive serves at /codecs/ (scripts/fetch_codecs.sh),
and its modality values, read back from the page, equal pydicom's (exactly for lossless syntaxes,
within a small tolerance for lossy ones); a window drag repaints without an image request; nothing is
fetched from outside the archive. Without the decoders the viewer shows the server's rendered JPEG.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from playwright.sync_api import Browser, BrowserContext, Page, Request, sync_playwright
from pydicom.dataset import Dataset
from pydicom.pixels import apply_modality_lut
from pydicom.uid import (
    JPEG2000,
    UID,
    HTJ2KLossless,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
)

from tests.factories import JPEG_LOSSLESS_P14, PATIENTS, encode, make_ct_study, make_gray8, make_rgb
from tests.viewer_api.portal.conftest import PASSWORD, Server, build_site, serve_site, store

ROOT = Path(__file__).resolve().parents[3]
ARTIFACTS = ROOT / "test-artifacts"
CHROMIUM = "/usr/bin/chromium"
DESKTOP = {"viewport": {"width": 1366, "height": 800}}
HTJ2K_LOSSY = UID("1.2.840.10008.1.2.4.203")


@dataclass(frozen=True)
class Case:
    """A study stored in one transfer syntax; the decoder file the browser must load for it."""

    name: str
    transfer_syntax: str
    codec: str | None  # the /codecs/ file the worker loads (None: decoded by the worker itself)
    lossless: bool
    tolerance: float = 0.0  # modality units, for lossy syntaxes


CASES = [
    Case("jpeg-baseline", JPEGBaseline8Bit, "libjpegturbowasm_decode.wasm", False, 3),
    Case("jpeg-lossless-p14", JPEG_LOSSLESS_P14, "lossless.js", True),
    Case("jpeg-lossless-sv1", JPEGLosslessSV1, "lossless.js", True),
    Case("jpeg-ls", JPEGLSLossless, "charlswasm_decode.wasm", True),
    Case("jpeg-ls-near", JPEGLSNearLossless, "charlswasm_decode.wasm", False, 0),
    Case("j2k", JPEG2000Lossless, "openjpegwasm_decode.wasm", True),
    Case("j2k-lossy", JPEG2000, "openjpegwasm_decode.wasm", False, 2),
    Case("htj2k", HTJ2KLossless, "openjphjs.wasm", True),
    Case("htj2k-lossy", HTJ2K_LOSSY, "openjphjs.wasm", False, 2),
    Case("rle", RLELossless, None, True),
]


def codecs_dir() -> Path:
    """The decoders: ``CLOUDFILM_CODECS_DIR`` when set, else fetched (cached) by the project's script."""
    given = os.environ.get("CLOUDFILM_CODECS_DIR")
    if given and (Path(given) / "VERSIONS").is_file():
        return Path(given)
    done = subprocess.run(["sh", str(ROOT / "scripts" / "fetch_codecs.sh")], capture_output=True, text=True,
                          timeout=300, check=False)  # fmt: skip
    if done.returncode != 0:
        pytest.fail(f"scripts/fetch_codecs.sh failed (npm and the npm registry are needed):\n{done.stderr}")
    return Path(done.stdout.strip().splitlines()[-1])


def _htj2k_lossy(ds: Dataset) -> Dataset:
    """``ds`` as irreversible HTJ2K (OpenJPH through imagecodecs; pydicom has no HTJ2K encoder)."""
    import imagecodecs

    native = encode(ds, "1.2.840.10008.1.2.1")
    out = encode(ds, HTJ2KLossless)
    frame = imagecodecs.htj2k_encode(np.ascontiguousarray(native.pixel_array), reversible=False)
    from pydicom.encaps import encapsulate

    out.PixelData = encapsulate([frame], has_bot=True)
    out.file_meta.TransferSyntaxUID = HTJ2K_LOSSY
    out.LossyImageCompression = "01"
    return out


def make_case(case: Case, seed: int, *, n_slices: int = 2, rows: int = 96, cols: int = 128) -> list[Dataset]:
    """Slices of a signed CT (one 8-bit greyscale image for JPEG baseline) in ``case``'s syntax."""
    patient = PATIENTS[seed % len(PATIENTS)]
    if case.transfer_syntax == JPEGBaseline8Bit:
        ds = make_gray8(rows, cols, seed=seed, patient=patient, transfer_syntax=JPEGBaseline8Bit)
        ds.WindowCenter, ds.WindowWidth = "128", "256"  # the viewer's window drag starts from the series' window
        return [ds]
    native = make_ct_study(patient, n_slices=n_slices, rows=rows, cols=cols, seed=seed, signed=True)
    out = []
    for ds in native:
        if case.transfer_syntax == JPEGLSNearLossless:
            enc = encode(ds, "1.2.840.10008.1.2.1")
            enc.compress(JPEGLSNearLossless, jls_error=2, generate_instance_uid=False)
        elif case.transfer_syntax == JPEG2000:
            enc = encode(ds, "1.2.840.10008.1.2.1")
            enc.compress(JPEG2000, j2k_psnr=[80], generate_instance_uid=False)
        elif case.transfer_syntax == HTJ2K_LOSSY:
            enc = _htj2k_lossy(ds)
        else:
            enc = encode(ds, case.transfer_syntax)
        assert enc.file_meta.TransferSyntaxUID == case.transfer_syntax
        out.append(enc)
    return out


@dataclass
class Stored:
    case: Case
    study_uid: str
    datasets: list[Dataset]
    original: dict[str, np.ndarray]  # SOP instance UID -> modality values before compression


def modality(ds: Dataset) -> np.ndarray:
    return np.asarray(apply_modality_lut(ds.pixel_array, ds), dtype=np.float64)


@pytest.fixture(scope="module")
def studies() -> dict[str, Stored]:
    out = {}
    for seed, case in enumerate(CASES, start=700):
        datasets = make_case(case, seed)
        assert len({ds.StudyInstanceUID for ds in datasets}) == 1
        original = {ds.SOPInstanceUID: modality(encode(ds, "1.2.840.10008.1.2.1")) for ds in datasets}
        out[case.name] = Stored(case, datasets[0].StudyInstanceUID, datasets, original)
    return out


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, studies: dict[str, Stored]) -> Iterator[Server]:
    for built in build_site(Path(tmp_path_factory.mktemp("codecs")), codecs_dir=codecs_dir()):
        for s in studies.values():
            store(built.archive, s.datasets)
        yield from serve_site(built)


@pytest.fixture(scope="module")
def bare_server(tmp_path_factory: pytest.TempPathFactory, studies: dict[str, Stored]) -> Iterator[Server]:
    """The same studies on an archive without the decoders (no CLOUDFILM_CODECS_DIR)."""
    for built in build_site(Path(tmp_path_factory.mktemp("nocodecs"))):
        for s in studies.values():
            store(built.archive, s.datasets)
        yield from serve_site(built)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM,
                               args=["--no-sandbox", "--disable-gpu", "--disable-background-networking"])
        yield b
        b.close()


def signed_in(browser: Browser, server: Server) -> BrowserContext:
    context = browser.new_context(**DESKTOP)  # type: ignore[arg-type]
    page = context.new_page()
    page.goto(f"{server.url}/login?next=/viewer/")
    page.fill("input[name=username]", "doc")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/viewer/**")
    page.close()
    return context


@pytest.fixture(scope="module")
def context(browser: Browser, server: Server) -> Iterator[BrowserContext]:
    ctx = signed_in(browser, server)
    yield ctx
    ctx.close()


READ_BACK = """() => {
  const P = window.cloudfilmPixels, e = P && P.shown();
  if (!e) return null;
  const n = e.header.rows * e.header.cols, values = new Array(n);
  for (let i = 0; i < n; i++) values[i] = P.modalityAt(e, i);
  return { sop: e.header.sop, ts: e.header.ts || null, rows: e.header.rows, cols: e.header.cols, values: values };
}"""


def _decoded(page: Page) -> None:
    page.wait_for_function("() => document.getElementById('viewport').dataset.pixels === 'decoded'"
                           " && !document.getElementById('pixels').hidden", timeout=20_000)


@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_stored_syntax_is_decoded_in_the_browser(context: BrowserContext, server: Server,
                                                 studies: dict[str, Stored], case: Case) -> None:
    stored = studies[case.name]
    page = context.new_page()
    errors: list[str] = []
    requests: list[Request] = []
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
    page.on("request", lambda r: requests.append(r))
    page.goto(f"{server.url}/viewer/studies/{stored.study_uid}")
    _decoded(page)
    got: dict[str, Any] = page.evaluate(READ_BACK)
    assert got is not None
    assert got["ts"] == case.transfer_syntax, "the frame was not decoded from its stored syntax"
    ds = next(d for d in stored.datasets if d.SOPInstanceUID == got["sop"])
    assert (got["rows"], got["cols"]) == (ds.Rows, ds.Columns)
    values = np.asarray(got["values"], dtype=np.float64).reshape(ds.Rows, ds.Columns)
    expected = modality(ds)  # pydicom's decoding of the same stored codestream
    if case.lossless:
        assert np.array_equal(values, expected)
        assert np.array_equal(values, stored.original[ds.SOPInstanceUID])
    else:
        assert np.abs(values - expected).max() <= case.tolerance, np.abs(values - expected).max()
        assert not np.array_equal(values, np.zeros_like(values))

    # The frame came in its stored syntax; the decoder came from this archive; nothing from elsewhere.
    frames = [r for r in requests if "/frames/" in r.url and not r.url.endswith("/rendered")]
    assert frames and all("transfer-syntax=*" in (r.headers.get("accept") or "") for r in frames)
    outside = [r.url for r in requests if not r.url.startswith(server.url) and not r.url.startswith(("data:", "blob:"))]
    assert outside == [], outside
    codec_urls = [r.url for r in requests if "/codecs/" in r.url]
    if case.codec is None:
        assert codec_urls == []
    else:
        assert any(u.endswith("/codecs/" + case.codec) for u in codec_urls), codec_urls
        loaded = [r for r in requests if r.url.endswith("/codecs/" + case.codec)]
        response = loaded[0].response()
        assert response is not None and response.status == 200

    # A window drag repaints from the decoded pixels: no image is asked for.
    page.wait_for_timeout(300)  # the other slice's prefetch is done
    painted = page.locator("#viewport").get_attribute("data-painted")
    images: list[str] = []
    page.on("request", lambda r: images.append(r.url) if "/rendered" in r.url or "/frames/" in r.url
            or r.resource_type == "image" else None)
    page.click(".modes .mode[data-mode=window]")
    box = page.locator("#viewport").bounding_box()
    assert box
    cx, cy = box["x"] + box["width"] / 2, box["y"] + box["height"] / 2
    page.mouse.move(cx, cy)
    page.mouse.down()
    page.mouse.move(cx + 80, cy + 40, steps=8)
    page.mouse.up()
    page.wait_for_function(f"() => document.getElementById('viewport').dataset.painted !== {json.dumps(painted)}")
    page.wait_for_timeout(200)
    assert images == [], images
    page.screenshot(path=str(ARTIFACTS / f"viewer-codecs-{case.name}.png"))
    assert not [e for e in errors if "favicon" not in e], errors
    page.close()


def test_without_the_decoders_the_rendered_jpeg_shows(browser: Browser, bare_server: Server,
                                                      studies: dict[str, Stored]) -> None:
    ctx = signed_in(browser, bare_server)
    page = ctx.new_page()
    codec_requests: list[str] = []
    page.on("request", lambda r: codec_requests.append(r.url) if "/codecs/" in r.url else None)
    for name in ("j2k", "jpeg-ls", "htj2k"):
        page.goto(f"{bare_server.url}/viewer/studies/{studies[name].study_uid}")
        page.wait_for_function("() => document.getElementById('viewport').dataset.pixelsError", timeout=20_000)
        assert page.locator("#viewport").get_attribute("data-pixels") == "rendered"
        assert page.evaluate("() => document.getElementById('pixels').hidden")
        page.wait_for_function("() => { const i = document.getElementById('frame');"
                               " return i.complete && i.naturalWidth > 0; }")
        assert "/rendered" in (page.locator("#frame").get_attribute("src") or "")
        assert "not installed" in (page.locator("#viewport").get_attribute("data-pixels-error") or "")
    # RLE needs no decoder file: it is still decoded in the browser.
    page.goto(f"{bare_server.url}/viewer/studies/{studies['rle'].study_uid}")
    _decoded(page)
    page.screenshot(path=str(ARTIFACTS / "viewer-codecs-fallback.png"))
    assert codec_requests == []
    ctx.close()


def test_codec_files_are_served_with_their_types(server: Server) -> None:
    import httpx

    with httpx.Client(base_url=server.url) as client:
        wasm = client.get("/codecs/openjpegwasm_decode.wasm")
        assert wasm.status_code == 200 and wasm.headers["content-type"] == "application/wasm"
        assert wasm.content[:4] == b"\0asm"
        assert client.get("/codecs/charlswasm_decode.js").headers["content-type"].startswith("text/javascript")
        assert client.get("/codecs/nothing.wasm").status_code == 404
        assert client.get("/codecs/licenses").status_code == 404
        assert client.get("/codecs/VERSIONS").status_code == 404  # only decoder and licence files
        worker = client.get("/static/decode-worker.js")
        assert "'wasm-unsafe-eval'" in worker.headers["content-security-policy"]
        page_csp = client.get("/login").headers["content-security-policy"]
        assert "wasm-unsafe-eval" not in page_csp



COLOUR = [("jpeg-baseline-ybr422", JPEGBaseline8Bit, "libjpegturbowasm_decode.wasm"),
          ("jpeg-ls-rgb", JPEGLSLossless, "charlswasm_decode.wasm"),
          ("j2k-rgb", JPEG2000Lossless, "openjpegwasm_decode.wasm"), ("rle-rgb", RLELossless, None)]

READ_RGB = """() => {
  const e = window.cloudfilmPixels.shown();
  return e ? { photometric: e.header.photometric, planar: e.header.planar, ts: e.header.ts || null,
               pixels: Array.from(e.pixels) } : null;
}"""


@pytest.mark.parametrize(("name", "syntax", "codec"), COLOUR, ids=[c[0] for c in COLOUR])
def test_colour_frames_are_decoded_to_rgb(context: BrowserContext, server: Server, name: str, syntax: str,
                                          codec: str | None) -> None:
    """RGB Secondary Captures: JPEG baseline stored as YBR_FULL_422 comes out RGB (near pydicom's, lossy),
    JPEG-LS, JPEG 2000 and RLE (planar segments) exactly."""
    ds = make_rgb(64, 80, seed=800 + [c[0] for c in COLOUR].index(name), patient=PATIENTS[0], transfer_syntax=syntax)
    assert ds.file_meta.TransferSyntaxUID == syntax
    store(server.site.archive, [ds])
    page = context.new_page()
    loaded: list[str] = []
    page.on("request", lambda r: loaded.append(r.url) if "/codecs/" in r.url else None)
    page.goto(f"{server.url}/viewer/studies/{ds.StudyInstanceUID}")
    _decoded(page)
    got = page.evaluate(READ_RGB)
    assert got is not None and got["ts"] == syntax and got["photometric"] == "RGB"
    pixels = np.asarray(got["pixels"], dtype=np.int64)
    rgb = pixels.reshape(3, ds.Rows, ds.Columns).transpose(1, 2, 0) if got["planar"] else \
        pixels.reshape(ds.Rows, ds.Columns, 3)
    expected = ds.pixel_array.astype(np.int64)  # pydicom: RGB (YBR_FULL_422 converted)
    if syntax == JPEGBaseline8Bit:
        diff = np.abs(rgb - expected)
        assert diff.mean() < 2 and diff.max() <= 16, (diff.mean(), diff.max())
    else:
        assert np.array_equal(rgb, expected)
    assert (codec is None and loaded == []) or any(u.endswith("/codecs/" + str(codec)) for u in loaded)
    page.screenshot(path=str(ARTIFACTS / f"viewer-codecs-{name}.png"))
    page.close()


def test_twelve_bit_jpeg_keeps_the_rendered_jpeg(context: BrowserContext, server: Server) -> None:
    """12-bit JPEG (extended, .4.51) has no decoder here: the viewer says so and shows the server's rendering."""
    import imagecodecs
    from pydicom.encaps import encapsulate

    ds = encode(make_ct_study(PATIENTS[3], n_slices=1, rows=64, cols=64, seed=950)[0], "1.2.840.10008.1.2.1")
    twelve = np.clip(ds.pixel_array.astype(np.int64), 0, 4095).astype(np.uint16)
    ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 12, 11, 0
    ds.PixelData = encapsulate([imagecodecs.jpeg8_encode(twelve, level=90, bitspersample=12)], has_bot=True)
    ds["PixelData"].VR, ds["PixelData"].is_undefined_length = "OB", True
    ds.file_meta.TransferSyntaxUID = UID("1.2.840.10008.1.2.4.51")
    assert ds.pixel_array.max() > 0  # pydicom (so the archive's renderer) decodes it
    store(server.site.archive, [ds])
    page = context.new_page()
    page.goto(f"{server.url}/viewer/studies/{ds.StudyInstanceUID}")
    page.wait_for_function("() => document.getElementById('viewport').dataset.pixelsError", timeout=20_000)
    assert "1.2.840.10008.1.2.4.51" in (page.locator("#viewport").get_attribute("data-pixels-error") or "")
    assert page.locator("#viewport").get_attribute("data-pixels") == "rendered"
    page.wait_for_function("() => { const i = document.getElementById('frame');"
                           " return i.complete && i.naturalWidth > 0; }")
    page.screenshot(path=str(ARTIFACTS / "viewer-codecs-jpeg12-rendered.png"))
    page.close()
