"""WADO-URI (PS3.18 9): ``GET /wado?requestType=WADO&studyUID=…&seriesUID=…&objectUID=…``.

``contentType=application/dicom`` returns the stored object (or Explicit/Implicit VR Little
Endian with ``transferSyntax``); ``image/jpeg`` (the default), ``image/png`` and ``image/gif``
render through the same pipeline as WADO-RS rendered, with ``frameNumber``, ``windowCenter``,
``windowWidth``, ``rows``, ``columns``, ``region`` and ``imageQuality``.
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from pacs.access import AccessScope
from viewer_api.access import current_scope
from viewer_api.auth.access import ACCOUNTS_AND_SHARES
from viewer_api.auth.http_audit import WADO_URI
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.dicomweb.media import (
    DICOM,
    RENDERED_TYPES,
    BadRequest,
    MediaRange,
    NotAcceptable,
    parse_accept,
    type_matches,
)
from viewer_api.dicomweb.params import int_param, uid
from viewer_api.dicomweb.pixels import locate
from viewer_api.dicomweb.rendered import MAX_VIEWPORT, RenderOptions, Viewport, Window, parse_quality, render
from viewer_api.dicomweb.wado import RetrievePlan, plan, retrieve_response

router = APIRouter(tags=["WADO-URI"], route_class=DeclaredRoute,
                   dependencies=[Depends(ACCOUNTS_AND_SHARES.audited(WADO_URI))])


def _content_type(value: str | None) -> str:
    """The first supported type of the ``contentType`` list (PS3.18 9.1.2.1.3); JPEG by default."""
    if not value:
        return "image/jpeg"
    for rng in parse_accept(value):
        if rng.media_type == DICOM:
            return DICOM
        for candidate in RENDERED_TYPES:
            if type_matches(rng.media_type, candidate):
                return candidate
    raise NotAcceptable("contentType must be application/dicom, image/jpeg, image/png or image/gif")


def _window(center: str | None, width: str | None) -> Window | None:
    if center is None and width is None:
        return None
    if center is None or width is None:
        raise BadRequest("windowCenter and windowWidth go together")
    try:
        c, w = float(center), float(width)
    except ValueError:
        raise BadRequest("windowCenter and windowWidth must be numbers") from None
    if w <= 0:
        raise BadRequest("windowWidth must be positive")
    return Window(c, w)


def _region(text: str | None) -> tuple[float, float, float, float] | None:
    if not text:
        return None
    try:
        x1, y1, x2, y2 = (float(v) for v in text.split(","))
    except ValueError:
        raise BadRequest("region must be four numbers x1,y1,x2,y2 between 0 and 1") from None
    if not (0 <= x1 < x2 <= 1 and 0 <= y1 < y2 <= 1):
        raise BadRequest("region must be four numbers x1,y1,x2,y2 between 0 and 1")
    return x1, y1, x2, y2


@router.get("/wado", summary="WADO-URI: one instance as DICOM or as an image")
async def wado_uri(request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    q = request.query_params
    if q.get("requestType") != "WADO":
        raise BadRequest("requestType must be WADO")
    study = uid(q.get("studyUID") or "", "studyUID")
    series = uid(q.get("seriesUID") or "", "seriesUID")
    sop = uid(q.get("objectUID") or "", "objectUID")
    content_type = _content_type(q.get("contentType"))
    archive = archive_of(request)

    if content_type == DICOM:
        wanted = q.get("transferSyntax")
        target = uid(wanted, "transferSyntax") if wanted else None

        def fetch() -> Response:
            stored = locate(archive, scope, study, series, sop)
            how = plan([MediaRange(DICOM, {"transfer-syntax": target} if target else {})], [stored])
            return retrieve_response(archive, [stored], RetrievePlan(False, how.target))

        return await asyncio.to_thread(fetch)

    rows = int_param(q.get("rows"), "rows", 0, 1, MAX_VIEWPORT)
    columns = int_param(q.get("columns"), "columns", 0, 1, MAX_VIEWPORT)
    viewport = Viewport(columns or MAX_VIEWPORT, rows or MAX_VIEWPORT) if rows or columns else None
    frame = q.get("frameNumber")
    frames = [int_param(frame, "frameNumber", 1, 1, 10**6)] if frame else None
    opts = RenderOptions(content_type, _window(q.get("windowCenter"), q.get("windowWidth")), viewport,
                         parse_quality(q.get("imageQuality")), _region(q.get("region")))  # fmt: skip

    def draw() -> bytes:
        return render(archive, scope, locate(archive, scope, study, series, sop), frames, opts)

    body = await asyncio.to_thread(draw)
    return Response(body, media_type=content_type, headers={"X-Content-Type-Options": "nosniff"})
