"""WADO-RS frames and bulk data: every stored encoding, the Accept forms of real clients, errors."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from pydicom.encaps import encapsulate, generate_frames
from pydicom.pixels import get_decoder

from pacs.archive import Archive
from tests.factories import PATIENTS, make_ct_study, make_rgb, multiframe_pixels
from tests.viewer_api.conftest import Gallery, dicomweb_settings, make_app, parts_of, store_all
from viewer_api.dicomweb.params import MAX_FRAMES_PER_REQUEST

ELE = "1.2.840.10008.1.2.1"
OHIF = "multipart/related; type=application/octet-stream; transfer-syntax=*"
DICOMWEB_CLIENT = 'multipart/related; type="*/*"'
NATIVE_BYTES = 'multipart/related; type="application/octet-stream"'
COMPRESSED = {"j2k": "image/jp2", "jls": "image/jls", "rle": "image/dicom-rle", "jpeg_ll": "image/jpeg"}


def frames(gallery: Gallery, name: str, numbers: str, accept: str | None) -> list[tuple[dict[str, str], bytes]]:
    headers = {"Accept": accept} if accept else {}
    resp = gallery.client.get(gallery.url(name, f"/frames/{numbers}"), headers=headers)
    assert resp.status_code == 200, (name, accept, resp.text)
    return parts_of(resp.headers["content-type"], resp.content)


def pixels(gallery: Gallery, name: str, data: bytes) -> np.ndarray:
    ds = gallery.items[name]
    return np.frombuffer(data, "<u2" if ds.BitsAllocated == 16 else "u1").reshape(ds.Rows, ds.Columns)


@pytest.mark.parametrize("accept", [None, NATIVE_BYTES, OHIF, DICOMWEB_CLIENT, "*/*",
                                    f"multipart/related; type=application/octet-stream; transfer-syntax={ELE}"])
@pytest.mark.parametrize("name", ["ct", "big_endian", "implicit", "deflated"])
def test_native_frames_in_every_accept_form(gallery: Gallery, name: str, accept: str | None) -> None:
    [(headers, data)] = frames(gallery, name, "1", accept)
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
    assert np.array_equal(pixels(gallery, name, data), gallery.items[name].pixel_array)


@pytest.mark.parametrize("name", sorted(COMPRESSED))
def test_compressed_frames_as_stored_or_decoded(gallery: Gallery, name: str) -> None:
    ds = gallery.items[name]
    ts = str(ds.file_meta.TransferSyntaxUID)
    stored = next(generate_frames(ds.PixelData, number_of_frames=1))
    for accept in (DICOMWEB_CLIENT, f'multipart/related; type="{COMPRESSED[name]}"', None):
        [(headers, data)] = frames(gallery, name, "1", accept)
        assert headers["content-type"] == f"{COMPRESSED[name]}; transfer-syntax={ts}"
        assert data.rstrip(b"\x00") == stored.rstrip(b"\x00")
    [(headers, data)] = frames(gallery, name, "1", OHIF)
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={ts}"
    assert data.rstrip(b"\x00") == stored.rstrip(b"\x00")
    [(headers, data)] = frames(gallery, name, "1", NATIVE_BYTES)
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
    assert np.array_equal(pixels(gallery, name, data), ds.pixel_array)


def test_colour_frames(gallery: Gallery) -> None:
    [(headers, data)] = frames(gallery, "ybr", "1", DICOMWEB_CLIENT)
    assert headers["content-type"] == "image/jpeg; transfer-syntax=1.2.840.10008.1.2.4.50"
    assert data[:2] == b"\xff\xd8"
    [(headers, data)] = frames(gallery, "ybr", "1", NATIVE_BYTES)
    assert len(data) == 32 * 32 * 3  # decoded to RGB
    [(_headers, data)] = frames(gallery, "rgb", "1", None)
    assert data == gallery.items["rgb"].PixelData


def test_several_frames_in_the_order_asked(gallery: Gallery) -> None:
    expected = multiframe_pixels(6, 32, 32)
    got = frames(gallery, "multi", "6,1,3", None)
    assert [np.frombuffer(d, "<u2")[0] for _h, d in got] == [expected[5, 0, 0], expected[0, 0, 0], expected[2, 0, 0]]
    decoded = frames(gallery, "multi_jls", "2,5", NATIVE_BYTES)
    assert [np.array_equal(np.frombuffer(d, "<u2").reshape(32, 32), expected[i]) for (_h, d), i in
            zip(decoded, (1, 4), strict=True)] == [True, True]  # fmt: skip
    raw = frames(gallery, "multi_jls", "2,5", DICOMWEB_CLIENT)
    decoder = get_decoder("1.2.840.10008.1.2.4.80")
    for (_h, data), i in zip(raw, (1, 4), strict=True):
        arr, _meta = decoder.as_array(encapsulate([data]), rows=32, columns=32, samples_per_pixel=1, bits_allocated=16,
                                      bits_stored=12, pixel_representation=0, number_of_frames=1,
                                      photometric_interpretation="MONOCHROME2", pixel_keyword="PixelData")  # fmt: skip
        assert np.array_equal(arr, expected[i])


def test_single_part_when_asked_for_one_frame(gallery: Gallery) -> None:
    resp = gallery.client.get(gallery.url("ct", "/frames/1"), headers={"Accept": "application/octet-stream"})
    assert resp.headers["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
    assert resp.content == gallery.items["ct"].PixelData
    jpeg = gallery.client.get(gallery.url("ybr", "/frames/1"), headers={"Accept": "image/jpeg"})
    assert jpeg.headers["content-type"].startswith("image/jpeg") and jpeg.content[:2] == b"\xff\xd8"


def test_frame_errors(gallery: Gallery) -> None:
    client = gallery.client
    assert client.get(gallery.url("multi", "/frames/7")).status_code == 404
    assert client.get(gallery.url("ct", "/frames/2")).status_code == 404
    for bad in ("0", "a", "1,,2", "-1", "1;2"):
        assert client.get(gallery.url("multi", f"/frames/{bad}")).status_code == 400, bad
    assert client.get(gallery.url("ct", "/frames/1"), headers={"Accept": 'multipart/related; type="image/jpeg"'}) \
        .status_code == 406
    assert client.get(gallery.url("jls", "/frames/1"), headers={"Accept": 'multipart/related; type="image/jp2"'}) \
        .status_code == 406
    assert client.get(gallery.url("multi", "/frames/1,2"), headers={"Accept": "application/octet-stream"}) \
        .status_code == 406  # two frames cannot be one single part


def test_frame_lists_are_deduplicated_and_capped(gallery: Gallery) -> None:
    """A 20 KB URL repeating frame 1 used to stream the frame 10,000 times (329 MB for a CT frame)."""
    client = gallery.client
    repeated = client.get(gallery.url("multi", "/frames/" + ",".join(["1"] * 10_000)))
    assert repeated.status_code == 400 and "frame 1 is listed more than once" in repeated.text
    twice = client.get(gallery.url("multi", "/frames/2,5,2"))
    assert twice.status_code == 400 and "frame 2" in twice.text
    numbers = ",".join(str(n) for n in range(1, MAX_FRAMES_PER_REQUEST + 2))
    too_many = client.get(gallery.url("multi", f"/frames/{numbers}"))
    assert too_many.status_code == 400 and f"at most {MAX_FRAMES_PER_REQUEST} frames" in too_many.text
    assert len(frames(gallery, "multi", "1,2,3,4,5,6", None)) == 6  # every frame once is fine


def test_pixel_data_bulk(gallery: Gallery) -> None:
    native = gallery.client.get(gallery.url("multi", "/bulk/7FE00010"))
    [(headers, data)] = parts_of(native.headers["content-type"], native.content)
    assert headers["content-type"] == f"application/octet-stream; transfer-syntax={ELE}"
    assert data == gallery.items["multi"].PixelData
    compressed = gallery.client.get(gallery.url("multi_jls", "/bulk/7FE00010"))
    got = parts_of(compressed.headers["content-type"], compressed.content)
    assert len(got) == 6 and all(h["content-type"].startswith("image/jls") for h, _d in got)
    assert gallery.client.get(gallery.url("ct", "/bulk/7FE0001X")).status_code == 400
    assert gallery.client.get(gallery.url("ct", "/bulk/00282000")).status_code == 404


def test_other_bulk_data_from_the_metadata_uri(tmp_path: Path) -> None:
    ds = make_rgb(16, 16, seed=5)
    ds.ICCProfile = bytes(range(256)) * 16
    with Archive.open(dicomweb_settings(tmp_path)) as archive:
        store_all(archive, [ds])
        client = TestClient(make_app(archive))
        meta = client.get(f"/dicomweb/studies/{ds.StudyInstanceUID}/metadata").json()[0]
        uri = meta["00282000"]["BulkDataURI"]
        resp = client.get(uri)
        [(headers, data)] = parts_of(resp.headers["content-type"], resp.content)
        assert headers["content-type"] == "application/octet-stream" and data == ds.ICCProfile
        single = client.get(uri, headers={"Accept": "application/octet-stream"})
        assert single.content == ds.ICCProfile
        assert client.get(uri, headers={"Accept": "image/png"}).status_code == 406


def test_deflated_instance_advertises_and_serves_its_pixel_data(gallery: Gallery) -> None:
    # A deflate stream cannot be searched for the pixel data element: the header parse stops
    # before it, so the ingest path inflates once more to learn whether (and how) it is there.
    meta = gallery.client.get(gallery.url("deflated", "/metadata")).json()[0]
    assert meta["7FE00010"] == {"vr": "OW", "BulkDataURI": "http://testserver" + gallery.url("deflated",
                                                                                           "/bulk/7FE00010")}
    bulk = gallery.client.get(gallery.url("deflated", "/bulk/7FE00010"))
    [(_headers, data)] = parts_of(bulk.headers["content-type"], bulk.content)
    assert np.array_equal(pixels(gallery, "deflated", data), gallery.items["deflated"].pixel_array)


def test_bit_packed_seg_frames_come_from_one_read_of_the_object(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """A binary SEG of 30×30 frames (900 bits: frames do not start on byte boundaries) is read and
    unpacked once per request; each frame goes out packed on its own, least significant bit first."""
    import highdicom as hd
    from pydicom.sr.codedict import codes

    ct = make_ct_study(PATIENTS[0], n_slices=3, rows=30, cols=30, seed=22)
    mask = np.zeros((3, 30, 30), dtype=bool)
    mask[0, 3:9, 4:20] = mask[1, 10:25, 10:12] = mask[2, 0, :] = True
    seg = hd.seg.Segmentation(
        source_images=ct, pixel_array=mask, segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
        segment_descriptions=[hd.seg.SegmentDescription(1, "Mask", codes.SCT.Tissue, codes.SCT.Tissue,
                                                        hd.seg.SegmentAlgorithmTypeValues.MANUAL)],
        series_instance_uid=hd.UID(), series_number=90, sop_instance_uid=hd.UID(), instance_number=1,
        manufacturer="cloudfilm tests", manufacturer_model_name="t", software_versions="1", device_serial_number="1")
    with Archive.open(dicomweb_settings(tmp_path)) as archive:
        store_all(archive, [seg])
        opened: list[str] = []
        real_open = archive.store.open
        monkeypatch.setattr(archive.store, "open", lambda key: opened.append(key) or real_open(key))
        with TestClient(make_app(archive)) as client:
            base = (f"/dicomweb/studies/{seg.StudyInstanceUID}/series/{seg.SeriesInstanceUID}"
                    f"/instances/{seg.SOPInstanceUID}")
            resp = client.get(f"{base}/frames/1,2,3", headers={"Accept": NATIVE_BYTES})
            assert resp.status_code == 200, resp.text
            parts = parts_of(resp.headers["content-type"], resp.content)
            assert len(parts) == 3 and len(opened) == 1
            for (_headers, data), frame in zip(parts, mask, strict=True):
                assert len(data) == 113  # 900 bits
                bits = np.unpackbits(np.frombuffer(data, "u1"), bitorder="little")[: frame.size]
                assert np.array_equal(bits.reshape(frame.shape), frame)
            bulk = client.get(f"{base}/bulk/7FE00010", headers={"Accept": NATIVE_BYTES})
            assert bulk.status_code == 200 and len(opened) == 2
            [(_headers, data)] = parts_of(bulk.headers["content-type"], bulk.content)
            assert data == b"".join(d for _h, d in parts)
