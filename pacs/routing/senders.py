"""The two ways an instance leaves the archive for a destination: C-STORE (PS3.4 B.2) over an
association the archive requests as its own AE (:class:`~pacs.dimse.overrides.requestor.ArchiveAE`,
TLS when the destination says so), and STOW-RS (PS3.18 10.5) with a bearer token.

A sender answers each instance with a :class:`SendResult`: success (a DIMSE success or warning
status, an HTTP 200/202), or a failure with the peer's status and one sentence.
"""

from __future__ import annotations

import io
import logging
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Protocol

import pydicom
from pydicom.uid import UID
from pynetdicom.association import Association
from pynetdicom.presentation import PresentationContext

from pacs import __version__
from pacs.dimse.overrides.requestor import ArchiveAE
from pacs.dimse.store import IMPLEMENTATION_CLASS_UID, IMPLEMENTATION_VERSION_NAME
from pacs.dimse.tls import client_context
from pacs.routing.rules import Destination
from pacs.settings import Settings
from pacs.transcode import to_transfer_syntax

log = logging.getLogger(__name__)

_UNCOMPRESSED = ("1.2.840.10008.1.2.1", "1.2.840.10008.1.2")
_MAX_CONTEXTS = 128
_ERROR_BODY = 300


@dataclass(frozen=True, slots=True)
class Outgoing:
    """One instance as it is to be sent (after de-identification and any forced transcoding)."""

    sop_class_uid: str
    sop_uid: str
    transfer_syntax_uid: str
    part10: bytes


@dataclass(frozen=True, slots=True)
class SendResult:
    ok: bool
    status_code: int | None = None  # DIMSE status or HTTP code; None when the peer gave none
    error: str = ""


class Sender(Protocol):
    def send(self, item: Outgoing) -> SendResult: ...

    def close(self) -> None: ...


# --- DICOM ---------------------------------------------------------------------------------------


def proposed_contexts(items: Iterable[tuple[str, str]], *, only: str | None = None) -> list[PresentationContext]:
    """For each (SOP class, transfer syntax): the syntax on its own, and the uncompressed fallbacks in one
    context per class (the peer may accept either; an instance goes in the syntax it was accepted in).
    With ``only`` (a destination's forced syntax), that syntax alone for each class."""
    if only is not None:
        return [_context(sop_class, [only]) for sop_class in dict.fromkeys(c for c, _ in items)][:_MAX_CONTEXTS]
    by_class: dict[str, list[str]] = {}
    for sop_class, ts in items:
        syntaxes = by_class.setdefault(sop_class, [])
        if ts not in syntaxes:
            syntaxes.append(ts)
    fallbacks: list[PresentationContext] = []
    stored: list[PresentationContext] = []
    for sop_class, syntaxes in by_class.items():
        fallbacks.append(_context(sop_class, _UNCOMPRESSED))
        stored.extend(_context(sop_class, [ts]) for ts in syntaxes if ts not in _UNCOMPRESSED)
    return (fallbacks + stored)[:_MAX_CONTEXTS]


def _context(abstract_syntax: str, syntaxes: Iterable[str]) -> PresentationContext:
    cx = PresentationContext()
    cx.abstract_syntax = UID(abstract_syntax)
    cx.transfer_syntax = [UID(ts) for ts in syntaxes]
    return cx


