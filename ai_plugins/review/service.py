"""Recording a physician's decision on an AI finding, and what follows from the decisions.

:func:`review_finding` takes a decision on one finding of an AI report the physician can see,
writes the review SR (:mod:`ai_plugins.sr.review`) through the one ingest path, then records the
decision; an SR stored without its row is never released, so a crash between the two leaves
nothing shown to patients. The newest decision per finding is current (older ones stay, its
history). :func:`release_reviewed` hands patients and share visitors the current review SRs of
accepted and edited findings (``CLOUDFILM_PATIENT_AI=reviewed``), :func:`plugin_review_counts`
counts outcomes per plugin version, :func:`study_review_status` feeds the worklist.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import pydicom
from pydantic import BaseModel, ConfigDict, Field, field_validator
from pydicom.dataset import Dataset
from sqlalchemy import Engine, func, insert, select

from ai_plugins.review.decisions import ReviewView, current_reviews, review_documents, view_of
from ai_plugins.review.findings import study_findings
from ai_plugins.review.models import AiReview
from ai_plugins.runner.models import PluginResult
from ai_plugins.sr.overlay import OverlayFinding
from ai_plugins.sr.review import ReviewedFinding, build_review_document, label_code
from pacs.access import AccessScope
from pacs.accounts.principal import Principal, scope_for
from pacs.archive import Archive
from pacs.errors import Conflict, InvalidQuery, NotFound, StorageUnavailable
from pacs.index.db import utcnow
from pacs.index.models import Study
from pacs.jobs import write_transaction
from pacs.reports.service import CitedFinding, signed_studies
from pacs.retrieve import find_instances, open_instance

Decision = Literal["accepted", "rejected", "edited"]
RELEASED_DECISIONS = ("accepted", "edited")


class ReviewRequest(BaseModel):
    """One decision: ``edited`` needs at least one of label, centre, diameter."""

    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)

    report_uid: str = Field(min_length=1, max_length=64)
    finding_key: str = Field(min_length=1, max_length=128)
    decision: Decision
    label: str | None = Field(default=None, min_length=1, max_length=64)
    centre: tuple[float, float] | None = None  # column, row on the finding's image (pixels)
    diameter_mm: float | None = Field(default=None, gt=0, le=2000)

    @field_validator("label")
    @classmethod
    def _code_meaning(cls, value: str | None) -> str | None:
        """A label becomes a DICOM Code Meaning (LO): printable text without backslash, not blank."""
        if value is None:
            return None
        value = value.strip()
        if not value or "\\" in value or not value.isprintable():
            raise ValueError("a label is printable text without backslashes")
        return value


# --- recording ----------------------------------------------------------------------------------


def _circle(row: OverlayFinding) -> tuple[tuple[float, float], float] | None:
    """Centre and radius (pixels) of a finding drawn as a circle."""
    if row.shape != "circle" or len(row.points) != 2:
        return None
    (cx, cy), (ex, ey) = row.points
    return (cx, cy), math.dist((cx, cy), (ex, ey))


def _diameter(row: OverlayFinding) -> float | None:
    for m in row.measurements:
        if "diameter" in m.name.lower() and m.unit == "mm":
            return m.value
    return None


def _reviewed(row: OverlayFinding, request: ReviewRequest,
              image: Dataset | None) -> tuple[ReviewedFinding, dict[str, list[object]]]:  # fmt: skip
    """The finding as the physician leaves it, and what they changed ({field: [AI's, physician's]})."""
    changes: dict[str, list[object]] = {}
    edit = request.decision == "edited"
    code = row.code or label_code(row.label)
    if edit and request.label is not None and request.label != row.label:
        changes["label"] = [row.label, request.label]
        code = label_code(request.label)
    diameter = _diameter(row)
    if edit and request.diameter_mm is not None and request.diameter_mm != diameter:
        changes["diameter_mm"] = [diameter, request.diameter_mm]
        diameter = request.diameter_mm
    graphic: Literal["POINT", "CIRCLE", "POLYLINE"] | None = None
    points: list[tuple[float, float]] = [tuple(p) for p in row.points]  # type: ignore[misc]
    circle = _circle(row)
    if circle is not None:
        (cx, cy), radius = circle
        if diameter is not None and image is not None and "PixelSpacing" in image:
            radius = diameter / 2 / float(image.PixelSpacing[1])
        if edit and request.centre is not None and tuple(request.centre) != (cx, cy):
            changes["centre"] = [[cx, cy], list(request.centre)]
            cx, cy = request.centre
        graphic, points = "CIRCLE", [(cx, cy), (cx + radius, cy)]
    elif row.shape in ("polygon", "polyline") and points:
        if edit and request.centre is not None:
            mx, my = sum(p[0] for p in points) / len(points), sum(p[1] for p in points) / len(points)
            dx, dy = request.centre[0] - mx, request.centre[1] - my
            if (dx, dy) != (0, 0):
                changes["centre"] = [[mx, my], list(request.centre)]
                points = [(x + dx, y + dy) for x, y in points]
        graphic = "POLYLINE"
        if row.shape == "polygon":
            points = [*points, points[0]]
    elif row.shape == "point" and points:
        graphic = "POINT"
        if edit and request.centre is not None and tuple(request.centre) != points[0]:
            changes["centre"] = [list(points[0]), list(request.centre)]
            points = [tuple(request.centre)]  # type: ignore[list-item]
    elif edit and request.centre is not None:
        raise InvalidQuery("this finding has no location on an image to move")
    if edit and request.centre is not None and image is not None:
        x, y = request.centre
        if not (0 <= x <= int(image.get("Columns", 0)) and 0 <= y <= int(image.get("Rows", 0))):
            raise InvalidQuery("the new location lies outside the image")
    if edit and not changes:
        raise InvalidQuery("an edit must change the label, the location or the size")
    if graphic is not None and image is None:
        raise InvalidQuery("the finding's image is not in the study")
    reviewed = ReviewedFinding(
        decision=request.decision, tracking_id=(row.tracking_id or row.label)[:64], code=code,
        image=image if graphic is not None else None, frame=row.frame, graphic_type=graphic, points=points,
        diameter_mm=diameter,
    )  # fmt: skip
    return reviewed, changes


def _read(archive: Archive, scope: AccessScope, study_uid: str, sop_uid: str, *, header_only: bool) -> Dataset:
    [stored] = find_instances(archive.engine, scope, study_uid=study_uid, sop_uid=sop_uid)
    with open_instance(archive.store, stored) as fh:
        return pydicom.dcmread(io.BytesIO(fh.read()), stop_before_pixels=header_only)


def review_finding(archive: Archive, principal: Principal, study_uid: str, request: ReviewRequest, *,
                   reviewer_name: str, institution_name: str | None) -> ReviewView:  # fmt: skip
    """Record ``principal``'s decision on one AI finding of ``study_uid`` (NotFound: no such finding)."""
    scope = scope_for(principal)
    if request.report_uid in review_documents(archive.engine, study_uid):
        raise Conflict("that report is a physician's review, not an AI finding")
    panel = study_findings(archive, scope, study_uid).findings
    row = next((r for r in panel if r.report_uid == request.report_uid and r.finding_key == request.finding_key), None)
    if row is None:
        raise NotFound("there is no such AI finding in this study")
    image = _read(archive, scope, study_uid, row.sop_uid, header_only=True) if row.sop_uid else None
    ai_report = _read(archive, scope, study_uid, request.report_uid, header_only=False)
    reviewed, changes = _reviewed(row, request, image)
    document = build_review_document(reviewed, ai_report, reviewer=reviewer_name, institution_name=institution_name)
    buffer = io.BytesIO()
    document.save_as(buffer, enforce_file_format=True)
    result = archive.ingest.store_bytes(buffer.getvalue(), label=f"AI review by {principal.username}")
    if not result.ok:
        raise StorageUnavailable(f"the review could not be stored: {result.reason}")
    name, _, version = row.plugin.partition("@")
    label = changes["label"][1] if "label" in changes else row.label
    with write_transaction(archive.engine) as conn:
        inserted = conn.execute(insert(AiReview).values(
            study_uid=study_uid, report_uid=request.report_uid, finding_key=request.finding_key,
            plugin_name=name[:64], plugin_version=version[:64], decision=request.decision, label=str(label)[:64],
            changes_json=json.dumps(changes), reviewer=principal.username[:64],
            review_sr_uid=str(document.SOPInstanceUID), created_at=utcnow(),
        ))  # fmt: skip
        key = inserted.inserted_primary_key
        assert key is not None
        saved = conn.execute(select(AiReview).where(AiReview.id == key[0])).one()
    return view_of(AiReview(**saved._mapping))


