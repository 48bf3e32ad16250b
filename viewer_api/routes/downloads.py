"""Downloads of one study: the film sheet (PNG, PDF) and a ZIP with a DICOMDIR.

Allowed to staff, to the patient who owns the study, and to a share visitor whose link allows
downloads; a study outside the caller's scope does not exist (404).
"""

from __future__ import annotations

import os
import re

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from starlette.background import BackgroundTask

from pacs.accounts.audit import Action
from pacs.accounts.principal import Principal, may_download, scope_for
from pacs.errors import InvalidQuery
from viewer_api.auth.access import Viewer
from viewer_api.auth.dependencies import audit
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.dicomweb.rendered import parse_window
from viewer_api.viewer.film import MAX_IMAGES, FilmRequest, make_film
from viewer_api.viewer.model import StudyHeader, study_header, study_view
from viewer_api.viewer.study_zip import write_study_zip

router = APIRouter(tags=["downloads"], route_class=DeclaredRoute)
_IMAGE = re.compile(r"^([0-9.]{1,64})(?::([0-9]{1,6}))?$")


def _allowed(request: Request, principal: Principal, study_uid: str) -> StudyHeader:
    header = study_header(archive_of(request).engine, scope_for(principal), study_uid)  # 404 when not visible
    if not may_download(principal, study_uid, header.patient_id, header.issuer):
        raise HTTPException(403, "this link does not allow downloads")
    return header


def _filename(header: StudyHeader, suffix: str) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]+", "_", f"{header.patient_id}_{header.study_date}") or "study"
    return f"{base.strip('_')}.{suffix}"


def _images(text: str | None) -> tuple[tuple[str, int], ...]:
    if not text:
        return ()
    out: list[tuple[str, int]] = []
    for piece in text.split(","):
        match = _IMAGE.match(piece.strip())
        if not match:
            raise InvalidQuery("images is a comma-separated list of SOPInstanceUID[:frame]")
        out.append((match.group(1), int(match.group(2) or 1)))
    if len(out) > MAX_IMAGES:
        raise InvalidQuery(f"a film sheet holds at most {MAX_IMAGES} images")
    return tuple(out)


@router.get("/api/studies/{study_uid}/film.{kind}", summary="Film sheet of a study (PNG or PDF)")
async def film(
    principal: Viewer, request: Request, study_uid: str, kind: str,
    series: str | None = Query(None, description="SeriesInstanceUID (default: the first series with images)"),
    images: str | None = Query(None, description="SOPInstanceUID[:frame],... (default: evenly sampled)"),
    count: int = Query(12, ge=1, le=MAX_IMAGES), columns: int = Query(3, ge=1, le=8),
    window: str | None = Query(None, description="center,width (default: the images' own window)"),
) -> Response:
    if kind not in ("png", "pdf"):
        raise HTTPException(404, "film sheets are film.png or film.pdf")
    req = FilmRequest(series_uid=series, images=_images(images), count=count, columns=columns,
                      window=parse_window(window), kind="pdf" if kind == "pdf" else "png")
    archive = archive_of(request)

    def work() -> tuple[bytes, StudyHeader]:
        header = _allowed(request, principal, study_uid)
        scope = scope_for(principal)
        body = make_film(archive, scope, study_view(archive.engine, scope, study_uid), req)
        audit(request, Action.DOWNLOAD, study_uid=study_uid, patient_id=header.patient_id, detail=f"film.{kind}")
        return body, header

    body, header = await run_in_threadpool(work)
    media = "application/pdf" if kind == "pdf" else "image/png"
    disposition = "attachment" if request.query_params.get("download") else "inline"
    return Response(body, media_type=media, headers={
        "Content-Disposition": f'{disposition}; filename="film_{_filename(header, kind)}"',
        "Cache-Control": "private, no-store"})


@router.get("/api/studies/{study_uid}/archive.zip", summary="The study's DICOM files with a DICOMDIR, as ZIP")
async def study_zip(principal: Viewer, request: Request, study_uid: str) -> Response:
    archive = archive_of(request)

    def work() -> tuple[str, StudyHeader]:
        header = _allowed(request, principal, study_uid)
        path = write_study_zip(archive, scope_for(principal), study_uid)
        audit(request, Action.DOWNLOAD, study_uid=study_uid, patient_id=header.patient_id, detail="archive.zip")
        return str(path), header

    path, header = await run_in_threadpool(work)
    return FileResponse(path, media_type="application/zip", filename=_filename(header, "zip"),
                        headers={"Cache-Control": "private, no-store"}, background=BackgroundTask(os.unlink, path))
