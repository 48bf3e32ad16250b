"""Who may call a route: the rule each route declares, and the admission of a request by it.

Every route declares exactly one :class:`Rule`, as polar's endpoints take ``auth.CheckoutRead``:
a typed dependency on the endpoint (``principal: access.Staff``) or on its router
(``dependencies=[Depends(access.STUDY_READERS)]``). :class:`~viewer_api.auth.routing.DeclaredRoute`
finds the rule when the route is built (a route without one cannot be built) and admits the
caller before the method check, the body and the parameters are looked at; the dependency then
hands the admitted principal to the handler. Study visibility is not decided here but by the
caller's scope in the query layer (:func:`viewer_api.auth.dependencies.current_scope`): a rule only
says who may knock at all, and, through :class:`~viewer_api.auth.http_audit.Audit`, what the
request is recorded as in the audit trail.

Callers: the four account roles; a share visitor (an opened share link, no account), who reaches
only routes that admit ``share`` (and, through the scope, only its one study); a clinician share's
DICOMweb token, which reaches only the read routes of DICOMweb that admit ``clinician`` (QIDO-RS and
WADO-RS; its scope holds its one study, so any other answers 404); and a plugin job
token, which reaches only routes that admit ``job`` and whose ``{study}`` path parameter is its own
study (its study's DICOMweb resources, and STOW-RS into that study) in the default partition, where
jobs run; and an edge worker's token, which reaches only routes that admit ``edge`` (leasing and
finishing jobs, ``/api/edge/…``).
"""

from __future__ import annotations

import hmac
from dataclasses import dataclass, replace
from enum import Enum
from typing import Annotated

import anyio.to_thread
from fastapi import Depends, Request

from pacs.accounts.principal import Principal
from pacs.partitions import DEFAULT_SLUG
from viewer_api.auth.authenticator import CSRF_HEADER, SESSION_COOKIE, SHARE_COOKIE, Authenticator, Resolution
from viewer_api.auth.http_audit import (
    CHANGEFEED,
    DELETE,
    NOTIFICATIONS,
    PACKAGE_DOWNLOAD,
    REJECTION,
    ROUTING,
    STOW,
    WEBHOOK,
    WORKLIST,
    Audit,
)

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class Credentials(Enum):
    IGNORED = "ignored"  # never read: health probes and static files cost no database round trip
    OPTIONAL = "optional"  # read when sent; anonymous callers are welcome (sign-in, share links)
    REQUIRED = "required"


class AccessRefused(Exception):
    """A request the route's rule does not admit (401 or 403), with one sentence saying why.

    ``page``: a browser asking for a page may get one (the sign-in page for 401, a message page for
    403) instead of the plain sentence.
    """

    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None, *, page: bool = True):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers or {}
        self.page = page


@dataclass(frozen=True, slots=True)
class Rule:
    """Who may call a route: account ``roles``, share visitors, clinician share tokens, plugin job tokens
    on their study, edge workers."""

    name: str
    roles: frozenset[str] = frozenset()
    share: bool = False
    job: bool = False
    edge: bool = False
    clinician: bool = False
    credentials: Credentials = Credentials.REQUIRED
    audit: Audit | None = None
    every_partition: bool = False  # accounts only of the default partition, who act in every one

    def audited(self, audit: Audit) -> Rule:
        """This rule, with the requests recorded in the audit trail as ``audit`` says."""
        return replace(self, name=f"{self.name}+{audit.action}", audit=audit)

    def admits(self, principal: Principal, path_params: dict[str, str]) -> bool:
        if principal.role is not None:
            return principal.role in self.roles and (principal.in_every_partition or not self.every_partition)
        if principal.edge is not None:
            return self.edge
        if principal.dicomweb is not None:
            return self.clinician
        if principal.job is not None and principal.share is None:
            # Jobs run on the default partition's studies: a job token reaches its study under that base path only.
            return (self.job and path_params.get("study") == principal.job.study_uid
                    and path_params.get("partition", DEFAULT_SLUG) == DEFAULT_SLUG)
        return self.share and principal.share is not None

    async def __call__(self, request: Request) -> Principal | None:
        """The dependency: the caller this rule admitted (admitting it now if the route class has not)."""
        return await admit(self, request)


def allow(name: str, *roles: str, share: bool = False, job: bool = False, clinician: bool = False) -> Rule:
    return Rule(name, frozenset(roles), share=share, job=job, clinician=clinician)


