"""Physicians' reports of a study: ``/api/studies/{study_uid}/reports`` (:mod:`pacs.reports.service`).

Reading: staff see every version and the draft; patients and share visitors (whose scope holds
the study) only the latest signed version and its PDF, never a draft or a superseded version;
vendors and plugin job tokens nothing. Writing (drafts, signing, amendments): physicians and
admins only; every save, signature and amendment is audited by the service, every refusal here.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeVar

from fastapi import APIRouter, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from ai_plugins.review.service import citable_findings
from pacs.accounts.audit import Action, Outcome
from pacs.accounts.principal import Principal, scope_for
from pacs.errors import Conflict, InvalidQuery, NotFound
from pacs.reports import service
from pacs.reports.service import CitedFinding, DraftRequest, ReportSections, ReportView
from viewer_api.auth.access import Staff, Viewer
from viewer_api.auth.dependencies import audit, client_address
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["reports"], route_class=DeclaredRoute)
BASE = "/api/studies/{study_uid}/reports"
T = TypeVar("T")


class TemplateView(BaseModel):
    modality: str
    title: str
    sections: ReportSections


class ReportList(BaseModel):
    """The versions the caller may read, newest first; staff also get the template and the citable findings."""

    versions: list[ReportView]
    template: TemplateView | None = None
    citable_findings: list[CitedFinding] | None = None


def _refused(request: Request, action: Action, study_uid: str, what: str, call: Callable[[], T]) -> T:
    """``call()``, with a refusal (no such report, invalid or conflicting request) audited as a failure."""
    try:
        return call()
    except (NotFound, InvalidQuery, Conflict) as exc:
        audit(request, action, outcome=Outcome.FAILURE, study_uid=study_uid, detail=f"{what}: {exc}"[:500])
        raise


def _latest_only(principal: Principal) -> bool:
    return not principal.is_staff


@router.get(BASE, response_model=ReportList, summary="The study's report versions the caller may read")
def list_reports(principal: Viewer, request: Request, response: Response, study_uid: str) -> ReportList:
    """Staff: every version (superseded ones marked) and the draft, with the study's template and the
    AI findings a physician accepted. Patients and share links: the latest signed version only."""
    response.headers["Cache-Control"] = "no-store"
    archive = archive_of(request)
    scope = scope_for(principal)
    versions = service.list_versions(archive.engine, scope, study_uid, latest_signed_only=_latest_only(principal))
    if not principal.is_staff:
        return ReportList(versions=versions)
    template = service.study_template(archive.engine, scope, study_uid)
    return ReportList(versions=versions, citable_findings=citable_findings(archive.engine, study_uid, scope.partition),
                      template=TemplateView(modality=template.modality, title=template.title,
                                            sections=template.start))  # fmt: skip


@router.get(BASE + "/{report_id}", response_model=ReportView, summary="One version of the study's report")
def get_report(principal: Viewer, request: Request, response: Response, study_uid: str, report_id: int) -> ReportView:
    response.headers["Cache-Control"] = "no-store"
    return service.get_version(archive_of(request).engine, scope_for(principal), study_uid, report_id,
                               latest_signed_only=_latest_only(principal))  # fmt: skip


@router.get(BASE + "/{report_id}/pdf", response_class=Response, summary="The PDF of a signed version")
def report_pdf(principal: Viewer, request: Request, study_uid: str, report_id: int) -> Response:
    """The PDF stored in the study (Encapsulated PDF) for this version."""
    view, pdf = service.report_pdf(archive_of(request), scope_for(principal), study_uid, report_id,
                                   latest_signed_only=_latest_only(principal))  # fmt: skip
    audit(request, Action.VIEW, study_uid=study_uid, detail=f"report {view.id} version {view.version} PDF")
    name = f"report-v{view.version}{'-superseded' if view.status == 'superseded' else ''}.pdf"
    return Response(pdf, media_type="application/pdf", headers={
        "Content-Disposition": f'inline; filename="{name}"', "Cache-Control": "no-store"})  # fmt: skip


def _create(request: Request, principal: Principal, study_uid: str, body: DraftRequest) -> ReportView:
    archive = archive_of(request)
    return _refused(request, Action.REPORT_DRAFT, study_uid, "draft not created", lambda: service.create_draft(
        archive, principal, study_uid, body, citable=citable_findings(archive.engine, study_uid,
                                                                       principal.home_partition),
        source=client_address(request)))  # fmt: skip


@router.post(BASE, response_model=ReportView, status_code=201,
             summary="Start the study's report (an amendment draft when a version is signed)")  # fmt: skip
async def create_draft(principal: Staff, request: Request, study_uid: str, body: DraftRequest) -> ReportView:
    return await run_in_threadpool(_create, request, principal, study_uid, body)


def _update(request: Request, principal: Principal, study_uid: str, report_id: int, body: DraftRequest) -> ReportView:
    archive = archive_of(request)
    citable = citable_findings(archive.engine, study_uid, principal.home_partition)
    return _refused(request, Action.REPORT_DRAFT, study_uid, f"draft {report_id} not saved",
                    lambda: service.update_draft(archive, principal, study_uid, report_id, body, citable=citable,
                                                 source=client_address(request)))  # fmt: skip


@router.put(BASE + "/{report_id}", response_model=ReportView, summary="Save a draft")
async def update_draft(principal: Staff, request: Request, study_uid: str, report_id: int,
                       body: DraftRequest) -> ReportView:  # fmt: skip
    return await run_in_threadpool(_update, request, principal, study_uid, report_id, body)


def _sign(request: Request, principal: Principal, study_uid: str, report_id: int) -> ReportView:
    archive = archive_of(request)
    return _refused(request, Action.REPORT_SIGN, study_uid, f"report {report_id} not signed",
                    lambda: service.sign_draft(archive, principal, study_uid, report_id,
                                               source=client_address(request)))  # fmt: skip


@router.post(BASE + "/{report_id}/sign", response_model=ReportView,
             summary="Sign a draft: its SR, PDF and key images are stored in the study")  # fmt: skip
async def sign(principal: Staff, request: Request, study_uid: str, report_id: int) -> ReportView:
    return await run_in_threadpool(_sign, request, principal, study_uid, report_id)


def _amend(request: Request, principal: Principal, study_uid: str, report_id: int) -> ReportView:
    return _refused(request, Action.REPORT_AMEND, study_uid, f"report {report_id} not amended",
                    lambda: service.start_amendment(archive_of(request), principal, study_uid, report_id,
                                                    source=client_address(request)))  # fmt: skip


@router.post(BASE + "/{report_id}/amend", response_model=ReportView, status_code=201,
             summary="Start an amendment of the current signed version (a draft naming it)")  # fmt: skip
async def amend(principal: Staff, request: Request, study_uid: str, report_id: int) -> ReportView:
    return await run_in_threadpool(_amend, request, principal, study_uid, report_id)
