"""Turning request credentials into a :class:`~pacs.accounts.principal.Principal`.

Order: ``Authorization: Bearer`` (an API key ``cfk_…``, an edge worker's token ``cfe_…``, a
clinician share's DICOMweb token ``cfs_…``, a JWT access token, or a plugin job token from
:mod:`ai_plugins.runner.tokens`; if present it must be valid, no fallback), then the browser session
cookie, then the share cookie (which adds its one study to a signed-in user, or stands alone for a
visitor). Every credential is re-checked against
the database on each request, so disabling a user or revoking a key or link takes effect at once;
when the database cannot answer, :class:`~pacs.errors.StorageUnavailable` says so (503, retry later).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import timedelta

from sqlalchemy import Engine
from sqlalchemy.exc import SQLAlchemyError

from ai_plugins.benchmarks.visibility import restrict_from_db
from ai_plugins.review.service import release_reviewed
from ai_plugins.runner.own_results import release_own_results
from ai_plugins.runner.tokens import check_job_token
from pacs.accounts.api_keys import authenticate_api_key
from pacs.accounts.edge_workers import PREFIX as EDGE_PREFIX
from pacs.accounts.edge_workers import authenticate_edge_worker
from pacs.accounts.keys import secret_key
from pacs.accounts.principal import DicomwebGrant, PluginJob, Principal
from pacs.accounts.shares import DICOMWEB_TOKEN_PREFIX, ShareStatus, active_grant, find_dicomweb_share
from pacs.accounts.users import active_user
from pacs.errors import StorageUnavailable
from pacs.settings import Settings
from viewer_api.auth.tokens import TokenSigner

SESSION_COOKIE = "cf_session"
SHARE_COOKIE = "cf_share"
CSRF_HEADER = "x-csrf-token"
CSRF_FIELD = "csrf_token"


@dataclass(frozen=True, slots=True)
class Resolution:
    """The outcome of authenticating one request."""

    principal: Principal | None
    csrf: str = ""  # the value cookie-authenticated changes must echo
    bad_bearer: bool = False  # an Authorization header was sent and is not valid
    stale_session: bool = False  # a session cookie was sent and is no longer valid (clear it)
    stale_share: bool = False
    # A clinician share's DICOMweb token that was issued but is expired or revoked: its refusals are audited.
    refused_share_token: DicomwebGrant | None = None


class Authenticator:
    """Holds the signing key and the settings that govern credentials."""

    def __init__(self, engine: Engine, settings: Settings) -> None:
        self.engine = engine
        self.settings = settings
        self.key = secret_key(settings)
        self.signer = TokenSigner(self.key)
        self.disabled = settings.auth_disabled

    @property
    def session_lifetime(self) -> timedelta:
        return timedelta(hours=self.settings.session_hours)

    @property
    def token_lifetime(self) -> timedelta:
        return timedelta(minutes=self.settings.token_minutes)

    def resolve(self, authorization: str | None, session: str | None, share: str | None) -> Resolution:
        resolution = self._resolve(authorization, session, share)
        return replace(resolution, principal=self.restrict(resolution.principal))

    def restrict(self, principal: Principal | None) -> Principal | None:
        """``principal`` with the benchmark studies it may not see hidden (issue 7: test cases, copies) and
        the result objects it may see released (issue 13: a job's own vendor's; for patients and share
        visitors the physicians' documents of accepted findings)."""
        try:
            restricted = restrict_from_db(self.engine, principal)
            if restricted is None:
                return None
            restricted = release_own_results(self.engine, restricted)
            return release_reviewed(self.engine, restricted, self.settings.patient_ai)
        except SQLAlchemyError as exc:  # the accounts services map their own; these reads are the AI layer's
            raise StorageUnavailable("the index database is unreachable") from exc

    def _resolve(self, authorization: str | None, session: str | None, share: str | None) -> Resolution:
        if self.disabled:
            return Resolution(Principal.local_admin())
        if authorization:
            return self._bearer(authorization)
        principal: Principal | None = None
        csrf = ""
        stale_session = stale_share = False
        if session:
            claims = self.signer.check(session, "session")
            user = active_user(self.engine, claims.subject) if claims else None
            if user is None or claims is None:
                stale_session = True
            else:
                principal, csrf = user.principal("session"), claims.csrf
        if share:
            claims = self.signer.check(share, "share")
            grant = active_grant(self.engine, claims.subject) if claims else None
            if grant is None or claims is None:
                stale_share = True
            elif principal is None:
                principal, csrf = Principal(share=grant, via="share"), claims.csrf
            else:
                principal = Principal(user_id=principal.user_id, username=principal.username, role=principal.role,
                                      patient_keys=principal.patient_keys, share=grant, via="session")
        return Resolution(principal, csrf, stale_session=stale_session, stale_share=stale_share)

    def _bearer(self, authorization: str) -> Resolution:
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            return Resolution(None, bad_bearer=True)
        if credential.startswith("cfk_"):
            user = authenticate_api_key(self.engine, credential)
            return Resolution(user.principal("api_key") if user else None, bad_bearer=user is None)
        if credential.startswith(EDGE_PREFIX):
            edge = authenticate_edge_worker(self.engine, credential)
            if edge is None:
                return Resolution(None, bad_bearer=True)
            return Resolution(Principal(username=f"edge:{edge.name}", edge=edge.name, via="api_key"))
        if credential.startswith(DICOMWEB_TOKEN_PREFIX):
            return self._share_token(credential)
        claims = self.signer.check(credential, "access")
        if claims is None:
            job = check_job_token(self.key, credential)
            if job is not None:
                grant = PluginJob(job.job_id, job.study_uid, job.plugin)
                return Resolution(Principal(username=f"job:{job.job_id} {job.plugin}"[:64], job=grant, via="bearer"))
            return Resolution(None, bad_bearer=True)
        user = active_user(self.engine, claims.subject)
        return Resolution(user.principal("bearer") if user else None, bad_bearer=user is None)

    def _share_token(self, credential: str) -> Resolution:
        share = find_dicomweb_share(self.engine, credential)
        if share is None:
            return Resolution(None, bad_bearer=True)
        if share.status() is not ShareStatus.ACTIVE:
            return Resolution(None, bad_bearer=True, refused_share_token=share.dicomweb_grant())
        return Resolution(Principal(username=f"share:{share.id}", dicomweb=share.dicomweb_grant(), via="share_token"))
