"""The share link itself: ``/s/{token}`` opens one study in the viewer, after the PIN if it has one.

Opening gives the browser a share session (an HttpOnly cookie) scoped to exactly that study, for
as long as the link lives (at most ``session_hours``). Unknown, expired, revoked and locked links
get a page saying so. A signed-in patient may claim the study by entering the birth date.
"""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import RedirectResponse, Response

from pacs.accounts.audit import Action, Outcome
from pacs.accounts.principal import Principal, scope_for
from pacs.accounts.shares import Check, CheckResult, ShareInfo, ShareStatus, check_pin, claim_study, find_share
from pacs.accounts.shares import record_view as count_view
from pacs.errors import NotFound
from pacs.index.db import utcnow
from viewer_api.auth.access import Visitor, cross_site
from viewer_api.auth.authenticator import CSRF_FIELD, SHARE_COOKIE
from viewer_api.auth.dependencies import audit, authenticator_of, optional_principal
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.auth.tokens import Claims
from viewer_api.context import archive_of
from viewer_api.i18n import translator_for
from viewer_api.pages import render
from viewer_api.routes.viewer_pages import viewer_page
from viewer_api.viewer.model import study_header

router = APIRouter(include_in_schema=False, route_class=DeclaredRoute)


def _message(request: Request, status: int, title: str, text: str, **fields: object) -> Response:
    """The message page: ``title`` and ``text`` are catalogue keys, ``fields`` fill the text."""
    tr = translator_for(request)
    return render(request, "message.html", status=status, title=tr.t(title), text=tr.t(text, **fields))


