"""FastAPI dependencies: the caller, its scope, role checks and the audit helper.

``current_scope`` is the one dependency every DICOMweb, WADO, viewer and download route takes
its :class:`~pacs.access.AccessScope` from; it derives the scope from the principal the auth
middleware authenticated (``scope_for`` in :mod:`pacs.accounts.principal`).
"""

from __future__ import annotations

from collections.abc import Callable

from fastapi import Depends, HTTPException, Request

from pacs.access import AccessScope
from pacs.accounts.audit import Action, AuditEvent, Outcome, record
from pacs.accounts.principal import Principal, scope_for
from viewer_api.auth.authenticator import Authenticator


def authenticator_of(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.authenticator
    return auth


def optional_principal(request: Request) -> Principal | None:
    """The authenticated caller, or ``None`` on public routes visited anonymously."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal


def current_principal(request: Request) -> Principal:
    """The authenticated caller (the middleware has already answered 401 for protected routes)."""
    principal = optional_principal(request)
    if principal is None:
        raise HTTPException(401, "sign in first", headers={"WWW-Authenticate": "Bearer"})
    return principal


def current_scope(request: Request) -> AccessScope:
    """The studies the caller may see: the only source of access for every study route."""
    return scope_for(current_principal(request))


def require_user(principal: Principal = Depends(current_principal)) -> Principal:
    """A signed-in account (not a share visitor)."""
    if principal.role is None:
        raise HTTPException(403, "a share link opens only its own study")
    return principal


def require_roles(*roles: str) -> Callable[[Principal], Principal]:
    """A dependency admitting only accounts with one of ``roles``."""

    def check(principal: Principal = Depends(require_user)) -> Principal:
        if principal.role not in roles:
            raise HTTPException(403, "your account may not do this")
        return principal

    return check


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def audit(request: Request, action: Action | str, *, outcome: Outcome | str = Outcome.SUCCESS,
          study_uid: str = "", patient_id: str = "", detail: str = "", username: str = "") -> None:
    """Record ``action`` by the request's caller, from the request's address (never raises).

    Call it from async handlers through ``run_in_threadpool`` (it writes to the database).
    """
    principal = optional_principal(request)
    event = AuditEvent.by(principal, action, outcome=outcome, study_uid=study_uid, patient_id=patient_id,
                          detail=detail, source=client_address(request))
    if username and not event.username:
        event = AuditEvent.by(None, action, outcome=outcome, study_uid=study_uid, patient_id=patient_id,
                              detail=detail, source=client_address(request), username=username)
    record(request.app.state.archive.engine, event)
