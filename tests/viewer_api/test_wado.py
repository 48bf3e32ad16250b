"""WADO-RS retrieve (study/series/instance) and metadata: negotiation, transcoding, ETag, gzip."""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

import numpy as np
import pydicom
import pytest
from fastapi.testclient import TestClient

from pacs.archive import Archive
from pacs.storage import readahead
from tests.factories import make_ct_study, to_bytes
from tests.viewer_api.conftest import Gallery, dicomweb_settings, make_app, parts_of, store_all

ELE = "1.2.840.10008.1.2.1"
LOSSLESS = ("ct", "j2k", "jls", "rle", "jpeg_ll", "big_endian", "implicit", "deflated", "rgb", "palette", "multi",
            "multi_jls")


def datasets(resp_type: str, body: bytes) -> list[tuple[dict[str, str], pydicom.Dataset, bytes]]:
    return [(h, pydicom.dcmread(io.BytesIO(c)), c) for h, c in parts_of(resp_type, body)]


def test_study_as_stored_byte_for_byte(gallery: Gallery) -> None:
    for accept in (None, 'multipart/related; type="application/dicom"',
                   "multipart/related; type=application/dicom; transfer-syntax=*", "*/*"):  # fmt: skip
        headers = {"Accept": accept} if accept else {}
        resp = gallery.client.get(f"/dicomweb/studies/{gallery.study}", headers=headers)
        assert resp.status_code == 200, accept
        got = datasets(resp.headers["content-type"], resp.content)
        sent = {ds.SOPInstanceUID: hashlib.sha256(to_bytes(ds)).hexdigest() for ds in gallery.items.values()}
        assert {ds.SOPInstanceUID: hashlib.sha256(raw).hexdigest() for _h, ds, raw in got} == sent
        for headers_, ds, _raw in got:
            assert headers_["content-type"] == f"application/dicom; transfer-syntax={ds.file_meta.TransferSyntaxUID}"