# --- what follows from the decisions ------------------------------------------------------------


def release_reviewed(engine: Engine, principal: Principal, patient_ai: str) -> Principal:
    """A patient or share visitor, with the current review SRs of accepted and edited findings of
    its studies released to it (nothing when ``patient_ai`` is ``none``); anyone else as it is."""
    if not principal.sees_released_results_only or principal.job is not None or patient_ai != "reviewed":
        return principal
    scope = scope_for(principal)
    with engine.connect() as conn:
        visible = list(conn.execute(select(Study.study_uid).where(scope.study_filter())).scalars())
    released = {r.review_sr_uid for r in current_reviews(engine, visible) if r.decision in RELEASED_DECISIONS}
    return dataclasses.replace(principal, released_sop_uids=principal.released_sop_uids | released)


class ReviewCounts(BaseModel):
    """Outcomes of the physicians' current decisions on one plugin version's findings."""

    plugin: str
    version: str
    accepted: int
    rejected: int
    edited: int
    reviewed: int


def plugin_review_counts(engine: Engine, name: str, version: str) -> ReviewCounts:
    newest = (select(func.max(AiReview.id)).where(AiReview.plugin_name == name, AiReview.plugin_version == version)
              .group_by(AiReview.report_uid, AiReview.finding_key))  # fmt: skip
    with engine.connect() as conn:
        counts = dict(conn.execute(select(AiReview.decision, func.count()).where(AiReview.id.in_(newest))
                                   .group_by(AiReview.decision)).all())  # fmt: skip
    values = {k: int(counts.get(k, 0)) for k in ("accepted", "rejected", "edited")}
    return ReviewCounts(plugin=name, version=version, reviewed=sum(values.values()), **values)


