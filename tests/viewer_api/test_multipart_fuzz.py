"""Property-based fuzzing of the STOW-RS multipart parser (RFC 2387) and of STOW-RS as a whole.

Well-formed bodies come back part for part however they are chunked; mutated ones (bit flips,
truncation, inserted or duplicated boundaries and headers) end in parts or MalformedMultipart,
never in another exception, and leave no spool file once the parts are discarded. Through the app,
a mutated request is answered with a STOW-RS status (never 500), and the archive holds no index
row without its object and no object without its row.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select

from pacs.archive import Archive
from pacs.index.models import Instance
from pacs.storage.filesystem import FilesystemStore
from tests.factories import make_ct_study, to_bytes
from tests.viewer_api.conftest import dicomweb_settings, make_app
from viewer_api.dicomweb.multipart import MalformedMultipart, MultipartLimits, MultipartParser, MultipartWriter, Part

FUZZ = settings(max_examples=150, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture,
                                       HealthCheck.data_too_large])
BOUNDARY = "fuzz-boundary-7d3"
#: Small enough that some parts spool to disk.
LIMITS = MultipartLimits(max_parts=20, max_header_bytes=512, max_preamble_bytes=256, memory_threshold=96)


def _body(payloads: list[bytes], headers: list[str]) -> bytes:
    out = bytearray()
    for payload, extra in zip(payloads, headers, strict=True):
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n{extra}\r\n".encode("latin-1") + payload + b"\r\n"
    out += f"--{BOUNDARY}--\r\n".encode()
    return bytes(out)


payloads = st.lists(st.binary(max_size=300) | st.sampled_from([b"--" + BOUNDARY.encode(), b"\r\n--fuzz", b"\r\n"]),
                    min_size=1, max_size=4)
headers = st.sampled_from(["", "Content-Location: x\r\n", "X-Note: a: b\r\n"])


@st.composite
def bodies(draw: st.DrawFn) -> tuple[list[bytes], bytes]:
    parts = draw(payloads)
    return parts, _body(parts, [draw(headers) for _ in parts])


@st.composite
def mutated_bodies(draw: st.DrawFn) -> bytes:
    data = bytearray(draw(bodies())[1])
    for _ in range(draw(st.integers(1, 4))):
        kind = draw(st.sampled_from(["flip", "truncate", "boundary", "duplicate", "bytes", "header"]))
        at = draw(st.integers(0, len(data)))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "boundary":
            data[at:at] = draw(st.sampled_from([f"\r\n--{BOUNDARY}\r\n", f"\r\n--{BOUNDARY}--", f"--{BOUNDARY}",
                                                "\r\n\r\n"])).encode()
        elif kind == "duplicate":
            end = draw(st.integers(at, len(data)))
            data[end:end] = data[at:end]
        elif kind == "bytes":
            data[at:at] = draw(st.binary(min_size=1, max_size=64))
        else:
            data[at:at] = draw(st.sampled_from([b"Content-Type: text/plain\r\n", b"No-Colon-Line\r\n",
                                                b"x" * 600, b"Content-Type: application/dicom;;;\r\n"]))
    return bytes(data)


def _feed(parser: MultipartParser, body: bytes, cuts: list[int]) -> list[Part]:
    """Feed ``body`` in the chunks ``cuts`` give; the parts, closed."""
    got: list[Part] = []
    start = 0
    for cut in sorted(cuts) + [len(body)]:
        got += parser.feed(body[start:cut])
        start = cut
    got += parser.close()
    return got


@FUZZ
@given(bodies(), st.lists(st.integers(0, 4000), max_size=8))
def test_a_well_formed_body_comes_back_part_for_part_however_chunked(
        tmp_path_factory: pytest.TempPathFactory, body: tuple[list[bytes], bytes], cuts: list[int]) -> None:
    spool = tmp_path_factory.mktemp("spool")
    expected, data = body
    parser = MultipartParser(BOUNDARY.encode(), "application/dicom", LIMITS, spool)
    parts = _feed(parser, data, [c for c in cuts if c <= len(data)])
    try:
        assert [p.head(p.size) for p in parts] == expected
        assert all(p.content_type.media_type == "application/dicom" for p in parts)
    finally:
        for part in parts:
            part.discard()
    assert list(spool.iterdir()) == []


@FUZZ
@given(mutated_bodies(), st.lists(st.integers(0, 4000), max_size=8))
@example(  # found by this test: a chunk completing a spooled part, then a malformed boundary line
    (f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n" + "x" * 200 + f"\r\n--{BOUNDARY}\rjunk\r\n"
     ).encode(), [])
def test_a_mutated_body_ends_in_parts_or_a_reason_and_leaves_no_spool_file(
        tmp_path_factory: pytest.TempPathFactory, data: bytes, cuts: list[int]) -> None:
    spool = tmp_path_factory.mktemp("spool")
    parser = MultipartParser(BOUNDARY.encode(), "application/dicom", LIMITS, spool)
    parts: list[Part] = []
    started = time.thread_time()
    try:
        start = 0
        for cut in sorted(c for c in cuts if c <= len(data)) + [len(data)]:
            parts += parser.feed(data[start:cut])
            start = cut
        parser.close()
    except MalformedMultipart as exc:
        assert str(exc)
        parser.abort()
    finally:
        for part in parts:
            part.discard()
    assert time.thread_time() - started < 1.0
    assert list(spool.iterdir()) == []


@pytest.fixture(scope="module")
def stow_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Archive, TestClient]]:
    with Archive.open(dicomweb_settings(tmp_path_factory.mktemp("stow"))) as archive, \
            TestClient(make_app(archive)) as client:
        yield archive, client


_INSTANCES = [to_bytes(ds) for ds in make_ct_study(n_slices=2, rows=16, cols=16, seed=130)]


@st.composite
def mutated_requests(draw: st.DrawFn) -> bytes:
    """A STOW-RS body of real instances, damaged in its framing or its instances."""
    chosen = draw(st.lists(st.sampled_from(_INSTANCES), min_size=1, max_size=2))
    data = bytearray(MultipartWriter().body([("application/dicom", d) for d in chosen]))
    writer_boundary = data[2:data.index(b"\r\n")].decode()
    for _ in range(draw(st.integers(1, 3))):
        at = draw(st.integers(0, len(data)))
        kind = draw(st.sampled_from(["flip", "truncate", "bytes", "boundary"]))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "truncate":
            del data[at:]
        elif kind == "bytes":
            data[at:at] = draw(st.binary(min_size=1, max_size=32))
        else:
            data[at:at] = f"\r\n--{writer_boundary}\r\n".encode()
    return bytes(data) + b"|" + writer_boundary.encode()


@settings(max_examples=40, deadline=None, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(mutated_requests())
def test_stow_rs_answers_every_mutated_request_and_leaves_nothing_partial(
        stow_site: tuple[Archive, TestClient], request_data: bytes) -> None:
    archive, client = stow_site
    body, _, boundary = request_data.rpartition(b"|")
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary.decode()}'
    resp = client.post("/dicomweb/studies", content=body, headers={"Content-Type": content_type})
    assert resp.status_code in (200, 202, 400, 409), resp.text
    with archive.engine.connect() as conn:
        keys = set(conn.execute(select(Instance.object_key)).scalars())
        assert conn.execute(select(func.count()).select_from(Instance)).scalar_one() == len(keys)
    store = archive.store
    assert isinstance(store, FilesystemStore)
    assert {o.key for o in store.list()} == keys
    assert list(store.root.joinpath(".tmp").iterdir()) == []
    spool: Path = archive.settings.data_dir / "spool"
    assert not spool.exists() or list(spool.iterdir()) == []
