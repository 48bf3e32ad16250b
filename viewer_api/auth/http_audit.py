"""Audit events for the DICOMweb and WADO-URI routes, recorded once by the auth middleware.

The routes themselves stay free of audit calls: the middleware sees the method, path, caller and
final status of every request and records the ones the trail needs: STOW-RS (``stow``), deletes,
study searches (``search``), retrieval of DICOM objects (``download``) and the opening of a study's
metadata, which is how DICOMweb viewers such as OHIF open a study (``view``). Frames, rendered
images and thumbnails are not recorded one by one: the viewer page that shows them already was.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from urllib.parse import parse_qs

from pacs.accounts.audit import Action, Outcome

_UID = r"[0-9.]{1,64}"
_STUDY = re.compile(rf"^/dicomweb/studies/(?P<study>{_UID})")
_RETRIEVE = re.compile(rf"^/dicomweb/studies/{_UID}(/series/{_UID}(/instances/{_UID})?)?/?$")
_METADATA = re.compile(rf"^/dicomweb/studies/{_UID}/metadata/?$")
_STOW = re.compile(rf"^/dicomweb/studies(/{_UID})?/?$")


@dataclass(frozen=True, slots=True)
class HttpAuditEvent:
    action: Action
    outcome: Outcome
    study_uid: str
    detail: str


def outcome_of(status: int) -> Outcome:
    if status < 400:
        return Outcome.SUCCESS
    if status in (401, 403):
        return Outcome.DENIED
    return Outcome.ERROR if status >= 500 else Outcome.FAILURE


def classify(method: str, path: str, query: str, status: int) -> HttpAuditEvent | None:
    """The audit event a DICOMweb request stands for, or ``None`` for the ones not recorded."""
    match = _STUDY.match(path)
    study = match.group("study") if match else ""
    outcome = outcome_of(status)
    if method == "POST" and _STOW.match(path):
        return HttpAuditEvent(Action.STOW, outcome, study, f"STOW-RS {status}")
    if method == "DELETE" and path.startswith("/dicomweb/"):
        return HttpAuditEvent(Action.DELETE, outcome, study, f"{path} {status}")
    if method != "GET":
        return None
    if path.rstrip("/") == "/dicomweb/studies":
        return HttpAuditEvent(Action.SEARCH, outcome, "", f"QIDO-RS {query}"[:500])
    if _METADATA.match(path):
        return HttpAuditEvent(Action.VIEW, outcome, study, "WADO-RS metadata")
    if _RETRIEVE.match(path):
        return HttpAuditEvent(Action.DOWNLOAD, outcome, study, f"WADO-RS {path.removeprefix('/dicomweb')}"[:500])
    if path.rstrip("/") == "/wado":
        params = parse_qs(query)
        if params.get("contentType", [""])[0] == "application/dicom":
            wado_study = params.get("studyUID", [""])[0][:64]
            return HttpAuditEvent(Action.DOWNLOAD, outcome, wado_study, "WADO-URI application/dicom")
    return None
