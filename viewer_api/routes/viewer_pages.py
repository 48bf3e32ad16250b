"""The viewer's pages: the worklist (staff), the patient home and the study viewer."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from fastapi import APIRouter, Depends, Request
from fastapi.responses import RedirectResponse, Response

from ai_plugins.review.service import study_review_status
from pacs.access import AccessScope
from pacs.accounts.audit import ACCESS_ACTIONS, Action, AuditEvent, AuditQuery
from pacs.accounts.audit import query as audit_query
from pacs.accounts.principal import Principal, may_download, scope_for
from pacs.accounts.shares import ShareInfo, get_share, list_shares
from pacs.errors import InvalidQuery, NotFound
from pacs.query import Level, Match, QueryRequest, run_query
from pacs.reports.service import latest_signed
from pacs.settings import Settings
from viewer_api.auth.access import ACCOUNTS_AND_SHARES, AccountOrShare, Patient, Staff, Viewer
from viewer_api.auth.dependencies import audit, authenticator_of
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.i18n import translator_for
from viewer_api.pages import render
from viewer_api.viewer.model import study_view
from viewer_api.viewer.patient_view import patient_view

router = APIRouter(include_in_schema=False, route_class=DeclaredRoute)
PAGE_SIZE = 25
_STUDY_KEYS = ("StudyDescription", "ModalitiesInStudy", "NumberOfStudyRelatedInstances", "IssuerOfPatientID",
               "PatientBirthDate")


@dataclass(frozen=True, slots=True)
class StudyRow:
    study_uid: str
    patient_name: str
    patient_id: str
    birth_date: str
    study_date: str
    description: str
    accession: str
    modalities: str
    images: int


def _text(value: Any) -> str:
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return "" if value is None else str(value)


def _row(m: Match) -> StudyRow:
    return StudyRow(
        study_uid=_text(m.get("StudyInstanceUID")), patient_name=_text(m.get("PatientName")),
        patient_id=_text(m.get("PatientID")), birth_date=_text(m.get("PatientBirthDate")),
        study_date=_text(m.get("StudyDate")), description=_text(m.get("StudyDescription")),
        accession=_text(m.get("AccessionNumber")), modalities=_text(m.get("ModalitiesInStudy")),
        images=int(m.get("NumberOfStudyRelatedInstances") or 0),
    )


@router.get("/", dependencies=[Depends(ACCOUNTS_AND_SHARES)])
def root() -> Response:
    return RedirectResponse("/viewer/", status_code=303)


@router.get("/viewer/")
def start(principal: AccountOrShare, request: Request) -> Response:
    """Each kind of caller's landing page."""
    if principal.role in ("admin", "physician"):
        return RedirectResponse("/viewer/worklist", status_code=303)
    if principal.role == "patient":
        return RedirectResponse("/viewer/home", status_code=303)
    if principal.role is None and principal.share is not None:
        return RedirectResponse(f"/viewer/studies/{principal.share.study_uid}", status_code=303)
    tr = translator_for(request)
    return render(request, "message.html", status=403, title=tr.t("msg.no_viewer.title"),
                  text=tr.t("msg.no_viewer.text"))


_DATE = re.compile(r"^\d{4}-?\d{2}-?\d{2}$")


def ohif_installed(settings: Settings) -> bool:
    """Whether ``/ohif/`` serves a built OHIF: links to it appear only then."""
    return settings.ohif_dir is not None and (settings.ohif_dir / "index.html").is_file()


def worklist_filters(params: dict[str, str]) -> dict[str, str]:
    """Search form fields to query-engine filters (PS3.4 C.2.2.2 matching)."""
    filters: dict[str, str] = {}
    name = params.get("name", "").strip()
    if name:
        filters["PatientName"] = f"*{name.strip('*')}*"
    for field, keyword in (("patient_id", "PatientID"), ("accession", "AccessionNumber")):
        value = params.get(field, "").strip()
        if value:
            filters[keyword] = value if any(c in value for c in "*?") else f"{value}*"
    dates = [params.get(k, "").strip() for k in ("date_from", "date_to")]
    for value in dates:
        if value and not _DATE.match(value):
            raise InvalidQuery("dates are YYYY-MM-DD")
    start, end = (d.replace("-", "") for d in dates)
    if start or end:
        filters["StudyDate"] = start if start == end else f"{start}-{end}"
    modality = params.get("modality", "").strip().upper()
    if modality:
        filters["ModalitiesInStudy"] = modality
    return filters


@router.get("/viewer/worklist")
def worklist(principal: Staff, request: Request) -> Response:
    """Search studies by name, patient ID, accession, date range and modality; newest first, paged."""
    params = {k: v for k, v in request.query_params.items()}
    try:
        page = max(1, int(params.get("page", "1") or 1))
    except ValueError:
        page = 1
    error = ""
    rows: list[StudyRow] = []
    more = False
    try:
        filters = worklist_filters(params)
        matches = list(run_query(archive_of(request).engine, QueryRequest(
            level=Level.STUDY, filters=filters, return_keys=_STUDY_KEYS, limit=PAGE_SIZE + 1,
            offset=(page - 1) * PAGE_SIZE, scope=scope_for(principal),
        )))
        more = len(matches) > PAGE_SIZE
        rows = sorted((_row(m) for m in matches[:PAGE_SIZE]), key=lambda r: r.study_date, reverse=True)
        audit(request, Action.SEARCH, detail=" ".join(f"{k}={v}" for k, v in filters.items())[:500])
    except InvalidQuery as exc:
        error = str(exc)
    modalities = ["", "CT", "MR", "CR", "DX", "US", "MG", "PT", "NM", "XA", "SC"]
    ai_status = study_review_status(archive_of(request).engine, [r.study_uid for r in rows],
                                    archive_of(request).settings.ai_flag_threshold)  # fmt: skip
    return render(request, "worklist.html", rows=rows, params=params, page=page, more=more, error=error,
                  modalities=modalities, searched=bool(params), ai_status=ai_status,
                  ohif=ohif_installed(archive_of(request).settings))


