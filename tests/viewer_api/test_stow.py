"""STOW-RS: statuses and failure reasons of PS3.18 10.5.3, streaming with bounded memory, bad input."""

from __future__ import annotations

import tracemalloc
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from pacs.access import AccessScope
from pacs.archive import Archive
from tests.factories import make_ct_study, make_multiframe, to_bytes, truncated_bytes, with_bad_uid, without
from tests.viewer_api.conftest import BOUNDARY, STOW_TYPE, RunningServer, dicomweb_settings, make_app, stow_body

REFERENCED, FAILED, RETRIEVE_URL = "00081199", "00081198", "00081190"


def reasons(body: dict) -> list[int]:
    return [item["00081197"]["Value"][0] for item in body.get(FAILED, {}).get("Value", [])]


def post(client: TestClient, items: list[Dataset | bytes], url: str = "/dicomweb/studies") -> tuple[int, dict]:
    resp = client.post(url, content=stow_body(items), headers={"Content-Type": STOW_TYPE})
    assert resp.headers["content-type"].startswith("application/dicom+json"), resp.text
    assert resp.headers["x-content-type-options"] == "nosniff"
    return resp.status_code, resp.json()


def test_all_stored_is_200_with_references_and_retrieve_urls(client: TestClient, dw_archive: Archive) -> None:
    study = make_ct_study(n_slices=3, seed=1)
    status, body = post(client, study)
    assert status == 200
    refs = body[REFERENCED]["Value"]
    assert [r["00081155"]["Value"][0] for r in refs] == [d.SOPInstanceUID for d in study]
    assert refs[0]["00081150"]["Value"] == [study[0].SOPClassUID]
    assert refs[0][RETRIEVE_URL]["Value"][0].endswith(
        f"/dicomweb/studies/{study[0].StudyInstanceUID}/series/{study[0].SeriesInstanceUID}"
        f"/instances/{study[0].SOPInstanceUID}"
    )
    assert body[RETRIEVE_URL]["Value"][0].endswith(f"/studies/{study[0].StudyInstanceUID}")
    stored = dw_archive.store.get_bytes(next(iter(dw_archive.store.list())).key)
    assert stored in {to_bytes(d) for d in study}  # byte for byte as sent
    assert post(client, study)[0] == 200  # sending the same again is harmless


def test_some_failed_is_202_with_reasons(client: TestClient) -> None:
    good = make_ct_study(n_slices=2, seed=2)
    not_dicom = b"this is not DICOM at all" * 10
    no_sop = without(make_ct_study(n_slices=1, seed=3)[0], "SOPInstanceUID")
    status, body = post(client, [good[0], not_dicom, no_sop, good[1]])
    assert status == 202
    assert len(body[REFERENCED]["Value"]) == 2
    assert sorted(reasons(body)) == [0xA900, 0xC000]


def test_none_stored_is_409_including_a_study_mismatch(client: TestClient) -> None:
    study = make_ct_study(n_slices=2, seed=4)
    other = make_ct_study(n_slices=1, seed=5)
    resp = client.post(f"/dicomweb/studies/{study[0].StudyInstanceUID}", content=stow_body(other),
                       headers={"Content-Type": STOW_TYPE})  # fmt: skip
    assert resp.status_code == 409
    failed = resp.json()[FAILED]["Value"][0]
    assert failed["00081197"]["Value"] == [0xA900]
    assert failed["00081155"]["Value"] == [other[0].SOPInstanceUID]
    assert "differs from the study in the URL" in resp.headers["warning"]
    assert client.get(f"/dicomweb/studies/{other[0].StudyInstanceUID}/metadata").status_code == 404
    status, body = post(client, study, f"/dicomweb/studies/{study[0].StudyInstanceUID}")
    assert status == 200


def test_same_uid_different_content_is_kept_and_reported(client: TestClient) -> None:
    first = make_ct_study(n_slices=1, seed=6)[0]
    changed = make_ct_study(n_slices=1, seed=6)[0]
    changed.StudyDescription = "CHANGED"
    assert post(client, [first])[0] == 200
    status, body = post(client, [changed])
    assert status == 409 and reasons(body) == [0x0111]


