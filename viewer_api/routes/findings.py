"""The viewer's AI findings: ``GET /api/studies/{uid}/findings`` from the study's TID 1500 SRs.

The study's SR instances are located through the one retrieve path with the caller's scope (a
study outside it answers 404, as everywhere), read from storage and reduced by
:mod:`ai_plugins.sr.overlay`; 3D regions are placed on slices from the image planes in the stored
instance metadata, never from the images themselves. Nothing is cached between requests. Like the
frames the viewer shows, this is part of the viewer page, whose opening is already audited.
"""

from __future__ import annotations

import json
import logging

import pydicom
from fastapi import APIRouter, Depends, Request, Response
from pydantic import BaseModel
from pydicom.errors import InvalidDicomError

from ai_plugins.sr.overlay import (
    SR_STORAGE_CLASSES,
    ImagePlane,
    OverlayFinding,
    Report,
    geometry_series,
    overlay_findings,
    planes_from_metadata,
    read_report,
)
from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.retrieve import find_instances, instance_metadata, open_instance
from viewer_api.access import current_scope
from viewer_api.auth.access import ACCOUNTS_AND_SHARES
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["findings"], route_class=DeclaredRoute, dependencies=[Depends(ACCOUNTS_AND_SHARES)])
log = logging.getLogger(__name__)


class StudyFindings(BaseModel):
    """The findings panel's content: newest report first (see ``viewer_api/static/viewer.js``)."""

    findings: list[OverlayFinding]


def _reports(archive: Archive, scope: AccessScope, study_uid: str) -> tuple[list[Report], dict[str, str]]:
    """The study's readable Measurement Reports and its SOP → series map (NotFound outside the scope)."""
    instances = find_instances(archive.engine, scope, study_uid=study_uid)
    reports: list[Report] = []
    for stored in instances:
        if stored.sop_class_uid not in SR_STORAGE_CLASSES:
            continue
        try:
            with open_instance(archive.store, stored) as fh:
                report = read_report(pydicom.dcmread(fh))
        except (InvalidDicomError, OSError, ValueError, NotFound) as exc:  # one bad SR hides only itself
            log.warning("SR %s could not be read: %s", stored.sop_uid, exc)
            continue
        if report is not None:
            reports.append(report)
    return reports, {i.sop_uid: i.series_uid for i in instances}


def _planes(archive: Archive, scope: AccessScope, study_uid: str, series: list[str] | None) -> list[ImagePlane]:
    texts: list[str] = []
    if series is None:
        texts = instance_metadata(archive.engine, scope, study_uid=study_uid)
    else:
        for uid in series:
            texts += instance_metadata(archive.engine, scope, study_uid=study_uid, series_uid=uid)
    return [plane for text in texts for plane in planes_from_metadata(json.loads(text))]


REVIEWED_BY = "Reviewed by a physician"


def study_findings(archive: Archive, scope: AccessScope, study_uid: str) -> StudyFindings:
    """What the study's SRs say, placed on its images.

    A scope that withholds result objects (patients, share visitors) reads only the SRs released to
    it, the documents of findings a physician accepted: each of its rows is marked reviewed.
    """
    reports, series_of = _reports(archive, scope, study_uid)
    wanted = geometry_series(reports, series_of)
    known = set(series_of.values())
    series = None if wanted is None else [s for s in wanted if s in known]
    planes = _planes(archive, scope, study_uid, None if wanted and not series else series)
    rows = overlay_findings(reports, planes, series_of)
    if scope.withhold_results:
        rows = [r.model_copy(update={"reviewed": True, "plugin": REVIEWED_BY}) for r in rows]
    return StudyFindings(findings=rows)


@router.get("/api/studies/{study_uid}/findings", response_model=StudyFindings,
            summary="AI findings of a study, from its TID 1500 SRs, in image coordinates")  # fmt: skip
def findings(request: Request, response: Response, study_uid: str,
             scope: AccessScope = Depends(current_scope)) -> StudyFindings:  # fmt: skip
    """Every finding of every Measurement Report SR in the study (an empty list when there is none)."""
    response.headers["Cache-Control"] = "no-store"
    return study_findings(archive_of(request), scope, study_uid)