@router.get("/viewer/home")
def home(principal: Patient, request: Request) -> Response:
    """The patient's own studies, their share links, and who opened them."""
    engine = archive_of(request).engine
    own = AccessScope(patient_keys=principal.patient_keys, hidden_study_uids=principal.hidden_study_uids,
                      partition=principal.partition)
    matches = list(run_query(engine, QueryRequest(level=Level.STUDY, return_keys=_STUDY_KEYS, scope=own,
                                                  limit=500)))
    rows = sorted((_row(m) for m in matches), key=lambda r: r.study_date, reverse=True)
    auth = authenticator_of(request)
    shares = {r.study_uid: list_shares(engine, auth.key, r.study_uid, principal.partition) for r in rows}
    opened: list[AuditEvent] = []
    if rows:
        opened = audit_query(engine, AuditQuery(study_uids=[r.study_uid for r in rows], actions=ACCESS_ACTIONS,
                                                exclude_user_id=principal.user_id, limit=50))
    tr = translator_for(request)
    names = {r.study_uid: f"{tr.date(r.study_date)} {r.description}".strip() for r in rows}
    return render(request, "home.html", rows=rows, shares=shares, opened=opened, names=names)


def _opened_share(request: Request, principal: Principal, study_uid: str) -> ShareInfo | None:
    """The share link ``principal`` holds for this study, if any (for whom and until when it was shared)."""
    if principal.share is None or principal.share.study_uid != study_uid:
        return None
    try:
        return get_share(archive_of(request).engine, None, study_uid, principal.share.share_id,
                         principal.share.partition)
    except NotFound:
        return None


def viewer_page(request: Request, principal: Principal, study_uid: str, share_token: str | None = None,
                share: ShareInfo | None = None) -> Response:  # fmt: skip
    """The study viewer for ``principal`` (404 when the study is not in its scope).

    Patients and share visitors get the patient's card (:mod:`viewer_api.viewer.patient_view`); they
    see AI findings only as released to them (reviewed by a physician), and none when
    ``CLOUDFILM_PATIENT_AI`` is ``none``.
    """
    archive = archive_of(request)
    scope = scope_for(principal)
    view = study_view(archive.engine, scope, study_uid)
    header = view.header
    settings = archive.settings
    card = None
    if principal.sees_released_results_only:
        card = patient_view(settings, header, share or _opened_share(request, principal, study_uid),
                            latest_signed(archive.engine, scope, study_uid))  # fmt: skip
    show_findings = card is None or settings.patient_ai != "none"
    download = may_download(principal, study_uid, header.patient_id, header.issuer)
    can_share = principal.role in ("admin", "physician") or (
        principal.role == "patient" and (header.patient_id, header.issuer) in principal.patient_keys)
    model = view.as_json() | {
        "urls": {
            "dicomweb": "/dicomweb",
            "findings": f"/api/studies/{study_uid}/findings" if show_findings else None,
            "reviews": f"/api/studies/{study_uid}/findings/reviews" if principal.is_staff else None,
            "reports": f"/api/studies/{study_uid}/reports" if principal.is_staff else None,
            "film": f"/api/studies/{study_uid}/film" if download else None,
            "archive": f"/api/studies/{study_uid}/archive.zip" if download else None,
            "shares": f"/api/studies/{study_uid}/shares" if can_share else None,
            # /ohif/ serves accounts only: a share visitor could not open it.
            "ohif": f"/ohif/viewer?StudyInstanceUIDs={study_uid}"
            if ohif_installed(settings) and principal.role is not None else None,
        },
        # Patients and share visitors start with the simple toolbar; "All tools" shows the rest.
        "tools": "simple" if card is not None else "full",
    }
    first_image = None
    shown = [sv for sv in view.series if sv.images]
    if shown:
        slices = [(img.sop, n) for img in shown[0].images for n in range(1, img.frames + 1)]
        middle = len(slices) // 2
        model["start"] = {"series": 0, "index": middle}
        sop, frame = slices[middle]
        first_image = f"/dicomweb/studies/{study_uid}/series/{shown[0].uid}/instances/{sop}/frames/{frame}/rendered"
    headers = {"Referrer-Policy": "no-referrer"} if share_token else None
    if share_token is None:  # opening a share link is audited as share-open
        audit(request, Action.VIEW, study_uid=study_uid, patient_id=header.patient_id)
    return render(request, "viewer.html", headers=headers, view=view, header=header, model=model,
                  first_image=first_image, card=card, simple_tools=card is not None,
                  share_token=share_token, can_download=download, can_share=can_share,
                  can_email=bool(settings.smtp_host),
                  can_claim=bool(share_token) and principal.role == "patient")


@router.get("/viewer/studies/{study_uid}")
def study(principal: Viewer, request: Request, study_uid: str) -> Response:
    try:
        return viewer_page(request, principal, study_uid)
    except NotFound:
        tr = translator_for(request)
        return render(request, "message.html", status=404, title=tr.t("msg.study_not_found.title"),
                      text=tr.t("msg.study_not_found.text"))