def test_truncated_and_bad_uid_instances_fail(client: TestClient) -> None:
    ds = make_ct_study(n_slices=1, seed=7)[0]
    status, body = post(client, [truncated_bytes(ds), with_bad_uid(make_ct_study(n_slices=1, seed=8)[0],
                                                                     "StudyInstanceUID")])
    assert status == 409
    assert len(reasons(body)) == 2 and set(reasons(body)) <= {0xA900, 0xC000}


def test_malformed_requests_are_400(client: TestClient) -> None:
    ds = make_ct_study(n_slices=1, seed=9)[0]
    body = stow_body([ds])
    cases = [
        (body[:-40], STOW_TYPE),  # no closing boundary
        (b"no boundary anywhere" * 100, STOW_TYPE),
        (body, 'multipart/related; type="application/dicom"'),  # boundary parameter missing
        (f"--{BOUNDARY}\r\nContent-Type application/dicom\r\n\r\nxx\r\n--{BOUNDARY}--".encode(), STOW_TYPE),
        (f"--{BOUNDARY}--\r\n".encode(), STOW_TYPE),  # no parts
        (f"--{BOUNDARY}\r\n".encode() + b"X-Long: " + b"a" * 20000 + b"\r\n\r\n", STOW_TYPE),
    ]
    for content, ctype in cases:
        resp = client.post("/dicomweb/studies", content=content, headers={"Content-Type": ctype})
        assert resp.status_code == 400, (ctype, content[:60], resp.text)
        assert resp.headers["content-type"].startswith("text/plain")
        assert "Traceback" not in resp.text


def test_unsupported_media_types_are_415(client: TestClient) -> None:
    ds = make_ct_study(n_slices=1, seed=10)[0]
    for ctype in ("application/dicom", "application/json",
                  f'multipart/related; type="application/dicom+json"; boundary={BOUNDARY}', ""):  # fmt: skip
        resp = client.post("/dicomweb/studies", content=to_bytes(ds), headers={"Content-Type": ctype})
        assert resp.status_code == 415, ctype


def test_a_part_of_another_type_fails_alone(client: TestClient) -> None:
    ds = make_ct_study(n_slices=1, seed=11)[0]
    body = (f"--{BOUNDARY}\r\nContent-Type: text/plain\r\n\r\nhello\r\n".encode()
            + stow_body([ds]))  # fmt: skip
    resp = client.post("/dicomweb/studies", content=body, headers={"Content-Type": STOW_TYPE})
    assert resp.status_code == 202 and reasons(resp.json()) == [0xC000]


def test_over_the_configured_size_is_413(tmp_path: Path) -> None:
    with Archive.open(dicomweb_settings(tmp_path, max_upload_bytes=50_000)) as archive:
        client = TestClient(make_app(archive))
        body = stow_body(make_ct_study(n_slices=8, seed=12))
        resp = client.post("/dicomweb/studies", content=body, headers={"Content-Type": STOW_TYPE})
        assert resp.status_code == 413

        def chunked() -> Iterator[bytes]:  # no Content-Length: counted while streaming
            for i in range(0, len(body), 8192):
                yield body[i : i + 8192]

        resp = client.post("/dicomweb/studies", content=chunked(), headers={"Content-Type": STOW_TYPE})
        assert resp.status_code == 413


def test_too_many_parts_is_400(tmp_path: Path) -> None:
    with Archive.open(dicomweb_settings(tmp_path, dicomweb_max_parts=2)) as archive:
        client = TestClient(make_app(archive))
        resp = client.post("/dicomweb/studies", content=stow_body(make_ct_study(n_slices=3, seed=13)),
                           headers={"Content-Type": STOW_TYPE})  # fmt: skip
        assert resp.status_code == 400 and "too many parts" in resp.text


