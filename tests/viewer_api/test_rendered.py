"""Rendered images and thumbnails: VOI/Modality LUT, photometric interpretations, viewport, formats."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from PIL import Image
from pydicom.dataset import Dataset
from pydicom.pixels import apply_color_lut

from pacs.archive import Archive
from tests.factories import make_gray8, rgb_pixels
from tests.viewer_api.conftest import Gallery, dicomweb_settings, make_app, store_all
from viewer_api.dicomweb.rendered import MAX_GIF_FRAMES


def image(gallery: Gallery, path: str, accept: str = "image/png", **params: str) -> Image.Image:
    resp = gallery.client.get(path, params=params, headers={"Accept": accept})
    assert resp.status_code == 200, (path, params, resp.text)
    assert resp.headers["content-type"] == accept
    return Image.open(io.BytesIO(resp.content))


def linear_window(values: np.ndarray, center: float, width: float) -> np.ndarray:
    """PS3.3 C.11.2.1.2.1, written out independently of the server's code."""
    out = ((values - (center - 0.5)) / (width - 1) + 0.5)
    out = np.where(values <= center - 0.5 - (width - 1) / 2, 0.0, out)
    out = np.where(values > center - 0.5 + (width - 1) / 2, 1.0, out)
    return np.rint(np.clip(out, 0, 1) * 255).astype(np.uint8)


def test_requested_window_after_the_modality_lut(gallery: Gallery) -> None:
    ct = gallery.items["ct"]
    hu = ct.pixel_array.astype(np.float64) * float(ct.RescaleSlope) + float(ct.RescaleIntercept)
    got = np.asarray(image(gallery, gallery.url("ct", "/rendered"), window="-600,1500,linear"))
    assert np.abs(got.astype(int) - linear_window(hu, -600, 1500)).max() <= 1
    default = np.asarray(image(gallery, gallery.url("ct", "/rendered")))  # the header's first window: 40/400
    assert np.abs(default.astype(int) - linear_window(hu, 40, 400)).max() <= 1
    sigmoid = np.asarray(image(gallery, gallery.url("ct", "/rendered"), window="40,400,sigmoid"))
    assert sigmoid.shape == default.shape and not np.array_equal(sigmoid, default)


def test_percent_encoded_window_and_accept_query_parameter(gallery: Gallery) -> None:
    resp = gallery.client.get(gallery.url("ct", "/rendered?window=40%2C400%2Clinear&accept=image%2Fpng"))
    assert resp.status_code == 200 and resp.headers["content-type"] == "image/png"


def test_window_from_the_data_when_the_header_has_none(gallery: Gallery) -> None:
    got = np.asarray(image(gallery, gallery.url("gray8", "/rendered")))
    assert got.min() == 0 and got.max() == 255


def test_monochrome1_is_inverted(gallery: Gallery) -> None:
    mono2 = np.asarray(image(gallery, gallery.url("ct2", "/rendered"))).astype(int)
    mono1 = np.asarray(image(gallery, gallery.url("mono1", "/rendered"))).astype(int)
    assert np.array_equal(mono1, 255 - mono2)


def test_colour_images(gallery: Gallery) -> None:
    rgb = image(gallery, gallery.url("rgb", "/rendered"))
    assert rgb.mode == "RGB" and np.array_equal(np.asarray(rgb), rgb_pixels(32, 32))
    ybr = np.asarray(image(gallery, gallery.url("ybr", "/rendered"))).astype(int)
    assert np.abs(ybr - rgb_pixels(32, 32).astype(int)).mean() < 8  # lossy JPEG, shown as RGB
    palette = gallery.items["palette"]
    expected = (apply_color_lut(palette.pixel_array, palette) >> 8).astype(np.uint8)
    assert np.array_equal(np.asarray(image(gallery, gallery.url("palette", "/rendered"))), expected)


def test_multiframe_frames_and_animation(gallery: Gallery) -> None:
    gif = image(gallery, gallery.url("multi", "/rendered"), accept="image/gif")
    assert getattr(gif, "n_frames", 1) == 6
    one = np.asarray(image(gallery, gallery.url("multi", "/frames/3/rendered")))
    other = np.asarray(image(gallery, gallery.url("multi", "/frames/4/rendered")))
    assert one.shape == (32, 32) and not np.array_equal(one, other)
    compressed = np.asarray(image(gallery, gallery.url("multi_jls", "/frames/3/rendered")))
    assert np.array_equal(compressed, one)
    assert image(gallery, gallery.url("multi", "/frames/1,2/rendered"), accept="image/gif").n_frames == 2
    assert gallery.client.get(gallery.url("multi", "/frames/1,2/rendered"),
                              headers={"Accept": "image/png"}).status_code == 406