@dataclass(frozen=True, slots=True)
class StudyAiStatus:
    """The worklist's AI columns for one study."""

    ai_done: bool
    flagged: bool
    reviewed: bool
    reported: bool = False  # a physician's (or a RIS's) report is signed


def study_review_status(engine: Engine, study_uids: Sequence[str], flag_threshold: float) -> dict[str, StudyAiStatus]:
    """Per study: AI results stored, flagged (a finding, or a classification at least ``flag_threshold``
    probable, in a plugin's results), reviewed (a physician decided on at least one finding) and
    reported (a signed report)."""
    uids = sorted(set(study_uids))
    if not uids:
        return {}
    with engine.connect() as conn:
        results = conn.execute(select(PluginResult.study_uid, PluginResult.summary_json)
                               .where(PluginResult.study_uid.in_(uids), PluginResult.kind == "SR")).all()  # fmt: skip
        reviewed = set(conn.execute(select(AiReview.study_uid).where(AiReview.study_uid.in_(uids)).distinct())
                       .scalars())  # fmt: skip
    done: set[str] = set()
    flagged: set[str] = set()
    for study_uid, text in results:
        done.add(study_uid)
        summary = json.loads(text or "{}")
        probabilities = [float(c.get("probability") or 0) for c in summary.get("classifications", [])]
        if int(summary.get("findings") or 0) > 0 or any(p >= flag_threshold for p in probabilities):
            flagged.add(study_uid)
    reported = signed_studies(engine, uids)
    return {u: StudyAiStatus(u in done, u in flagged, u in reviewed, u in reported) for u in uids}


def citable_findings(engine: Engine, study_uid: str) -> list[CitedFinding]:
    """The AI findings a report of the study may cite: those whose current decision accepts them."""
    return [CitedFinding(document_uid=r.review_sr_uid, label=r.label, decision=r.decision, reviewer=r.reviewer,
                         plugin=f"{r.plugin_name}@{r.plugin_version}" if r.plugin_version else r.plugin_name)
            for r in current_reviews(engine, [study_uid]) if r.decision in RELEASED_DECISIONS]  # fmt: skip


__all__ = [
    "ReviewCounts", "ReviewRequest", "ReviewView", "StudyAiStatus", "citable_findings", "current_reviews",
    "plugin_review_counts", "release_reviewed", "review_documents", "review_finding", "study_review_status",
]  # fmt: skip