def _minutes_until(moment: datetime | None) -> int:
    if moment is None:
        return 15
    return max(1, int((moment - utcnow()).total_seconds() // 60) + 1)


def _unusable(request: Request, share: ShareInfo | None) -> Response | None:
    """The page for a link that cannot be opened, or ``None``."""
    if share is None:
        return _message(request, 404, "link.not_found.title", "link.not_found.text")
    status = share.status()
    if status is ShareStatus.REVOKED:
        return _message(request, 410, "link.revoked.title", "link.revoked.text")
    if status is ShareStatus.EXPIRED:
        return _message(request, 410, "link.expired.title", "link.expired.text",
                        date=translator_for(request).long_date(share.expires_at))
    return None


def _holds(principal: Principal | None, share: ShareInfo) -> bool:
    return principal is not None and principal.share is not None and principal.share.share_id == share.id


def _issue(request: Request, share: ShareInfo) -> tuple[str, Claims]:
    """A share session for ``share`` (as long as the link lives, at most a session); pages echo its CSRF."""
    auth = authenticator_of(request)
    cookie, claims = auth.signer.issue("share", share.id, auth.session_lifetime, not_after=share.expires_at)
    current = optional_principal(request)
    if current is None or current.role is None:
        request.state.csrf = claims.csrf
    return cookie, claims


def _set_cookie(request: Request, response: Response, cookie: str, claims: Claims) -> Response:
    response.set_cookie(SHARE_COOKIE, cookie, max_age=max(1, int((claims.expires - utcnow()).total_seconds())),
                        httponly=True, samesite="lax", secure=request.url.scheme == "https", path="/")
    return response


def _open(request: Request, token: str, share: ShareInfo) -> Response:
    """Count the view, audit it, show the study, and (re)start the share session."""
    auth = authenticator_of(request)
    current = optional_principal(request)
    principal = Principal(
        user_id=current.user_id if current else None, username=current.username if current else "",
        role=current.role if current else None, patient_keys=current.patient_keys if current else frozenset(),
        share=share.grant(), via="session" if current and current.role else "share",
    )
    principal = auth.restrict(principal) or principal  # benchmark test cases stay hidden (issue 7)
    request.state.principal = principal
    count_view(auth.engine, share.id)
    try:
        header = study_header(archive_of(request).engine, scope_for(principal), share.study_uid)
    except NotFound:
        return _message(request, 404, "link.study_gone.title", "link.study_gone.text")
    audit(request, Action.SHARE_OPEN, study_uid=share.study_uid, patient_id=header.patient_id)
    cookie, claims = _issue(request, share)
    page = viewer_page(request, principal, share.study_uid, share_token=token, share=share)
    return _set_cookie(request, page, cookie, claims)


def _pin_page(request: Request, token: str, status: int = 200, message: str = "") -> Response:
    return render(request, "pin.html", status=status, token=token, message=message)


@router.get("/s/{token}")
def open_share(visitor: Visitor, request: Request, token: str) -> Response:
    auth = authenticator_of(request)
    share = find_share(auth.engine, token)
    refusal = _unusable(request, share)
    if refusal is not None or share is None:
        return refusal or _message(request, 404, "link.not_found.title", "link.invalid.text")
    if share.has_pin and not _holds(visitor, share):
        if share.locked():
            return _locked(request, share.locked_until)
        return _pin_page(request, token)
    return _open(request, token, share)


def _locked(request: Request, until: datetime | None) -> Response:
    minutes = _minutes_until(until)
    return _message(request, 429, "link.locked.title", "link.locked.text", minutes=minutes)


@router.post("/s/{token}")
async def enter_pin(_visitor: Visitor, request: Request, token: str, pin: str = Form("")) -> Response:
    if cross_site(request):
        raise HTTPException(403, "cross-site requests are refused")
    auth = authenticator_of(request)
    share = await run_in_threadpool(find_share, auth.engine, token)
    refusal = _unusable(request, share)
    if refusal is not None or share is None:
        return refusal or _message(request, 404, "link.not_found.title", "link.invalid.text")
    result: CheckResult = await run_in_threadpool(check_pin, auth.engine, share.id, pin.strip())
    if result.result is Check.OK:
        cookie, claims = _issue(request, share)
        return _set_cookie(request, RedirectResponse(f"/s/{token}", status_code=303), cookie, claims)
    await run_in_threadpool(audit_failure, request, share, result)
    if result.result is Check.LOCKED:
        return _locked(request, result.locked_until)
    return _pin_page(request, token, 401, translator_for(request).plural("pin.wrong", result.tries_left))


def audit_failure(request: Request, share: ShareInfo, result: CheckResult) -> None:
    audit(request, Action.SHARE_PIN_FAILURE, outcome=Outcome.FAILURE, study_uid=share.study_uid,
          detail=f"share {share.id}: {result.result.value}, {result.tries_left} tries left")


@router.post("/s/{token}/claim")
async def claim(principal: Visitor, request: Request, token: str, birth_date: str = Form(""),
                csrf_token: str = Form("", alias=CSRF_FIELD)) -> Response:
    """A signed-in patient adds the shared study's patient to the account, proving the birth date."""
    if principal is None or principal.role != "patient":
        raise HTTPException(403, "sign in with a patient account to add this study to it")
    if cross_site(request) or csrf_token != getattr(request.state, "csrf", ""):
        raise HTTPException(403, "the request lacks a valid CSRF token; reload the page and try again")
    auth = authenticator_of(request)
    share = await run_in_threadpool(find_share, auth.engine, token)
    refusal = _unusable(request, share)
    # Patient IDs are a hospital's own: a link of another partition's study is no link to this account.
    if refusal is not None or share is None or share.partition != principal.partition:
        return refusal or _message(request, 404, "link.not_found.title", "link.invalid.text")
    result = await run_in_threadpool(claim_study, auth.engine, share.id, principal.username, birth_date)
    if result.result is Check.OK:
        await run_in_threadpool(audit, request, Action.SHARE_CLAIM, study_uid=share.study_uid)
        return RedirectResponse("/viewer/home", status_code=303)
    await run_in_threadpool(audit, request, Action.SHARE_CLAIM, outcome=Outcome.FAILURE, study_uid=share.study_uid,
                            detail=f"share {share.id}: {result.result.value}")
    if result.result is Check.LOCKED:
        return _locked(request, result.locked_until)
    key = "claim.mismatch.text.one" if result.tries_left == 1 else "claim.mismatch.text.other"
    return _message(request, 401, "claim.mismatch.title", key, count=result.tries_left)