def test_a_large_request_streams_through_disk_with_bounded_memory(
    dw_archive: Archive, serve: Callable[[Archive], RunningServer]
) -> None:
    parts = [make_multiframe(n_frames=48, rows=128, cols=128, seed=100 + i) for i in range(30)]  # 1.5 MB each
    big = parts[-1]
    small = make_ct_study(n_slices=20, seed=15)
    body = stow_body([*parts, *small])

    def chunks() -> Iterator[bytes]:
        for i in range(0, len(body), 64 * 1024):
            yield body[i : i + 64 * 1024]

    server = serve(dw_archive)
    tracemalloc.start()
    resp = httpx.post(f"{server.url}/dicomweb/studies", content=chunks(), headers={"Content-Type": STOW_TYPE},
                      timeout=60)  # fmt: skip
    _current, peak = tracemalloc.get_traced_memory()  # client and server: one process
    tracemalloc.stop()
    assert resp.status_code == 200 and len(resp.json()[REFERENCED]["Value"]) == 50
    assert peak < len(body) / 3, f"peak {peak} bytes for a {len(body)}-byte body"
    assert not list((dw_archive.settings.data_dir / "spool").iterdir())  # spool files removed
    client = TestClient(server.app)
    frame = client.get(f"/dicomweb/studies/{big.StudyInstanceUID}/series/{big.SeriesInstanceUID}/instances/"
                       f"{big.SOPInstanceUID}/frames/48", headers={"Accept": "application/octet-stream"})
    assert frame.content == big.PixelData[-128 * 128 * 2 :]


def test_parts_without_preamble_are_stored_as_part10(client: TestClient, dw_archive: Archive) -> None:
    raw = to_bytes(make_ct_study(n_slices=1, seed=16)[0])
    status, _body = post(client, [raw[132:]])  # from the file meta group on, as dcmwrite writes a new dataset
    assert status == 200
    stored = dw_archive.store.get_bytes(next(iter(dw_archive.store.list())).key)
    assert stored[128:132] == b"DICM" and stored[132:] == raw[132:]


@pytest.mark.parametrize("prefix", [b"", b"preamble text\r\n", b"\r\n"])
def test_preamble_and_leading_crlf_are_accepted(client: TestClient, prefix: bytes) -> None:
    body = prefix + stow_body(make_ct_study(n_slices=1, seed=17))
    resp = client.post("/dicomweb/studies", content=body, headers={"Content-Type": STOW_TYPE})
    assert resp.status_code == 200


def test_unknown_or_misdeclared_transfer_syntax_is_0xc122(client: TestClient) -> None:
    raw = to_bytes(make_ct_study(n_slices=1, seed=18)[0])
    unknown = raw.replace(b"1.2.840.10008.1.2.1\x00", b"1.2.3.4.5.6.7.8.9.1\x00", 1)  # same length, in file meta
    declared = make_ct_study(n_slices=1, seed=19)[0]
    body = stow_body([unknown]).removesuffix(f"--{BOUNDARY}--\r\n".encode()) + (
        f"--{BOUNDARY}\r\nContent-Type: application/dicom; transfer-syntax=1.2.840.10008.1.2.4.50\r\n\r\n".encode()
        + to_bytes(declared) + f"\r\n--{BOUNDARY}--\r\n".encode())
    resp = client.post("/dicomweb/studies", content=body, headers={"Content-Type": STOW_TYPE})
    assert resp.status_code == 409 and reasons(resp.json()) == [0xC122, 0xC122]
    assert "declares transfer syntax" in resp.headers["warning"]


def test_instances_outside_the_callers_scope_are_refused(tmp_path: Path) -> None:
    allowed = make_ct_study(n_slices=1, rows=8, cols=8, seed=20)
    other = make_ct_study(n_slices=1, rows=8, cols=8, seed=21)
    with Archive.open(dicomweb_settings(tmp_path)) as archive:
        client = TestClient(make_app(archive, AccessScope.studies(allowed[0].StudyInstanceUID)))
        status, body = post(client, [allowed[0], other[0]])
        assert status == 202 and reasons(body) == [0x0124]
        assert body[REFERENCED]["Value"][0]["00081155"]["Value"] == [allowed[0].SOPInstanceUID]
