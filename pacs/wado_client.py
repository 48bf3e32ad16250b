"""A DICOMweb client that pulls one study from another archive: QIDO-RS to list its instances
(PS3.18 10.6) and WADO-RS to retrieve each one as stored (10.4, ``transfer-syntax=*``).

Standard library only (``urllib``), with a bearer token, as :mod:`pacs.routing.senders` speaks
STOW-RS. A retrieved instance is spooled to a file, not held in memory: the one part of the
``multipart/related`` answer (RFC 2387) is found in the spooled body and handed on as a
:class:`~pacs.ingest.Part10Source` over that region of the file, so its bytes reach the ingest
path exactly as the other archive stored them.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import tempfile
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from email.message import Message
from pathlib import Path
from typing import Any

from pacs import __version__
from pacs.errors import CloudfilmError
from pacs.ingest import Part10Source

PAGE = 1000  # QIDO-RS results per request (the most cloudfilm answers; others may answer fewer)
_ACCEPT_DICOM = 'multipart/related; type="application/dicom"; transfer-syntax=*'
_HEAD_WINDOW = 64 * 1024  # the part's delimiter and headers lie within the body's first bytes
_COPY_CHUNK = 1024 * 1024
_ERROR_BODY = 300
_STUDY_IN_URL = re.compile(r"^(?P<base>.*?)/studies/(?P<study>[0-9.]+)/?$")

STUDY_UID, SERIES_UID, SOP_UID = "0020000D", "0020000E", "00080018"


class DicomwebError(CloudfilmError):
    """The other archive could not be reached or refused a request; ``status`` is its HTTP code."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@dataclass(frozen=True, slots=True)
class RemoteInstance:
    study_uid: str
    series_uid: str
    sop_uid: str


@dataclass(frozen=True, slots=True)
class ShareLocation:
    """Where a share points: the DICOMweb base URL, and the study when the URL names one."""

    base_url: str
    study_uid: str | None

    @classmethod
    def parse(cls, url: str) -> ShareLocation:
        """``…/dicomweb`` or ``…/dicomweb/studies/{uid}`` (as a share's ``dicomweb_url`` and study give them)."""
        parts = urllib.parse.urlsplit(url.strip())
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise DicomwebError(f"{url!r} is not an http:// or https:// DICOMweb URL")
        clean = urllib.parse.urlunsplit((parts.scheme, parts.netloc, parts.path.rstrip("/"), "", ""))
        match = _STUDY_IN_URL.match(clean)
        if match:
            return cls(match.group("base"), match.group("study"))
        return cls(clean, None)


def _first(item: dict[str, Any], tag: str) -> str:
    values = item.get(tag, {}).get("Value") or [""]
    return str(values[0])


class DicomwebClient:
    """QIDO-RS and WADO-RS requests to one DICOMweb base URL with one bearer token."""

    def __init__(self, base_url: str, token: str, *, timeout: float = 120) -> None:
        self.base_url = base_url.rstrip("/")
        self.token = token
        self.timeout = timeout

    def _open(self, path: str, accept: str, query: dict[str, str] | None = None) -> Any:
        url = self.base_url + path + ("?" + urllib.parse.urlencode(query) if query else "")
        request = urllib.request.Request(url, headers={
            "Accept": accept, "Authorization": f"Bearer {self.token}", "User-Agent": f"cloudfilm/{__version__}"})
        try:
            return urllib.request.urlopen(request, timeout=self.timeout)  # noqa: S310 (http/https checked)
        except urllib.error.HTTPError as exc:
            body = exc.read(_ERROR_BODY).decode("utf-8", "replace").strip()
            raise DicomwebError(_refusal(exc.code, body), exc.code) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise DicomwebError(f"cannot reach {self.base_url}: {reason}") from None

    def _json(self, path: str, query: dict[str, str]) -> list[dict[str, Any]]:
        with self._open(path, "application/dicom+json", query) as response:
            if response.status == 204:
                return []
            data = json.load(response)
        if not isinstance(data, list):
            raise DicomwebError(f"{self.base_url}{path} did not answer with a DICOM JSON list")
        return data

    def _pages(self, path: str, query: dict[str, str]) -> Iterator[dict[str, Any]]:
        """Every result of a QIDO-RS search, page by page until an empty page (whatever limit the server keeps)."""
        offset = 0
        while True:
            page = self._json(path, query | {"limit": str(PAGE), "offset": str(offset)})
            if not page:
                return
            yield from page
            offset += len(page)

    def studies(self) -> list[str]:
        """The Study Instance UIDs the token may see (a clinician share: exactly one)."""
        return sorted({_first(s, STUDY_UID) for s in self._pages("/studies", {})} - {""})

    def instances(self, study_uid: str) -> list[RemoteInstance]:
        """Every instance of ``study_uid`` (PS3.18 10.6.1: ``/studies/{uid}/instances``)."""
        path = f"/studies/{urllib.parse.quote(study_uid)}/instances"
        found = {_first(i, SOP_UID): RemoteInstance(study_uid, _first(i, SERIES_UID), _first(i, SOP_UID))
                 for i in self._pages(path, {"includefield": f"{SERIES_UID},{SOP_UID}"})}  # fmt: skip
        return [found[uid] for uid in sorted(found) if uid and found[uid].series_uid]

    def retrieve(self, instance: RemoteInstance, spool_dir: Path | None = None) -> SpooledInstance:
        """One instance as the other archive stores it, spooled to a file (the caller discards it)."""
        path = "/studies/{}/series/{}/instances/{}".format(
            *(urllib.parse.quote(u) for u in (instance.study_uid, instance.series_uid, instance.sop_uid)))
        fd, name = tempfile.mkstemp(prefix="import-share-", suffix=".part", dir=spool_dir)
        spooled = Path(name)
        try:
            with self._open(path, _ACCEPT_DICOM) as response, os.fdopen(fd, "wb") as out:
                shutil.copyfileobj(response, out, _COPY_CHUNK)
                content_type = response.headers.get("Content-Type", "")
            start, end = _single_part(spooled, content_type)
            os.truncate(spooled, end)
            return SpooledInstance(instance, spooled, start)
        except BaseException:
            spooled.unlink(missing_ok=True)
            raise


