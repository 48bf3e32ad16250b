"""The edge worker's :class:`~ai_plugins.sdk.InstanceSource`: a job's study read over DICOMweb with
the job's token, the series listed as the archive's own workers list them (sent with the lease).

Instances come from WADO-RS series retrieval (PS3.18 10.4) as stored (``transfer-syntax=*``), one
request per series, in a ``multipart/related`` response split here (PS3.18 8.7.1.1).
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import httpx

from ai_plugins.sdk import InstanceSource, SeriesInfo

ACCEPT = 'multipart/related; type="application/dicom"; transfer-syntax=*'


class DicomwebError(Exception):
    """The archive's DICOMweb service did not hand over a series."""


@dataclass(frozen=True, slots=True)
class DicomwebReader:
    """Opens one job's study over DICOMweb (pickled to the plugin's child process)."""

    dicomweb_url: str
    token: str
    series: tuple[SeriesInfo, ...]
    timeout_s: float = 300.0

    @contextmanager
    def open(self, study_uid: str) -> Iterator[InstanceSource]:
        with httpx.Client(base_url=self.dicomweb_url, timeout=self.timeout_s,
                          headers={"Authorization": f"Bearer {self.token}"}) as http:  # fmt: skip
            yield DicomwebSource(http, study_uid, self.series)


class DicomwebSource:
    def __init__(self, http: httpx.Client, study_uid: str, series: Sequence[SeriesInfo]) -> None:
        self.http = http
        self.study_uid = study_uid
        self.series = tuple(series)

    def list_series(self) -> Sequence[SeriesInfo]:
        return self.series

    def read_instances(self, series_uid: str) -> Sequence[bytes]:
        response = self.http.get(f"/studies/{self.study_uid}/series/{series_uid}", headers={"Accept": ACCEPT})
        if response.status_code != 200:
            raise DicomwebError(f"series {series_uid}: the archive answered {response.status_code}")
        return split_multipart(response.headers.get("content-type", ""), response.content)


def split_multipart(content_type: str, body: bytes) -> list[bytes]:
    """The bodies of a ``multipart/related`` message (RFC 2046 5.1.1)."""
    boundary = _boundary(content_type)
    delimiter = b"\r\n--" + boundary
    parts = (b"\r\n" + body).split(delimiter)
    out: list[bytes] = []
    for part in parts[1:]:
        if part.startswith(b"--"):  # the close delimiter
            break
        _headers, sep, content = part.partition(b"\r\n\r\n")
        if not sep:
            raise DicomwebError("a part of the multipart response has no header end")
        out.append(content)
    return out


def _boundary(content_type: str) -> bytes:
    kind, _, params = content_type.partition(";")
    if kind.strip().lower() != "multipart/related":
        raise DicomwebError(f"expected multipart/related, got {kind.strip() or 'nothing'}")
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name.strip().lower() == "boundary" and value:
            return value.strip().strip('"').encode("ascii")
    raise DicomwebError("the multipart response names no boundary")
