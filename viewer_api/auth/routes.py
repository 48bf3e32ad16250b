"""Sign-in and credentials: the login page, the session cookie, OAuth2 tokens and API keys."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field

from pacs.accounts.api_keys import create_api_key, find_owner, list_api_keys, revoke_api_key
from pacs.accounts.audit import Action, Outcome
from pacs.accounts.users import UserInfo, authenticate, set_email
from viewer_api.auth.access import Account, AccountOrShare, Visitor, cross_site
from viewer_api.auth.authenticator import CSRF_FIELD, SESSION_COOKIE, SHARE_COOKIE, Authenticator
from viewer_api.auth.dependencies import audit, authenticator_of, client_address
from viewer_api.auth.ratelimit import WINDOW, login_allowed
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.i18n import translator_for
from viewer_api.pages import render

router = APIRouter(route_class=DeclaredRoute)


def safe_next(target: str | None) -> str:
    """Only same-site paths: ``/x`` but never ``//host`` or ``/\\host`` (open redirects)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")) or "\n" in target:
        return "/viewer/"
    return target


def login_page(request: Request, status: int = 200, message: str = "", username: str = "") -> Response:
    target = request.query_params.get("next") or (
        request.url.path + (f"?{request.url.query}" if request.url.query else "")
        if request.url.path != "/login" else "/viewer/"
    )
    return render(request, "login.html", status=status, next=safe_next(target), message=message, username=username)


async def _check_login(request: Request, auth: Authenticator, username: str, password: str) -> UserInfo:
    """The account for these credentials; 429 when rate-limited, 401 otherwise. Audited either way."""
    if not username.isprintable():  # no account has one; the index could not even compare it (NUL)
        raise HTTPException(400, "a username holds printable characters only")
    engine = auth.engine
    source = client_address(request)
    allowed = await run_in_threadpool(login_allowed, engine, username, source, auth.settings.login_max_failures)
    if not allowed:
        await run_in_threadpool(audit, request, Action.LOGIN, outcome=Outcome.DENIED, username=username,
                                detail="rate limited")
        raise HTTPException(429, "too many failed sign-ins; wait 15 minutes",
                            headers={"Retry-After": str(int(WINDOW.total_seconds()))})
    user = await run_in_threadpool(authenticate, engine, username, password)
    if user is None:
        await run_in_threadpool(audit, request, Action.LOGIN, outcome=Outcome.FAILURE, username=username)
        raise HTTPException(401, "wrong username or password", headers={"WWW-Authenticate": "Bearer"})
    request.state.principal = user.principal("session")
    await run_in_threadpool(audit, request, Action.LOGIN)
    return user


@router.get("/login", include_in_schema=False)
def get_login(principal: Visitor, request: Request) -> Response:
    if principal is not None and principal.role is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), status_code=303)
    return login_page(request)


@router.post("/login", include_in_schema=False)
async def post_login(_visitor: Visitor, request: Request, username: str = Form(""), password: str = Form(""),
                     next: str = Form("/viewer/"), auth: Authenticator = Depends(authenticator_of)) -> Response:
    if cross_site(request):
        raise HTTPException(403, "cross-site requests are refused")
    try:
        user = await _check_login(request, auth, username.strip(), password)
    except HTTPException as exc:
        message = (translator_for(request).t("login.wrong") if exc.status_code == 401
                   else str(exc.detail).capitalize() + ".")
        request.scope["query_string"] = b""
        return render(request, "login.html", status=exc.status_code, next=safe_next(next), message=message,
                      username=username, headers=dict(exc.headers or {}))
    token, _ = auth.signer.issue("session", user.id, auth.session_lifetime)
    response = RedirectResponse(safe_next(next), status_code=303)
    response.set_cookie(SESSION_COOKIE, token, max_age=int(auth.session_lifetime.total_seconds()), httponly=True,
                        samesite="lax", secure=request.url.scheme == "https", path="/")
    return response


