"""The findings panel's content: a study's TID 1500 SRs as the caller may see them, with their reviews.

The study's SR instances are located through the one retrieve path with the caller's scope (a
study outside it answers 404, as everywhere), read from storage and reduced by
:mod:`ai_plugins.sr.overlay`; 3D regions are placed on slices from the image planes in the stored
instance metadata, never from the images themselves. Staff get the AI's findings, each with the
physician's current decision on it (the review documents themselves are not listed again);
patients and share visitors, whose scope holds only the released review documents, get those,
marked reviewed. Nothing is cached between requests.
"""

from __future__ import annotations

import io
import json
import logging
from datetime import datetime

import pydicom
from pydantic import BaseModel
from pydicom.errors import InvalidDicomError

from ai_plugins.review.decisions import current_reviews, review_documents
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
from ai_plugins.sr.review import REVIEW_CONCEPT
from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.retrieve import find_instances, instance_metadata, open_instance

log = logging.getLogger(__name__)


class FindingReview(BaseModel):
    """The current physician decision on an AI finding (staff only)."""

    decision: str  # accepted | rejected | edited
    label: str
    reviewer: str
    at: datetime
    changes: dict[str, list[object]]


class PanelFinding(OverlayFinding):
    review: FindingReview | None = None


class StudyFindings(BaseModel):
    """The findings panel's content: newest report first (see ``viewer_api/static/viewer.js``)."""

    findings: list[PanelFinding]


def _reports(archive: Archive, scope: AccessScope, study_uid: str) -> tuple[list[Report], dict[str, str]]:
    """The study's readable Measurement Reports and its SOP → series map (NotFound outside the scope)."""
    instances = find_instances(archive.engine, scope, study_uid=study_uid)
    reports: list[Report] = []
    for stored in instances:
        if stored.sop_class_uid not in SR_STORAGE_CLASSES:
            continue
        try:
            with open_instance(archive.store, stored) as fh:  # an S3 object's stream cannot seek
                report = read_report(pydicom.dcmread(io.BytesIO(fh.read())))
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


def _without_decision(text: str) -> str:
    """A released finding's text without the review's own evaluation (every released one is accepted)."""
    prefix = f"{REVIEW_CONCEPT.meaning}:"
    return " · ".join(part for part in text.split(" · ") if not part.startswith(prefix))


def study_findings(archive: Archive, scope: AccessScope, study_uid: str) -> StudyFindings:
    """What the study's SRs say, placed on its images.

    A scope that withholds result objects (patients, share visitors) reads only the SRs released to
    it, the documents of findings a physician accepted: each is its own current finding, marked
    reviewed. Others read the AI's reports, each finding with its current review, if any.
    """
    reports, series_of = _reports(archive, scope, study_uid)
    patient_facing = scope.withhold_results
    if not patient_facing:
        documents = review_documents(archive.engine, study_uid)
        reports = [r for r in reports if r.sop_uid not in documents]
    wanted = geometry_series(reports, series_of)
    known = set(series_of.values())
    series = None if wanted is None else [s for s in wanted if s in known]
    planes = _planes(archive, scope, study_uid, None if wanted and not series else series)
    if patient_facing:  # one released document per finding: none supersedes another
        rows = [r for report in reports for r in overlay_findings([report], planes, series_of)]
        return StudyFindings(findings=[PanelFinding(**r.model_dump() | {
            "reviewed": True, "plugin": REVIEWED_BY, "text": _without_decision(r.text)}) for r in rows])  # fmt: skip
    decided = {(v.report_uid, v.finding_key): v for v in current_reviews(archive.engine, [study_uid])}
    out: list[PanelFinding] = []
    for r in overlay_findings(reports, planes, series_of):
        v = decided.get((r.report_uid, r.finding_key))
        review = None if v is None else FindingReview(decision=v.decision, label=v.label, reviewer=v.reviewer,
                                                      at=v.created_at, changes=v.changes)  # fmt: skip
        out.append(PanelFinding(**r.model_dump(), review=review))
    return StudyFindings(findings=out)
