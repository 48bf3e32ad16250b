"""STOW-RS: store instances sent as ``multipart/related; type="application/dicom"`` (PS3.18 10.5).

The body is parsed as it arrives; each completed part is handed to the one ingest path while the
next is still uploading (at most a few in flight, so memory stays bounded whatever the request
size). The response lists every instance as stored (ReferencedSOPSequence) or failed
(FailedSOPSequence with a FailureReason), with the status codes of PS3.18 10.5.3.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Coroutine
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from pydicom.dataset import Dataset
from starlette.exceptions import HTTPException
from starlette.requests import ClientDisconnect

from ai_plugins.runner.plugin_jobs import StoredResult, record_vendor_upload
from ai_plugins.runner.results import kind_of
from pacs import metrics
from pacs.access import AccessScope
from pacs.accounts.principal import PluginJob
from pacs.archive import Archive
from pacs.errors import StorageUnavailable
from pacs.ingest import IngestResult, Outcome
from viewer_api.access import current_scope
from viewer_api.auth.access import STOW_WRITERS
from viewer_api.auth.dependencies import optional_principal
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.dicomweb.encoding import dumps
from viewer_api.dicomweb.media import DICOM, DICOM_JSON, BadRequest, UnsupportedMediaType, parse_media_type
from viewer_api.dicomweb.multipart import MalformedMultipart, MultipartLimits, MultipartParser, Part, boundary_of
from viewer_api.dicomweb.params import dicomweb_base, uid
from viewer_api.errors import RETRY_AFTER_S

log = logging.getLogger(__name__)
router = APIRouter(tags=["DICOMweb"], route_class=DeclaredRoute,
                   dependencies=[Depends(STOW_WRITERS)])

#: FailureReason (0008,1197) values, PS3.18 Table 10.5.3-2 and PS3.4 Annex GG.
PROCESSING_FAILURE = 0x0110
DUPLICATE_SOP_INSTANCE = 0x0111
NOT_AUTHORIZED = 0x0124
OUT_OF_RESOURCES = 0xA700
DATA_SET_DOES_NOT_MATCH = 0xA900
CANNOT_UNDERSTAND = 0xC000
TRANSFER_SYNTAX_NOT_SUPPORTED = 0xC122

_FAILURE_OF_OUTCOME = {
    Outcome.NOT_DICOM: CANNOT_UNDERSTAND,
    Outcome.INVALID: DATA_SET_DOES_NOT_MATCH,
    Outcome.UNAVAILABLE: OUT_OF_RESOURCES,
    Outcome.KEPT_EXISTING: DUPLICATE_SOP_INSTANCE,
}
_IN_FLIGHT = 4  # parts being ingested at once per request
_KNOWN_TRANSFER_SYNTAXES = frozenset(str(uid) for uid in pydicom.uid.AllTransferSyntaxes)


class PayloadTooLarge(HTTPException):
    def __init__(self, limit: int) -> None:
        super().__init__(413, f"the request is larger than the configured maximum of {limit} bytes")


@dataclass(frozen=True, slots=True)
class PartOutcome:
    """What became of one part: stored (failure is None) or failed with a reason."""

    sop_class_uid: str
    sop_uid: str
    study_uid: str
    series_uid: str
    failure: int | None
    reason: str


@router.post("/studies", summary="Store instances (STOW-RS)", status_code=200)
async def store_instances(request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    return await _observed(_store(request, None, scope))


@router.post("/studies/{study}", summary="Store instances of one study (STOW-RS)", status_code=200)
async def store_study_instances(study: str, request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    return await _observed(_store(request, uid(study, "StudyInstanceUID"), scope))


async def _observed(store: Coroutine[Any, Any, Response]) -> Response:
    """``cloudfilm_store_request_*`` of one STOW-RS request, refusals included."""
    started, code = time.perf_counter(), 500
    try:
        response = await store
        code = response.status_code
        return response
    except HTTPException as exc:
        code = exc.status_code
        raise
    except StorageUnavailable:
        code = 503
        raise
    finally:
        metrics.observe_store_request("stow-rs", str(code), time.perf_counter() - started)


async def _store(request: Request, study: str | None, scope: AccessScope) -> Response:
    archive = archive_of(request)
    principal = optional_principal(request)
    job = principal.job if principal is not None else None
    ctype = parse_media_type(request.headers.get("content-type", ""))
    if ctype.media_type != "multipart/related":
        raise UnsupportedMediaType('STOW-RS takes multipart/related; type="application/dicom"')
    if ctype.params.get("type", DICOM).lower() != DICOM:
        raise UnsupportedMediaType(f"parts of type {ctype.params['type'][:60]!r} are not supported; "
                                   'send type="application/dicom"')
    try:
        boundary = boundary_of(ctype)
    except MalformedMultipart as exc:
        raise BadRequest(str(exc)) from None
    limit = archive.settings.max_upload_bytes
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLarge(limit)

    spool = _spool_dir(archive)
    parser = MultipartParser(boundary, DICOM, MultipartLimits(max_parts=archive.settings.dicomweb_max_parts), spool)
    tasks: list[asyncio.Task[PartOutcome]] = []
    gate = asyncio.Semaphore(_IN_FLIGHT)
    received = 0

    async def ingest(part: Part) -> PartOutcome:
        try:
            return await asyncio.to_thread(_store_part, archive, part, study, scope, job)
        finally:
            gate.release()

    try:
        async for chunk in request.stream():
            received += len(chunk)
            if received > limit:
                raise PayloadTooLarge(limit)
            for part in parser.feed(chunk):
                await gate.acquire()  # back-pressure: read no further while ingest is busy
                tasks.append(asyncio.create_task(ingest(part)))
        parser.close()
    except MalformedMultipart as exc:
        await _settle(tasks)
        raise BadRequest(f"malformed multipart body: {exc}") from None
    except ClientDisconnect:
        parser.abort()
        await _settle(tasks)
        log.info("STOW-RS client went away after %d parts", len(tasks))
        return Response(status_code=400)
    except BaseException:
        parser.abort()
        await _settle(tasks)
        raise
    if not tasks:
        raise BadRequest("the request holds no instances")
    outcomes = [await t for t in tasks]
    return _response(outcomes, dicomweb_base(request))


async def _settle(tasks: list[asyncio.Task[PartOutcome]]) -> None:
    """Let parts already handed to ingest finish, whatever happens to the request."""
    if tasks:
        await asyncio.gather(*tasks, return_exceptions=True)


def _spool_dir(archive: Archive) -> Path:
    path = archive.settings.spool_dir
    path.mkdir(parents=True, exist_ok=True)
    return path


def _store_part(archive: Archive, part: Part, study: str | None, scope: AccessScope,
                job: PluginJob | None) -> PartOutcome:
    """Ingest one part (in a worker thread); the spooled body is removed afterwards. What a hosted
    plugin stores with its job token is recorded as its job's output first."""
    try:
        if part.content_type.media_type != DICOM:
            return PartOutcome("", "", "", "", CANNOT_UNDERSTAND,
                               f"part {part.index} has media type {part.content_type.media_type!r}, not {DICOM}")
        header = _precheck(part, study, scope)
        if isinstance(header, PartOutcome):
            return header
        if job is not None and header is not None:
            sop_class = str(header.get("SOPClassUID", "") or "")
            record_vendor_upload(archive.engine, job.job_id, StoredResult(
                kind_of(sop_class), str(header.get("SOPInstanceUID", "") or ""),
                str(header.get("SeriesInstanceUID", "") or ""), sop_class))  # fmt: skip
        partition = archive.partitions.by_id(scope.partition) or archive.partitions.default
        result = archive.ingest.store_source(part.source(), partition)
        return _outcome(result)
    finally:
        part.discard()