def test_rendered_frame_lists_are_deduplicated_and_capped(gallery: Gallery) -> None:
    """Each listed frame is decoded and drawn: repeats and long lists would cost CPU without bound."""
    client, gif = gallery.client, {"Accept": "image/gif"}
    repeated = client.get(gallery.url("multi", "/frames/" + ",".join(["1"] * 10_000) + "/rendered"), headers=gif)
    assert repeated.status_code == 400 and f"at most {MAX_GIF_FRAMES} frames" in repeated.text
    twice = client.get(gallery.url("multi", "/frames/3,3/rendered"), headers=gif)
    assert twice.status_code == 400 and "frame 3 is listed more than once" in twice.text
    thumb = client.get(gallery.url("multi", "/frames/1,1/thumbnail"))
    assert thumb.status_code == 400


def test_viewport_scales_crops_and_flips(gallery: Gallery) -> None:
    path = gallery.url("rgb", "/rendered")
    assert image(gallery, path, viewport="16,16").size == (16, 16)
    assert image(gallery, path, viewport="64,32").size == (32, 32)  # aspect ratio kept
    crop = np.asarray(image(gallery, path, viewport="8,8,0,0,8,8"))
    assert np.array_equal(crop, rgb_pixels(32, 32)[:8, :8])
    flipped = np.asarray(image(gallery, path, viewport="8,8,0,0,-8,8"))
    assert np.array_equal(flipped, rgb_pixels(32, 32)[:8, :8][:, ::-1])


def test_quality_and_formats(gallery: Gallery) -> None:
    path = gallery.url("ct", "/rendered")
    low = gallery.client.get(path, params={"quality": "5", "viewport": "256,256"}, headers={"Accept": "image/jpeg"})
    high = gallery.client.get(path, params={"quality": "95", "viewport": "256,256"}, headers={"Accept": "image/jpeg"})
    assert low.content[:2] == b"\xff\xd8" and len(low.content) < len(high.content)
    assert gallery.client.get(path).headers["content-type"] == "image/jpeg"  # no Accept: JPEG
    for accept in ("image/jp2", "application/dicom", 'multipart/related; type="image/jpeg"'):
        assert gallery.client.get(path, headers={"Accept": accept}).status_code == 406, accept


@pytest.mark.parametrize("params", [{"window": "40"}, {"window": "a,b"}, {"window": "40,0"},
                                   {"window": "40,400,cubic"}, {"viewport": "0,10"}, {"viewport": "10"},
                                   {"viewport": "10,10,0,0,0,5"}, {"quality": "0"}, {"quality": "x"}])
def test_bad_rendering_parameters_are_400(gallery: Gallery, params: dict[str, str]) -> None:
    assert gallery.client.get(gallery.url("ct", "/rendered"), params=params).status_code == 400


def test_thumbnails_and_rendered_at_every_level(gallery: Gallery) -> None:
    ct = gallery.items["ct"]
    study = f"/dicomweb/studies/{ct.StudyInstanceUID}"
    series = f"{study}/series/{ct.SeriesInstanceUID}"
    for path in (study, series, gallery.url("ct"), gallery.url("multi", "/frames/2")):
        thumb = image(gallery, path + "/thumbnail", accept="image/jpeg")
        assert max(thumb.size) <= 128
        assert image(gallery, path + "/rendered").size[0] > 0
    big = image(gallery, gallery.url("ct", "/thumbnail"), viewport="20,20")
    assert big.size == (20, 20)
    resp = gallery.client.get(gallery.url("ct", "/rendered"))
    again = gallery.client.get(gallery.url("ct", "/rendered"), headers={"If-None-Match": resp.headers["etag"]})
    assert again.status_code == 304
    assert gallery.client.get(f"/dicomweb/studies/{ct.StudyInstanceUID}/series/1.2.3/rendered").status_code == 404


def test_modality_and_voi_lut_sequences(tmp_path: Path) -> None:
    """LUT-based transformations (PS3.3 C.11.1, C.11.2) instead of rescale and window."""
    ds = make_gray8(16, 16, seed=3)
    modality = Dataset()
    modality.LUTDescriptor = [256, 0, 16]
    modality.ModalityLUTType = "US"
    modality.add_new(0x00283006, "US", [1000 + 4 * i for i in range(256)])  # LUTData
    ds.ModalityLUTSequence = [modality]
    voi = Dataset()
    voi.LUTDescriptor = [1024, 1000, 8]
    voi.add_new(0x00283006, "US", [255 - i // 4 for i in range(1024)])  # LUTData: an inverting VOI LUT
    ds.VOILUTSequence = [voi]
    with Archive.open(dicomweb_settings(tmp_path)) as archive:
        store_all(archive, [ds])
        client = TestClient(make_app(archive))
        url = (f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/"
               f"{ds.SOPInstanceUID}/rendered")
        got = np.asarray(Image.open(io.BytesIO(client.get(url, headers={"Accept": "image/png"}).content)))
    assert np.abs(got.astype(int) - (255 - ds.pixel_array.astype(int))).max() <= 1