@router.post("/logout", include_in_schema=False)
async def post_logout(principal: Visitor, request: Request, csrf_token: str = Form("", alias=CSRF_FIELD)) -> Response:
    if principal is not None and principal.via in ("session", "share"):
        if cross_site(request) or csrf_token != getattr(request.state, "csrf", ""):
            raise HTTPException(403, "the request lacks a valid CSRF token; reload the page and try again")
        await run_in_threadpool(audit, request, Action.LOGOUT)
    response = RedirectResponse("/login", status_code=303)
    secure = request.url.scheme == "https"
    for name in (SESSION_COOKIE, SHARE_COOKIE):
        response.delete_cookie(name, path="/", secure=secure, httponly=True, samesite="lax")
    return response


class TokenResponse(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int


@router.post("/api/auth/token", response_model=TokenResponse, tags=["auth"])
async def issue_token(_visitor: Visitor, request: Request, form: OAuth2PasswordRequestForm = Depends(),
                      auth: Authenticator = Depends(authenticator_of)) -> Any:
    """OAuth2 password flow (RFC 6749 4.3): a short-lived JWT bearer token."""
    user = await _check_login(request, auth, form.username.strip(), form.password)
    token, _ = auth.signer.issue("access", user.id, auth.token_lifetime)
    body = TokenResponse(access_token=token, expires_in=int(auth.token_lifetime.total_seconds()))
    return JSONResponse(body.model_dump(), headers={"Cache-Control": "no-store"})


class Me(BaseModel):
    username: str
    role: str | None
    share_study_uid: str | None
    patient_keys: list[tuple[str, str]]


@router.get("/api/auth/me", response_model=Me, tags=["auth"])
def me(principal: AccountOrShare) -> Me:
    """Who the credentials belong to."""
    return Me(username=principal.username, role=principal.role,
              share_study_uid=principal.share.study_uid if principal.share else None,
              patient_keys=sorted(principal.patient_keys))


class EmailIn(BaseModel):
    email: str | None = Field(default=None, max_length=254, description="\"\" or null clears it")


class EmailOut(BaseModel):
    email: str | None


@router.put("/api/auth/me/email", response_model=EmailOut, tags=["auth"])
def set_my_email(principal: Account, body: EmailIn, request: Request) -> EmailOut:
    """The address this account is e-mailed at when a report of its studies is signed (patients)."""
    if principal.user_id is None:
        raise HTTPException(403, "only accounts have an e-mail address")
    user = set_email(authenticator_of(request).engine, principal.username, body.email or None)
    audit(request, Action.USER_CHANGE, detail="e-mail address set" if user.email else "e-mail address cleared")
    return EmailOut(email=user.email)


class NewKey(BaseModel):
    name: str = Field(default="", max_length=64)


class KeyOut(BaseModel):
    id: int
    name: str
    created_at: str
    last_used_at: str | None
    revoked: bool
    key: str | None = None  # only in the answer that creates it


@router.get("/api/auth/keys", response_model=list[KeyOut], tags=["auth"])
def my_keys(principal: Account, request: Request) -> list[KeyOut]:
    """The caller's API keys (without the keys themselves)."""
    keys = list_api_keys(request.app.state.archive.engine, principal.username)
    return [KeyOut(id=k.id, name=k.name, created_at=k.created_at.isoformat(),
                   last_used_at=k.last_used_at.isoformat() if k.last_used_at else None,
                   revoked=k.revoked_at is not None) for k in keys]


@router.post("/api/auth/keys", response_model=KeyOut, status_code=201, tags=["auth"])
def new_key(principal: Account, request: Request, body: NewKey) -> KeyOut:
    """A new API key for the caller; the key is in this answer only."""
    info, clear = create_api_key(request.app.state.archive.engine, principal.username, body.name)
    audit(request, Action.API_KEY, detail=f"created key {info.id}")
    return KeyOut(id=info.id, name=info.name, created_at=info.created_at.isoformat(), last_used_at=None,
                  revoked=False, key=clear)


@router.delete("/api/auth/keys/{key_id}", status_code=204, tags=["auth"])
def delete_key(principal: Account, request: Request, key_id: int) -> Response:
    """Revoke one of the caller's API keys (an admin may revoke anyone's)."""
    engine = request.app.state.archive.engine
    owner = principal.username
    if principal.role == "admin":
        owner = find_owner(engine, key_id)
    revoke_api_key(engine, owner, key_id)
    audit(request, Action.API_KEY, detail=f"revoked key {key_id} of {owner}")
    return Response(status_code=204)
