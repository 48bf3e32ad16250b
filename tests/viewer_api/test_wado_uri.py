"""WADO-URI (PS3.18 9): DICOM as stored or transcoded, and rendered images."""

from __future__ import annotations

import io

import numpy as np
import pydicom
from PIL import Image

from tests.factories import to_bytes
from tests.viewer_api.conftest import Gallery


def wado(gallery: Gallery, name: str, **params: str) -> tuple[int, str, bytes]:
    ds = gallery.items[name]
    query = {"requestType": "WADO", "studyUID": ds.StudyInstanceUID, "seriesUID": ds.SeriesInstanceUID,
             "objectUID": ds.SOPInstanceUID, **params}  # fmt: skip
    resp = gallery.client.get("/wado", params=query)
    return resp.status_code, resp.headers.get("content-type", ""), resp.content


def test_dicom_as_stored_and_transcoded(gallery: Gallery) -> None:
    status, ctype, body = wado(gallery, "jls", contentType="application/dicom")
    assert status == 200 and ctype.startswith("application/dicom") and body == to_bytes(gallery.items["jls"])
    status, _ctype, body = wado(gallery, "jls", contentType="application/dicom",
                                transferSyntax="1.2.840.10008.1.2.1")  # fmt: skip
    ds = pydicom.dcmread(io.BytesIO(body))
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    assert np.array_equal(ds.pixel_array, gallery.items["jls"].pixel_array)
    assert wado(gallery, "ct", contentType="application/dicom", transferSyntax="1.2.840.10008.1.2.4.50")[0] == 406


def test_images_with_window_size_region_and_frame(gallery: Gallery) -> None:
    status, ctype, body = wado(gallery, "ct")
    assert status == 200 and ctype == "image/jpeg" and body[:2] == b"\xff\xd8"
    _s, _c, png = wado(gallery, "ct", contentType="image/png", windowCenter="40", windowWidth="400")
    via_rs = gallery.client.get(gallery.url("ct", "/rendered"), params={"window": "40,400"},
                                headers={"Accept": "image/png"}).content  # fmt: skip
    assert np.array_equal(np.asarray(Image.open(io.BytesIO(png))), np.asarray(Image.open(io.BytesIO(via_rs))))
    _s, _c, small = wado(gallery, "rgb", contentType="image/png", rows="16", columns="16")
    assert Image.open(io.BytesIO(small)).size == (16, 16)
    _s, _c, part = wado(gallery, "rgb", contentType="image/png", region="0,0,0.5,0.5")
    assert Image.open(io.BytesIO(part)).size == (16, 16)
    _s, _c, frame = wado(gallery, "multi", contentType="image/gif", frameNumber="2")
    assert frame[:3] == b"GIF"


def test_bad_requests(gallery: Gallery) -> None:
    assert wado(gallery, "ct", requestType="WADOX")[0] == 400
    assert wado(gallery, "ct", objectUID="1.2.3/../4")[0] == 400
    assert wado(gallery, "ct", objectUID="1.2.3")[0] == 404
    assert wado(gallery, "ct", contentType="text/html")[0] == 406
    assert wado(gallery, "ct", windowCenter="40")[0] == 400
    assert wado(gallery, "ct", region="0,0,2,2")[0] == 400
    assert wado(gallery, "multi", frameNumber="9")[0] == 404
    assert gallery.client.get("/wado").status_code == 400