@dataclass(frozen=True, slots=True)
class SpooledInstance:
    """A retrieved instance: its Part 10 bytes are ``path`` from ``offset`` to the end."""

    instance: RemoteInstance
    path: Path
    offset: int

    def source(self) -> Part10Source:
        return Part10Source.from_prefixed_file(b"", self.path, self.instance.sop_uid, offset=self.offset)

    def discard(self) -> None:
        self.path.unlink(missing_ok=True)


def _refusal(status: int, body: str) -> str:
    if status == 401:
        return "the share token was refused: it is mistyped, expired or revoked"
    if status == 403:
        return f"the other archive refused the request: {body or 'forbidden'}"
    if status == 404:
        return "the other archive has no such study for this token (or no DICOMweb service at this URL)"
    return f"the other archive answered HTTP {status}" + (f": {body}" if body else "")


def _content_type(value: str) -> tuple[str, dict[str, str]]:
    message = Message()
    message["Content-Type"] = value
    params = {k.lower(): v for k, v in message.get_params(failobj=[])[1:]}
    return message.get_content_type(), params


def _single_part(path: Path, content_type: str) -> tuple[int, int]:
    """The byte range of the one DICOM object in a spooled WADO-RS answer (multipart/related with one
    part, or a bare ``application/dicom`` body)."""
    media, params = _content_type(content_type)
    if media == "application/dicom":
        return 0, path.stat().st_size
    boundary = params.get("boundary", "")
    if media != "multipart/related" or not boundary:
        raise DicomwebError(f"the other archive answered {content_type or 'without a Content-Type'}, "
                            "not multipart/related DICOM")
    delimiter = b"--" + boundary.encode("latin-1")
    with open(path, "rb") as fh:
        head = fh.read(_HEAD_WINDOW)
        first = head.find(delimiter)
        if first < 0 or (first > 0 and head[first - 2:first] != b"\r\n"):
            raise DicomwebError("the other archive's multipart answer holds no part")
        headers_end = head.find(b"\r\n\r\n", first)
        if headers_end < 0:
            raise DicomwebError("the other archive's multipart part headers do not end")
        part_type = _part_type(head[first + len(delimiter):headers_end])
        if part_type not in ("", "application/dicom"):
            raise DicomwebError(f"the other archive sent a {part_type} part, not application/dicom")
        start = headers_end + 4
        end = _find(fh, b"\r\n" + delimiter, start)  # the sender chose a boundary its object does not hold
        if end < 0:
            raise DicomwebError("the other archive's multipart answer is cut short (no closing boundary)")
        fh.seek(end + 2 + len(delimiter))
        if fh.read(2) != b"--":
            raise DicomwebError("the other archive sent several objects for one instance")
    return start, end


def _find(fh: Any, needle: bytes, start: int) -> int:
    """The offset of the first ``needle`` in ``fh`` at or after ``start``, or -1; read in chunks."""
    fh.seek(start)
    at, carry = start, b""
    while chunk := fh.read(_COPY_CHUNK):
        window = carry + chunk
        found = window.find(needle)
        if found >= 0:
            return at - len(carry) + found
        carry = window[-(len(needle) - 1):]
        at += len(chunk)
    return -1


def _part_type(raw: bytes) -> str:
    for line in raw.decode("latin-1").split("\r\n"):
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-type":
            return _content_type(value.strip())[0]
    return ""