ACCOUNT_ROLES = ("admin", "physician", "patient", "vendor")

#: Anybody; credentials are not even read (liveness and readiness probes, static files).
OPEN = Rule("open", credentials=Credentials.IGNORED)
#: Anybody; credentials are read when sent (sign-in, share links, sign-out).
PUBLIC = Rule("public", credentials=Credentials.OPTIONAL)
#: Any signed-in account (not a share visitor, not a job token).
ACCOUNTS = allow("accounts", *ACCOUNT_ROLES)
#: Any account or a share visitor (whose scope holds its one study).
ACCOUNTS_AND_SHARES = allow("accounts-and-shares", *ACCOUNT_ROLES, share=True)
#: The people who open studies: staff, patients and share visitors (vendors see none directly).
VIEWERS = allow("viewers", "admin", "physician", "patient", share=True)
#: Reading one study's DICOMweb resources (``{study}`` in the path): accounts, share visitors,
#: clinician share tokens (their scope holds their study) and the plugin job token of that study.
STUDY_READERS = allow("study-readers", *ACCOUNT_ROLES, share=True, job=True, clinician=True)
#: QIDO-RS searches across studies: accounts, and clinician share tokens, whose scope holds their one
#: study (as DICOMweb clients and OHIF find a study by searching ``/studies?StudyInstanceUID=``).
SEARCHERS = allow("searchers", *ACCOUNT_ROLES, clinician=True)
#: Admins and physicians.
STAFF = allow("staff", "admin", "physician")
#: STOW-RS: staff, and the plugin job token of the study in the URL.
STOW_WRITERS = allow("staff-or-job", "admin", "physician", job=True).audited(STOW)
ADMIN = allow("admin", "admin")
#: The installation's own figures (``/metrics`` counts every partition's work): the default partition's admins.
INSTALLATION_ADMIN = Rule("installation-admin", frozenset({"admin"}), every_partition=True)
ADMIN_DELETE = ADMIN.audited(DELETE)
#: The change feed: admins (an integration engine signs in with an admin's API key), every read audited.
FEED_READERS = ADMIN.audited(CHANGEFEED)
#: Registering, listing and deleting webhooks and reading their delivery log: admins, audited.
WEBHOOK_ADMINS = ADMIN.audited(WEBHOOK)
#: Routing destinations, their queues and forwards, and re-sends: admins, audited.
ROUTING_ADMINS = ADMIN.audited(ROUTING)
#: Modality worklist entries (scheduled by hand, listed, cancelled): admins, audited.
WORKLIST_ADMINS = ADMIN.audited(WORKLIST)
#: The patient message log and re-sends: admins, audited.
NOTIFY_ADMINS = ADMIN.audited(NOTIFICATIONS)
#: The list of instances rejection notes withheld: admins, audited (corrections audit themselves).
REJECTION_READERS = ADMIN.audited(REJECTION)
PATIENT = allow("patient", "patient")
ADMIN_OR_PATIENT = allow("admin-or-patient", "admin", "patient")
#: Who may share a study (a patient only its own, as the handler checks).
SHARERS = allow("sharers", "admin", "physician", "patient")
#: Plugins, jobs and benchmarks: staff and vendors.
AI_READERS = allow("ai-readers", "admin", "physician", "vendor")
VENDOR_OR_ADMIN = allow("vendor-or-admin", "admin", "vendor")
#: Edge workers leasing and finishing clinical plugin jobs (``/api/edge/…``): their tokens only.
EDGE_WORKERS = Rule("edge-workers", edge=True)
#: Edge workers fetching the file of an admitted, enabled algorithm package: their tokens only, audited.
EDGE_PACKAGES = EDGE_WORKERS.audited(PACKAGE_DOWNLOAD)

