"""FastAPI dependencies and helpers: the caller's scope, the authenticator, the audit helper.

Who may call a route is the route's declared rule (:mod:`viewer_api.auth.access`), whose typed
dependency hands the handler its principal. ``current_scope`` is the one dependency every
DICOMweb, WADO, viewer and download route takes its :class:`~pacs.access.AccessScope` from; it
derives the scope from the principal the rule admitted (``scope_for`` in
:mod:`pacs.accounts.principal`).
"""

from __future__ import annotations

from fastapi import HTTPException, Request

from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.accounts.audit import Action, AuditEvent, Outcome, record
from pacs.accounts.principal import Principal, scope_for
from pacs.accounts.users import get_user
from pacs.errors import NotFound
from pacs.partitions import Partition
from viewer_api.auth.authenticator import Authenticator


def authenticator_of(request: Request) -> Authenticator:
    auth: Authenticator = request.app.state.authenticator
    return auth


def optional_principal(request: Request) -> Principal | None:
    """The admitted caller, or ``None`` on public routes visited anonymously."""
    principal: Principal | None = getattr(request.state, "principal", None)
    return principal


def request_partition(request: Request) -> Partition | None:
    """The partition the URL names: ``/dicomweb/p/{partition}/…``, the default one for the rest of
    ``/dicomweb/``; None for other routes (the caller's home partition then). 404 for a name this
    archive does not know."""
    partitions = request.app.state.archive.partitions
    slug = request.path_params.get("partition")
    if slug is None:
        return partitions.default if request.url.path.startswith("/dicomweb/") else None  # type: ignore[no-any-return]
    found: Partition | None = partitions.by_slug(slug)
    if found is None:
        raise HTTPException(404, "no such partition")
    return found


def current_scope(request: Request) -> AccessScope:
    """The studies the caller may see: the only source of access for every study route."""
    principal = optional_principal(request)
    if principal is None:  # only on a route whose rule admits anonymous callers: a programming error
        raise HTTPException(401, "sign in first", headers={"WWW-Authenticate": "Bearer"})
    partition = request_partition(request)
    return scope_for(principal, partition=None if partition is None else partition.id)


def client_address(request: Request) -> str:
    return request.client.host if request.client else ""


def audit(request: Request, action: Action | str, *, outcome: Outcome | str = Outcome.SUCCESS,
          study_uid: str = "", patient_id: str = "", detail: str = "", username: str = "") -> None:
    """Record ``action`` by the request's caller, from the request's address (never raises).

    For events only the handler can describe (sign-ins, shares, pages with the patient's ID);
    DICOMweb requests are recorded from their route's declared rule. Call it from async handlers
    through ``run_in_threadpool`` (it writes to the database).
    """
    principal = optional_principal(request)
    event = AuditEvent.by(principal, action, outcome=outcome, study_uid=study_uid, patient_id=patient_id,
                          detail=detail, source=client_address(request))
    if username and not event.username:
        try:  # a sign-in (failed or not) is the named account's partition's event
            partition = get_user(request.app.state.archive.engine, username).partition
        except NotFound:
            partition = DEFAULT_PARTITION
        event = AuditEvent.by(None, action, outcome=outcome, study_uid=study_uid, patient_id=patient_id,
                              detail=detail, source=client_address(request), username=username, partition=partition)
    record(request.app.state.archive.engine, event)
