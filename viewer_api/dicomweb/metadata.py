"""WADO-RS metadata (PS3.18 10.4.1.1.2): DICOM JSON of a study, series or instance, from the index only.

The JSON of every instance was written once at ingest; a request joins the stored strings and
makes their BulkDataURIs absolute without parsing them, so a 1,000-instance study costs one
index query and no object read. An ETag lets viewers revalidate for free (304).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from pacs.access import AccessScope
from pacs.retrieve import instance_metadata
from viewer_api.access import current_scope
from viewer_api.auth.access import STUDY_READERS
from viewer_api.auth.http_audit import VIEW_METADATA
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.dicomweb.encoding import escape_markup, json_media_type, json_response
from viewer_api.dicomweb.params import dicomweb_base, uid

router = APIRouter(tags=["DICOMweb"], route_class=DeclaredRoute)
_BULK_KEY = '"BulkDataURI":"'


def metadata_body(rows: list[str], base: str) -> bytes:
    """A JSON array of the stored instance documents, BulkDataURIs made absolute under ``base``."""
    joined = escape_markup("[" + ",".join(rows) + "]")
    return joined.replace(_BULK_KEY, _BULK_KEY + base).encode("utf-8")


async def _metadata(request: Request, scope: AccessScope, study: str, series: str | None,
                    instance: str | None) -> Response:  # fmt: skip
    study = uid(study, "StudyInstanceUID")
    series = uid(series, "SeriesInstanceUID") if series is not None else None
    instance = uid(instance, "SOPInstanceUID") if instance is not None else None
    media_type = json_media_type(request)
    archive = archive_of(request)
    base = dicomweb_base(request)

    def build() -> Response:
        rows = instance_metadata(archive.engine, scope, study_uid=study, series_uid=series, sop_uid=instance)
        return json_response(request, metadata_body(rows, base), media_type, etag=True)

    return await asyncio.to_thread(build)


@router.get("/studies/{study}/metadata", summary="Metadata of every instance of a study (WADO-RS)",
            dependencies=[Depends(STUDY_READERS.audited(VIEW_METADATA))])
async def study_metadata(study: str, request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    return await _metadata(request, scope, study, None, None)


@router.get("/studies/{study}/series/{series}/metadata", summary="Metadata of every instance of a series",
            dependencies=[Depends(STUDY_READERS)])
async def series_metadata(study: str, series: str, request: Request,
                          scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _metadata(request, scope, study, series, None)


@router.get("/studies/{study}/series/{series}/instances/{instance}/metadata", summary="Metadata of an instance",
            dependencies=[Depends(STUDY_READERS)])
async def instance_metadata_route(study: str, series: str, instance: str, request: Request,
                                  scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _metadata(request, scope, study, series, instance)