def test_explicit_vr_little_endian_on_request_decompresses(gallery: Gallery) -> None:
    resp = gallery.client.get(f"/dicomweb/studies/{gallery.study}",
                              headers={"Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ELE}'})
    assert resp.status_code == 200
    by_uid = {ds.SOPInstanceUID: ds for _h, ds, _raw in datasets(resp.headers["content-type"], resp.content)}
    assert {str(ds.file_meta.TransferSyntaxUID) for ds in by_uid.values()} == {ELE}
    for name in LOSSLESS:
        original = gallery.items[name]
        assert np.array_equal(by_uid[original.SOPInstanceUID].pixel_array, original.pixel_array), name


def test_series_and_single_instance(gallery: Gallery) -> None:
    ct = gallery.items["ct"]
    in_series = {d.SOPInstanceUID for d in gallery.items.values() if d.SeriesInstanceUID == ct.SeriesInstanceUID}
    resp = gallery.client.get(f"/dicomweb/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}")
    assert {ds.SOPInstanceUID for _h, ds, _r in datasets(resp.headers["content-type"], resp.content)} == in_series
    single = gallery.client.get(gallery.url("j2k"), headers={"Accept": "application/dicom"})
    assert single.headers["content-type"] == "application/dicom; transfer-syntax=1.2.840.10008.1.2.4.90"
    assert single.content == to_bytes(gallery.items["j2k"])


def test_unsatisfiable_or_malformed_accept(gallery: Gallery) -> None:
    study = f"/dicomweb/studies/{gallery.study}"
    j2k_only = 'multipart/related; type="application/dicom"; transfer-syntax=1.2.840.10008.1.2.4.90'
    for accept in (j2k_only, "image/jpeg", "application/dicom+json", 'multipart/related; type="image/png"'):
        resp = gallery.client.get(study, headers={"Accept": accept})
        assert resp.status_code == 406, accept
        assert resp.headers["content-type"].startswith("text/plain")
    assert gallery.client.get(gallery.url("j2k"), headers={"Accept": j2k_only}).status_code == 200
    both = f"{j2k_only}, multipart/related; type=application/dicom; q=0.5"
    assert gallery.client.get(study, headers={"Accept": both}).status_code == 200
    bad = gallery.client.get(study, headers={"Accept": 'multipart/related; type="application/dicom"; '
                                                       "transfer-syntax=../etc"})  # fmt: skip
    assert bad.status_code == 400


def test_unknown_uids_are_404(gallery: Gallery) -> None:
    ct = gallery.items["ct"]
    for path in ("/dicomweb/studies/1.2.3", f"/dicomweb/studies/{ct.StudyInstanceUID}/series/1.2.3",
                 f"/dicomweb/studies/1.2.3/series/{ct.SeriesInstanceUID}/instances/{ct.SOPInstanceUID}",
                 "/dicomweb/studies/1.2.3/metadata"):  # fmt: skip
        assert gallery.client.get(path).status_code == 404, path


def test_metadata_at_each_level(gallery: Gallery) -> None:
    ct = gallery.items["ct"]
    study = gallery.client.get(f"/dicomweb/studies/{gallery.study}/metadata").json()
    assert len(study) == len({d.SOPInstanceUID for d in gallery.items.values()})
    in_series = {d.SOPInstanceUID for d in gallery.items.values() if d.SeriesInstanceUID == ct.SeriesInstanceUID}
    series = gallery.client.get(f"/dicomweb/studies/{ct.StudyInstanceUID}/series/{ct.SeriesInstanceUID}/metadata")
    assert series.headers["content-type"] == "application/dicom+json"
    assert {i["00080018"]["Value"][0] for i in series.json()} == in_series
    one = gallery.client.get(gallery.url("ct", "/metadata")).json()[0]
    assert one["00100010"]["Value"][0]["Alphabetic"] == "Doe^John"
    assert one["00280010"] == {"vr": "US", "Value": [32]}
    uri = one["7FE00010"]["BulkDataURI"]
    assert uri == "http://testserver" + gallery.url("ct", "/bulk/7FE00010")


def test_metadata_etag_304_and_gzip(gallery: Gallery) -> None:
    path = f"/dicomweb/studies/{gallery.study}/metadata"
    first = gallery.client.get(path, headers={"Accept-Encoding": "gzip"})
    etag = first.headers["etag"]
    assert first.headers["content-encoding"] == "gzip" and "Accept-Encoding" in first.headers["vary"]
    again = gallery.client.get(path, headers={"If-None-Match": etag})
    assert again.status_code == 304 and again.content == b""
    plain = gallery.client.get(path, headers={"Accept-Encoding": "identity"})
    assert "content-encoding" not in plain.headers and plain.json() == first.json()
    assert plain.headers["etag"] == etag
    assert gallery.client.get(path, headers={"If-None-Match": '"something-else"'}).status_code == 200


def test_metadata_reads_no_object(tmp_path: Path) -> None:
    """Metadata comes from the index alone: it still answers with every object gone."""
    with Archive.open(dicomweb_settings(tmp_path)) as archive:
        study = make_ct_study(n_slices=4, rows=16, cols=16, seed=31)
        store_all(archive, study)
        for obj in list(archive.store.list()):
            archive.store.delete(obj.key)
        client = TestClient(make_app(archive))
        resp = client.get(f"/dicomweb/studies/{study[0].StudyInstanceUID}/metadata")
        assert resp.status_code == 200 and len(resp.json()) == 4
        assert client.get(f"/dicomweb/studies/{study[0].StudyInstanceUID}").status_code == 404


def test_large_objects_stream_in_chunks_with_an_exact_length(gallery: Gallery, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(readahead, "BATCH_BYTES", 4096)  # every object is larger than a batch: read in ranges
    resp = gallery.client.get(f"/dicomweb/studies/{gallery.study}")
    assert int(resp.headers["content-length"]) == len(resp.content)
    got = {ds.SOPInstanceUID: raw for _h, ds, raw in datasets(resp.headers["content-type"], resp.content)}
    assert got == {ds.SOPInstanceUID: to_bytes(ds) for ds in gallery.items.values()}
    transcoded = gallery.client.get(gallery.url("j2k"), headers={
        "Accept": f'multipart/related; type="application/dicom"; transfer-syntax={ELE}'})
    assert "content-length" not in transcoded.headers or int(transcoded.headers["content-length"]) == len(
        transcoded.content)
    [(_h, ds, _raw)] = datasets(transcoded.headers["content-type"], transcoded.content)
    assert ds.file_meta.TransferSyntaxUID == ELE
