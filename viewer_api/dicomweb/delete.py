"""DELETE of a study, series or instance, as the DICOMweb servers of dcm4chee, Orthanc and Microsoft
offer it (PS3.18 defines no delete transaction): index rows, then objects, via :mod:`pacs.delete`.
Turned off with ``CLOUDFILM_DICOMWEB_DELETE=false`` (then 405).
"""

from __future__ import annotations

import asyncio

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from pacs.access import AccessScope
from pacs.delete import delete_instances
from viewer_api.access import current_scope
from viewer_api.auth.access import ADMIN_DELETE
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.dicomweb.params import uid

router = APIRouter(tags=["DICOMweb"], route_class=DeclaredRoute,
                   dependencies=[Depends(ADMIN_DELETE)])
_INSTANCE = "/studies/{study}/series/{series}/instances/{instance}"


async def _delete(request: Request, scope: AccessScope, study: str, series: str | None,
                  instance: str | None) -> Response:  # fmt: skip
    archive = archive_of(request)
    if not archive.settings.dicomweb_delete:
        raise MethodNotAllowed("GET, HEAD, POST" if series is None else "GET, HEAD")
    study = uid(study, "StudyInstanceUID")
    series = uid(series, "SeriesInstanceUID") if series is not None else None
    instance = uid(instance, "SOPInstanceUID") if instance is not None else None
    await asyncio.to_thread(delete_instances, archive.engine, archive.store, scope, study_uid=study,
                            series_uid=series, sop_uid=instance)  # fmt: skip
    return Response(status_code=204)


class MethodNotAllowed(HTTPException):
    def __init__(self, allow: str) -> None:
        super().__init__(405, "deleting is disabled on this archive", headers={"Allow": allow})


@router.delete("/studies/{study}", summary="Delete a study", status_code=204)
async def delete_study(study: str, request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    return await _delete(request, scope, study, None, None)


@router.delete("/studies/{study}/series/{series}", summary="Delete a series", status_code=204)
async def delete_series(study: str, series: str, request: Request,
                        scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _delete(request, scope, study, series, None)


@router.delete(_INSTANCE, summary="Delete an instance", status_code=204)
async def delete_instance(study: str, series: str, instance: str, request: Request,
                          scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _delete(request, scope, study, series, instance)
