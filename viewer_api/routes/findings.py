"""The viewer's AI findings: ``GET /api/studies/{uid}/findings``, and physicians' reviews of them.

Reading is :func:`ai_plugins.review.findings.study_findings` with the caller's scope (a study
outside it answers 404, as everywhere); like the frames the viewer shows, it is part of the viewer
page, whose opening is already audited. ``POST …/findings/reviews`` records a physician's decision
on one finding (:mod:`ai_plugins.review.service`): staff only, audited as ``ai-review``.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool

from ai_plugins.review.decisions import ReviewView
from ai_plugins.review.findings import StudyFindings, study_findings
from ai_plugins.review.service import ReviewRequest, review_finding
from pacs.access import AccessScope
from pacs.accounts.audit import Action
from pacs.accounts.users import active_user
from pacs.errors import Conflict, InvalidQuery, NotFound
from viewer_api.access import current_scope
from viewer_api.auth.access import ACCOUNTS_AND_SHARES, Staff
from viewer_api.auth.dependencies import audit
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["findings"], route_class=DeclaredRoute)


@router.get("/api/studies/{study_uid}/findings", response_model=StudyFindings,
            dependencies=[Depends(ACCOUNTS_AND_SHARES)],
            summary="AI findings of a study, from its TID 1500 SRs, in image coordinates")  # fmt: skip
def findings(request: Request, response: Response, study_uid: str,
             scope: AccessScope = Depends(current_scope)) -> StudyFindings:  # fmt: skip
    """Staff: every finding of every AI report, with its current review. Patients and share links: only
    findings a physician accepted (``CLOUDFILM_PATIENT_AI=reviewed``), marked reviewed; none with ``none``."""
    response.headers["Cache-Control"] = "no-store"
    return study_findings(archive_of(request), scope, study_uid)


def _record(request: Request, principal: Staff, study_uid: str, body: ReviewRequest) -> ReviewView:
    archive = archive_of(request)
    user = active_user(archive.engine, principal.user_id) if principal.user_id is not None else None
    name = (user.full_name if user and user.full_name else "") or principal.username
    try:
        view = review_finding(archive, principal, study_uid, body, reviewer_name=name,
                              institution_name=archive.settings.institution_name or None)  # fmt: skip
    except (NotFound, InvalidQuery, Conflict):
        audit(request, Action.AI_REVIEW, outcome="failure", study_uid=study_uid,
              detail=f"{body.decision} {body.report_uid} {body.finding_key}"[:500])
        raise
    changed = ", ".join(f"{k}: {v[0]} -> {v[1]}" for k, v in view.changes.items())
    audit(request, Action.AI_REVIEW, study_uid=study_uid,
          detail=f"{view.decision} {view.plugin_name}@{view.plugin_version} {view.finding_key} "
                 f"(report {view.report_uid}, review {view.review_sr_uid}){' ' + changed if changed else ''}"[:500])
    return view


@router.post("/api/studies/{study_uid}/findings/reviews", response_model=ReviewView, status_code=201,
             summary="Accept, reject or edit one AI finding (physicians and admins)")  # fmt: skip
async def review(principal: Staff, request: Request, study_uid: str, body: ReviewRequest) -> ReviewView:
    """The decision is stored (who, when, what changed), audited, and written into the study as an SR
    that references the AI's SR; the newest decision on a finding is the current one."""
    return await run_in_threadpool(_record, request, principal, study_uid, body)
