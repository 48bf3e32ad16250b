"""The ASGI middleware around every route: security headers (CSP, ``nosniff``, framing, referrer
and robots policies), the clearing of stale credential cookies, and the audit record of each
request whose route declares one (:mod:`viewer_api.auth.http_audit`), written once the response has
gone out, with its final status.

Access itself is decided by each route's declared rule (:mod:`viewer_api.auth.access`), which
leaves the principal, the resolution of its cookies and the rule in the request's state.
Pure ASGI (no ``BaseHTTPMiddleware``) so streamed DICOMweb responses pass through untouched.
"""

from __future__ import annotations

from collections.abc import MutableMapping
from dataclasses import replace
from typing import Any

import anyio.to_thread
from sqlalchemy import Engine
from starlette.datastructures import QueryParams
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from pacs.accounts.audit import AuditEvent, record
from pacs.accounts.principal import DicomwebGrant, Principal
from viewer_api.auth.access import Rule
from viewer_api.auth.authenticator import SESSION_COOKIE, SHARE_COOKIE, Resolution
from viewer_api.auth.http_audit import HttpAuditEvent, RequestFacts, share_token_event
from viewer_api.errors import error_response

CSP_DEFAULT = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
    "connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    "frame-ancestors 'none'"
)
CSP_DOCS = (
    "default-src 'self'; script-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; "
    "style-src 'self' 'unsafe-inline' https://cdn.jsdelivr.net; img-src 'self' data: https://fastapi.tiangolo.com; "
    "object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)
CSP_OHIF = (
    "default-src 'self'; script-src 'self' 'unsafe-eval' 'wasm-unsafe-eval' blob:; worker-src 'self' blob:; "
    "style-src 'self' 'unsafe-inline'; img-src 'self' data: blob:; connect-src 'self' blob: data:; "
    "font-src 'self' data:; object-src 'none'; base-uri 'self'; frame-ancestors 'self'"
)

# The viewer's decode worker compiles the WebAssembly decoders it loads from /codecs/ (same origin).
CSP_DECODE_WORKER = (
    "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; connect-src 'self'; object-src 'none'; "
    "base-uri 'none'; frame-ancestors 'none'"
)
DECODE_WORKER = "/static/decode-worker.js"


def content_security_policy(path: str) -> str:
    if path == DECODE_WORKER or path.startswith("/codecs/"):
        return CSP_DECODE_WORKER
    if path.startswith("/ohif"):
        return CSP_OHIF
    if path.startswith(("/docs", "/redoc")):
        return CSP_DOCS
    return CSP_DEFAULT


def security_headers(path: str) -> list[tuple[bytes, bytes]]:
    framing = b"SAMEORIGIN" if path.startswith("/ohif") else b"DENY"
    referrer = b"no-referrer" if path.startswith("/s/") else b"same-origin"
    return [
        (b"content-security-policy", content_security_policy(path).encode()),
        (b"x-content-type-options", b"nosniff"),
        (b"x-frame-options", framing),
        (b"referrer-policy", referrer),
        (b"x-robots-tag", b"noindex, nofollow, noarchive"),
        (b"cross-origin-opener-policy", b"same-origin"),
    ]


def stale_cookies(state: MutableMapping[str, Any], secure: bool) -> list[bytes]:
    """Expired ``Set-Cookie`` values for the credential cookies that are no longer valid."""
    resolution: Resolution | None = state.get("resolution")
    if resolution is None:
        return []
    names = [name for name, stale in ((SESSION_COOKIE, resolution.stale_session),
                                      (SHARE_COOKIE, resolution.stale_share)) if stale]  # fmt: skip
    return [expired_cookie(name, secure) for name in names]


class SecurityMiddleware:
    def __init__(self, app: ASGIApp, engine: Engine) -> None:
        self.app = app
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        state: MutableMapping[str, Any] = scope.setdefault("state", {})
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in security_headers(path) if h[0] not in present)
                headers.extend((b"set-cookie", c) for c in stale_cookies(state, scope.get("scheme") == "https"))
                message["headers"] = headers
            await send(message)

        refused = nul_in_url(path, scope.get("query_string", b""))
        if refused is not None:
            await error_response(400, refused)(scope, receive, send_with_headers)
            return
        try:
            await self.app(scope, receive, send_with_headers)
        finally:
            event = self._event(scope, state, status or 500)
            if event is not None:
                await anyio.to_thread.run_sync(self._record, scope, state, event)

    @staticmethod
    def _event(scope: Scope, state: MutableMapping[str, Any], status: int) -> HttpAuditEvent | None:
        rule: Rule | None = state.get("rule")
        query = scope.get("query_string", b"").decode("latin-1")
        facts = RequestFacts(scope["method"], scope["path"], query, QueryParams(query), scope.get("path_params", {}),
                             status)  # fmt: skip
        grant = share_token_of(state)
        if grant is not None:
            return share_token_event(rule.audit if rule is not None else None, facts, grant.study_uid)
        if rule is None or rule.audit is None:
            return None
        return rule.audit.event(facts)

    def _record(self, scope: Scope, state: MutableMapping[str, Any], event: HttpAuditEvent) -> None:
        client = scope.get("client")
        entry = AuditEvent.by(state.get("principal"), event.action, outcome=event.outcome, study_uid=event.study_uid,
                              detail=event.detail, source=client[0] if client else "")  # fmt: skip
        slug = scope.get("path_params", {}).get("partition")
        app = scope.get("app")
        if slug and app is not None:  # /dicomweb/p/{partition}/…: the event happened there
            found = app.state.archive.partitions.by_slug(slug)
            if found is not None:
                entry = replace(entry, partition=found.id)
        grant = share_token_of(state)
        if entry.share_id is None and grant is not None:  # an expired or revoked token: no principal
            entry = replace(entry, share_id=grant.share_id)
        record(self.engine, entry)


def share_token_of(state: MutableMapping[str, Any]) -> DicomwebGrant | None:
    """The clinician share whose DICOMweb token the request carried, valid or expired/revoked, or None."""
    principal: Principal | None = state.get("principal")
    if principal is not None:
        return principal.dicomweb
    resolution: Resolution | None = state.get("resolution")
    return resolution.refused_share_token if resolution is not None else None


def expired_cookie(name: str, secure: bool) -> bytes:
    value = f"{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    return value.encode("latin-1")


def nul_in_url(path: str, query: bytes) -> str | None:
    """Why a URL holding a NUL character is refused, naming where, or None. No stored value holds one
    (the index drops them) and PostgreSQL refuses them in any statement parameter."""
    if "\x00" in path:
        return "the request path holds a NUL character"
    if b"%00" not in query:
        return None
    for name, value in QueryParams(query.decode("latin-1")).multi_items():
        if "\x00" in name or "\x00" in value:
            return f"{name[:64].strip(chr(0))} value {value[:64]!r} holds a NUL character, which no stored value holds"
    return None