def _precheck(part: Part, study: str | None, scope: AccessScope) -> PartOutcome | Dataset | None:
    """Refuse a part before storing it: a transfer syntax that is unknown or not the one the part
    declares (0xC122), an instance of another study than the URL's (0xA900, PS3.18 10.5.1), or of
    a study outside the caller's scope (0x0124, not authorized). Otherwise its identifying header,
    or None when it cannot be read (ingest then says precisely why)."""
    try:
        with part.source().open() as fh:
            ds = pydicom.dcmread(fh, stop_before_pixels=True,
                                 specific_tags=["StudyInstanceUID", "SeriesInstanceUID", "SOPClassUID",
                                                "SOPInstanceUID", "PatientID", "IssuerOfPatientID"])  # fmt: skip
    except Exception:  # unreadable: ingest says precisely why
        return None
    found = str(ds.get("StudyInstanceUID", "") or "")

    def failed(reason: int, text: str) -> PartOutcome:
        return PartOutcome(str(ds.get("SOPClassUID", "") or ""), str(ds.get("SOPInstanceUID", "") or ""), found,
                           str(ds.get("SeriesInstanceUID", "") or ""), reason, text)

    meta = getattr(ds, "file_meta", None)
    stored_ts = str(meta.get("TransferSyntaxUID", "") or "") if meta is not None else ""
    declared = part.content_type.transfer_syntax
    if stored_ts and stored_ts not in _KNOWN_TRANSFER_SYNTAXES:
        return failed(TRANSFER_SYNTAX_NOT_SUPPORTED, f"transfer syntax {stored_ts[:64]!r} is not supported")
    if declared and stored_ts and declared != stored_ts:
        return failed(TRANSFER_SYNTAX_NOT_SUPPORTED,
                      f"the part declares transfer syntax {declared[:64]!r} but is encoded in {stored_ts}")
    if study is not None and found != study:
        return failed(DATA_SET_DOES_NOT_MATCH, f"StudyInstanceUID {found[:64]!r} differs from the study in the URL")
    if not scope.allows(found, str(ds.get("PatientID", "") or ""), str(ds.get("IssuerOfPatientID", "") or "")):
        return failed(NOT_AUTHORIZED, "the instance belongs to a study outside those you may store into")
    return ds