class DicomSender:
    """One association to a DICOM destination for a batch of instances (their SOP classes proposed up front)."""

    def __init__(self, settings: Settings, dest: Destination, items: Iterable[tuple[str, str]]) -> None:
        self.dest = dest
        ae = ArchiveAE(ae_title=settings.ae_title)
        ae.implementation_class_uid = IMPLEMENTATION_CLASS_UID
        ae.implementation_version_name = IMPLEMENTATION_VERSION_NAME
        ae.maximum_pdu_size = settings.dicom_max_pdu
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = ae.connection_timeout = dest.timeout
        self._ae = ae
        kwargs: dict[str, Any] = {"contexts": proposed_contexts(items, only=dest.transfer_syntax), "ae_title": dest.aet}
        if dest.tls:
            kwargs["tls_args"] = (client_context(settings), dest.host)
        self.assoc: Association | None = None
        self.error = ""
        try:
            assoc = ae.associate(dest.host, int(dest.port or 0), **kwargs)
        except (OSError, ValueError, RuntimeError) as exc:
            self.error = f"cannot associate with {dest.label()}: {exc}"
            return
        if assoc.is_established:
            self.assoc = assoc
        elif assoc.is_rejected:
            self.error = f"{dest.label()} rejected the association"
        else:
            self.error = f"{dest.label()} could not be reached or aborted the association"
        self._accepted: dict[str, set[str]] = {}
        if self.assoc is not None:
            for cx in self.assoc.accepted_contexts:
                self._accepted.setdefault(str(cx.abstract_syntax), set()).add(str(cx.transfer_syntax[0]))

    def send(self, item: Outgoing) -> SendResult:
        if self.assoc is None or not self.assoc.is_established:
            return SendResult(False, None, self.error or f"the association with {self.dest.label()} was lost")
        accepted = self._accepted.get(item.sop_class_uid, set())
        data = item.part10
        if item.transfer_syntax_uid not in accepted:
            target = next((ts for ts in _UNCOMPRESSED if ts in accepted), None)
            if target is None:
                return SendResult(False, None, f"{self.dest.label()} accepted no transfer syntax for SOP class "
                                               f"{item.sop_class_uid}")  # fmt: skip
            data = to_transfer_syntax(data, target)
        ds = pydicom.dcmread(io.BytesIO(data))
        rsp = self.assoc.send_c_store(ds)
        status = int(rsp.Status) if "Status" in rsp else None
        if status is None:
            return SendResult(False, None, f"{self.dest.label()} sent no C-STORE response (timeout or abort)")
        if status == 0x0000 or status & 0xF000 == 0xB000:  # success, or a warning (PS3.4 B.2.3)
            return SendResult(True, status)
        comment = str(rsp.get("ErrorComment", "")).strip()
        return SendResult(False, status, f"{self.dest.label()} answered C-STORE status 0x{status:04X}"
                                         + (f": {comment}" if comment else ""))  # fmt: skip

    def close(self) -> None:
        if self.assoc is not None and self.assoc.is_established:
            self.assoc.release()
        self._ae.shutdown()


# --- DICOMweb --------------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is a failure: the destination's URL is the configured one."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


class StowSender:
    """STOW-RS of one instance per request to ``{url}/studies``, so each answer is about one instance."""

    def __init__(self, dest: Destination) -> None:
        self.dest = dest
        self.url = dest.url.rstrip("/") + "/studies"

    def send(self, item: Outgoing) -> SendResult:
        boundary = uuid.uuid4().hex
        body = (f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + item.part10
                + f"\r\n--{boundary}--\r\n".encode())  # fmt: skip
        headers = {"Content-Type": f'multipart/related; type="application/dicom"; boundary={boundary}',
                   "Accept": "application/dicom+json", "User-Agent": f"cloudfilm/{__version__}"}  # fmt: skip
        if self.dest.token is not None:
            headers["Authorization"] = f"Bearer {self.dest.token.get_secret_value()}"
        request = urllib.request.Request(self.url, data=body, method="POST", headers=headers)
        try:
            with _OPENER.open(request, timeout=self.dest.timeout) as response:
                code = int(response.status)
        except urllib.error.HTTPError as exc:
            detail = exc.read(_ERROR_BODY).decode("utf-8", "replace").strip()
            return SendResult(False, exc.code, f"{self.url} answered {exc.code}" + (f": {detail}" if detail else ""))
        except (urllib.error.URLError, OSError, ValueError) as exc:
            return SendResult(False, None, f"{self.url} could not be reached: {getattr(exc, 'reason', exc)}")
        if code in (200, 202):  # 202: stored with warnings (PS3.18 10.5.3)
            return SendResult(True, code)
        return SendResult(False, code, f"{self.url} answered {code}")

    def close(self) -> None:
        return None