# The admitted caller, typed, for handlers that need it.
Visitor = Annotated[Principal | None, Depends(PUBLIC)]
Account = Annotated[Principal, Depends(ACCOUNTS)]
AccountOrShare = Annotated[Principal, Depends(ACCOUNTS_AND_SHARES)]
Viewer = Annotated[Principal, Depends(VIEWERS)]
Staff = Annotated[Principal, Depends(STAFF)]
Admin = Annotated[Principal, Depends(ADMIN)]
Patient = Annotated[Principal, Depends(PATIENT)]
AdminOrPatient = Annotated[Principal, Depends(ADMIN_OR_PATIENT)]
Sharer = Annotated[Principal, Depends(SHARERS)]
AiReader = Annotated[Principal, Depends(AI_READERS)]
VendorOrAdmin = Annotated[Principal, Depends(VENDOR_OR_ADMIN)]
EdgeWorker = Annotated[Principal, Depends(EDGE_WORKERS)]
EdgePackageReader = Annotated[Principal, Depends(EDGE_PACKAGES)]
FeedReader = Annotated[Principal, Depends(FEED_READERS)]
WebhookAdmin = Annotated[Principal, Depends(WEBHOOK_ADMINS)]
RoutingAdmin = Annotated[Principal, Depends(ROUTING_ADMINS)]
WorklistAdmin = Annotated[Principal, Depends(WORKLIST_ADMINS)]
NotifyAdmin = Annotated[Principal, Depends(NOTIFY_ADMINS)]
RejectionReader = Annotated[Principal, Depends(REJECTION_READERS)]


async def admit(rule: Rule, request: Request) -> Principal | None:
    """Authenticate the caller as far as ``rule`` needs and refuse it unless the rule admits it.

    Idempotent per request: the route class admits first, the dependency reads the result. The
    principal, its CSRF token and the resolution (stale cookies to clear) land in the request's
    state; the rule too, so that the audit trail records the request as the rule declares.
    """
    state = request.state
    if getattr(state, "admitted", None) == rule:
        principal: Principal | None = state.principal
        return principal
    state.rule = rule
    if rule.credentials is Credentials.IGNORED:
        state.principal, state.csrf = None, ""
    else:
        resolution = await _resolve(request)
        if rule.credentials is Credentials.REQUIRED:
            _check(rule, request, resolution)
    state.admitted = rule
    admitted: Principal | None = state.principal
    return admitted


async def _resolve(request: Request) -> Resolution:
    state = request.state
    resolution: Resolution | None = getattr(state, "resolution", None)
    if resolution is None:
        auth: Authenticator = request.app.state.authenticator
        resolution = await anyio.to_thread.run_sync(
            auth.resolve, request.headers.get("authorization"), request.cookies.get(SESSION_COOKIE),
            request.cookies.get(SHARE_COOKIE),
        )  # fmt: skip
        state.resolution = resolution
        state.principal, state.csrf = resolution.principal, resolution.csrf
    return resolution


def _check(rule: Rule, request: Request, resolution: Resolution) -> None:
    principal = resolution.principal
    if principal is None:
        if resolution.bad_bearer:
            raise AccessRefused(401, "the bearer token or API key is not valid",
                                {"WWW-Authenticate": 'Bearer error="invalid_token"'}, page=False)
        raise AccessRefused(401, "sign in first: send a bearer token or an API key", {"WWW-Authenticate": "Bearer"})
    if not rule.admits(principal, request.path_params):
        raise AccessRefused(403, refusal_text(principal))
    # Only cookies are sent by browsers on their own: bearer tokens and API keys need no CSRF defence
    # (and may come cross-origin from the CORS_ORIGINS allowed).
    if request.method not in SAFE_METHODS and principal.via in ("session", "share"):
        if cross_site(request):
            raise AccessRefused(403, "cross-site requests are refused", page=False)
        sent = request.headers.get(CSRF_HEADER, "")
        if not resolution.csrf or not hmac.compare_digest(sent.encode(), resolution.csrf.encode()):
            raise AccessRefused(403, "the request lacks a valid CSRF token; reload the page and try again",
                                page=False)


def refusal_text(principal: Principal) -> str:
    if principal.role is not None:
        return "your account may not do this"
    if principal.edge is not None:
        return f"an edge worker's token ({principal.edge}) only leases and finishes plugin jobs"
    if principal.dicomweb is not None:
        return "this share token only reads its one study over DICOMweb (QIDO-RS and WADO-RS)"
    if principal.job is not None and principal.share is None:
        return (f"this plugin job token (job {principal.job.job_id}) only reads its job's study over DICOMweb "
                "and stores the job's results into it")
    return "a share link opens only its own study"


def cross_site(request: Request) -> bool:
    """A state change sent by another site's page (``Sec-Fetch-Site`` or a foreign ``Origin``)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return False
    own = f"{request.url.scheme}://{request.url.netloc}"
    return origin.rstrip("/") != own


def wants_html(request: Request) -> bool:
    """A browser asking for a page (not an API, DICOMweb or WADO client)."""
    if request.url.path.startswith(("/api/", "/dicomweb/", "/wado")):
        return False
    return "text/html" in request.headers.get("accept", "")