def _outcome(result: IngestResult) -> PartOutcome:
    failure = None if result.outcome in (Outcome.STORED, Outcome.REPLACED, Outcome.DUPLICATE) \
        else _FAILURE_OF_OUTCOME.get(result.outcome, PROCESSING_FAILURE)
    return PartOutcome(result.sop_class_uid or "", result.sop_instance_uid or "", result.study_instance_uid or "",
                       result.series_instance_uid or "", failure, result.reason)


def _ui(value: str) -> dict[str, Any]:
    return {"vr": "UI", "Value": [value]} if value else {"vr": "UI"}


def _response(outcomes: list[PartOutcome], base: str) -> Response:
    stored = [o for o in outcomes if o.failure is None]
    failed = [o for o in outcomes if o.failure is not None]
    body: dict[str, Any] = {}
    studies = {o.study_uid for o in stored}
    if len(studies) == 1:
        body["00081190"] = {"vr": "UR", "Value": [f"{base}studies/{next(iter(studies))}"]}
    if failed:
        body["00081198"] = {"vr": "SQ", "Value": [
            {"00081150": _ui(o.sop_class_uid), "00081155": _ui(o.sop_uid),
             "00081197": {"vr": "US", "Value": [o.failure]}}
            for o in failed
        ]}  # fmt: skip
    if stored:
        body["00081199"] = {"vr": "SQ", "Value": [
            {"00081150": _ui(o.sop_class_uid), "00081155": _ui(o.sop_uid),
             "00081190": {"vr": "UR",
                          "Value": [f"{base}studies/{o.study_uid}/series/{o.series_uid}/instances/{o.sop_uid}"]}}
            for o in stored
        ]}  # fmt: skip
    if not failed:
        status = 200
    elif stored:
        status = 202
    elif all(o.failure == OUT_OF_RESOURCES for o in failed):
        status = 503
    else:
        status = 409
    headers = {"X-Content-Type-Options": "nosniff"}
    if failed:
        # PS3.18 8.6.1.1: a human-readable reason in a Warning header.
        text = "; ".join(dict.fromkeys(o.reason.replace('"', "'") for o in failed if o.reason))
        headers["Warning"] = f'299 cloudfilm "{_latin1(text[:400])}"'
        for o in failed:
            log.info("STOW-RS failed %s: %s (0x%04X)", o.sop_uid or "part", o.reason, o.failure)
    if status == 503:
        headers["Retry-After"] = str(RETRY_AFTER_S)
    return Response(dumps(body), status_code=status, media_type=DICOM_JSON, headers=headers)


def _latin1(text: str) -> str:
    """Header-safe text: ASCII only (a reason may quote bytes a sender put in a UID), one line."""
    return text.encode("ascii", "replace").decode("ascii").replace("\r", " ").replace("\n", " ")
