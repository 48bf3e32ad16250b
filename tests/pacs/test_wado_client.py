"""The WADO-RS answer reader of ``cloudfilm import-share``: the one object of a spooled answer, exactly.

A boundary split across read chunks, a bare ``application/dicom`` body, and the answers it refuses
in one sentence (no part, cut short, several objects, another media type)."""

from __future__ import annotations

from pathlib import Path

import pytest

from pacs import wado_client
from pacs.wado_client import DicomwebError, ShareLocation, _single_part

OBJECT = b"\x00" * 128 + b"DICM" + bytes(range(256)) * 40
MULTIPART = 'multipart/related; type="application/dicom"; boundary=abc123'


def _spool(tmp_path: Path, body: bytes) -> Path:
    path = tmp_path / "answer.part"
    path.write_bytes(body)
    return path


def _part(obj: bytes = OBJECT, *, close: bool = True, preamble: bytes = b"") -> bytes:
    body = preamble + b"--abc123\r\nContent-Type: application/dicom\r\nContent-Length: %d\r\n\r\n" % len(obj) + obj
    return body + (b"\r\n--abc123--\r\nepilogue" if close else b"")


@pytest.mark.parametrize("chunk", [7, 64, 1024 * 1024])
def test_the_object_is_found_byte_for_byte(tmp_path: Path, chunk: int, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(wado_client, "_COPY_CHUNK", chunk)  # the closing delimiter straddles read chunks
    path = _spool(tmp_path, _part(preamble=b"a preamble\r\n"))
    start, end = _single_part(path, MULTIPART)
    assert path.read_bytes()[start:end] == OBJECT


def test_a_bare_dicom_answer_is_the_object(tmp_path: Path) -> None:
    path = _spool(tmp_path, OBJECT)
    assert _single_part(path, "application/dicom; transfer-syntax=*") == (0, len(OBJECT))


@pytest.mark.parametrize(("body", "content_type", "why"), [
    (_part(close=False), MULTIPART, "cut short"),
    (_part().replace(b"\r\n--abc123--", b"\r\n--abc123\r\nContent-Type: application/dicom\r\n\r\nX\r\n--abc123--"),
     MULTIPART, "several objects"),
    (b"no delimiter here", MULTIPART, "holds no part"),
    (_part().replace(b"application/dicom\r\n", b"application/json\r\n"), MULTIPART, "application/json part"),
    (_part(), "text/html", "not multipart/related DICOM"),
    (_part(), "multipart/related", "not multipart/related DICOM"),  # no boundary
])
def test_malformed_answers_are_refused_in_a_sentence(tmp_path: Path, body: bytes, content_type: str,
                                                     why: str) -> None:
    with pytest.raises(DicomwebError, match=why):
        _single_part(_spool(tmp_path, body), content_type)


def test_share_locations() -> None:
    assert ShareLocation.parse("https://a.example/dicomweb/") == ShareLocation("https://a.example/dicomweb", None)
    assert ShareLocation.parse("http://a:8000/dicomweb/studies/1.2.3") == ShareLocation("http://a:8000/dicomweb",
                                                                                         "1.2.3")
    with pytest.raises(DicomwebError, match="not an http"):
        ShareLocation.parse("file:///etc/passwd")
