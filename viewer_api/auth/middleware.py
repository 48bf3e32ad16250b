"""The ASGI middleware in front of every route: authenticate, apply the route policy, check CSRF,
add the security headers (CSP, ``nosniff``, framing, referrer and robots policies), and record the
DICOMweb requests the audit trail needs (:mod:`viewer_api.auth.http_audit`).

Pure ASGI (no ``BaseHTTPMiddleware``) so streamed DICOMweb responses pass through untouched. The
principal lands in ``request.state.principal`` for the handlers.
"""

from __future__ import annotations

import hmac
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio.to_thread
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response

from pacs.accounts.audit import AuditEvent, record
from viewer_api.auth.authenticator import CSRF_HEADER, SESSION_COOKIE, SHARE_COOKIE, Authenticator, Resolution
from viewer_api.auth.http_audit import HttpAuditEvent, classify
from viewer_api.auth.policy import Decision, decide, is_public

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]
LoginPage = Callable[[Request, int], Response]
MessagePage = Callable[[Request, int, str, str], Response]

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_NO_AUTH_PATHS = ("/static/", "/healthz", "/readyz", "/favicon.ico", "/robots.txt")

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


def content_security_policy(path: str) -> str:
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


class AuthMiddleware:
    def __init__(self, app: ASGIApp, authenticator: Authenticator, login_page: LoginPage,
                 message_page: MessagePage) -> None:
        self.app = app
        self.auth = authenticator
        self.login_page = login_page
        self.message_page = message_page

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        extra_cookies: list[bytes] = []
        status = 0

        async def send_with_headers(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
                headers = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                headers.extend(h for h in security_headers(path) if h[0] not in present)
                headers.extend((b"set-cookie", c) for c in extra_cookies)
                message["headers"] = headers
            await send(message)

        if path.startswith(_NO_AUTH_PATHS):
            await self.app(scope, receive, send_with_headers)
            return

        request = Request(scope)
        resolution: Resolution = await anyio.to_thread.run_sync(
            self.auth.resolve,
            request.headers.get("authorization"),
            request.cookies.get(SESSION_COOKIE),
            request.cookies.get(SHARE_COOKIE),
        )
        secure = request.url.scheme == "https"
        if resolution.stale_session:
            extra_cookies.append(expired_cookie(SESSION_COOKIE, secure))
        if resolution.stale_share:
            extra_cookies.append(expired_cookie(SHARE_COOKIE, secure))
        state = scope.setdefault("state", {})
        state["principal"] = resolution.principal
        state["csrf"] = resolution.csrf

        method: str = scope["method"]
        refusal = self._refusal(request, method, path, resolution)
        try:
            if refusal is not None:
                await refusal(scope, receive, send_with_headers)
            else:
                await self.app(scope, receive, send_with_headers)
        finally:
            event = classify(method, path, scope.get("query_string", b"").decode("latin-1"), status or 500)
            if event is not None:
                await anyio.to_thread.run_sync(self._record, request, resolution, event)

    def _record(self, request: Request, resolution: Resolution, event: HttpAuditEvent) -> None:
        source = request.client.host if request.client else ""
        record(self.auth.engine, AuditEvent.by(resolution.principal, event.action, outcome=event.outcome,
                                               study_uid=event.study_uid, detail=event.detail, source=source))

    def _refusal(self, request: Request, method: str, path: str, resolution: Resolution) -> Response | None:
        principal = resolution.principal
        decision = decide(method, path, principal)
        if decision is Decision.UNAUTHENTICATED:
            if resolution.bad_bearer:
                return _plain(401, "the bearer token or API key is not valid",
                              {"WWW-Authenticate": 'Bearer error="invalid_token"'})
            if method == "GET" and wants_html(request):
                return self.login_page(request, 401)
            return _plain(401, "sign in first: send a bearer token or an API key", {"WWW-Authenticate": "Bearer"})
        if decision is Decision.FORBIDDEN:
            text = "a share link opens only its own study" if principal is not None and principal.role is None \
                else "your account may not do this"
            if method == "GET" and wants_html(request):
                return self.message_page(request, 403, "Not available", text[0].upper() + text[1:] + ".")
            return _plain(403, text)
        if method in SAFE_METHODS or is_public(path):
            return None
        # Only cookies are sent by browsers on their own: bearer tokens and API keys need no CSRF defence
        # (and may come cross-origin from the CORS_ORIGINS allowed).
        if principal is not None and principal.via in ("session", "share"):
            if cross_site(request):
                return _plain(403, "cross-site requests are refused")
            sent = request.headers.get(CSRF_HEADER, "")
            if not resolution.csrf or not hmac.compare_digest(sent.encode(), resolution.csrf.encode()):
                return _plain(403, "the request lacks a valid CSRF token; reload the page and try again")
        return None


def wants_html(request: Request) -> bool:
    path = request.url.path
    if path.startswith(("/api/", "/dicomweb/", "/wado")):
        return False
    return "text/html" in request.headers.get("accept", "")


def cross_site(request: Request) -> bool:
    """A state change sent by another site's page (``Sec-Fetch-Site`` or a foreign ``Origin``)."""
    if request.headers.get("sec-fetch-site") == "cross-site":
        return True
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return False
    own = f"{request.url.scheme}://{request.url.netloc}"
    return origin.rstrip("/") != own


def expired_cookie(name: str, secure: bool) -> bytes:
    value = f"{name}=; Path=/; Max-Age=0; HttpOnly; SameSite=Lax" + ("; Secure" if secure else "")
    return value.encode("latin-1")


def _plain(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    hdrs = {"Cache-Control": "no-store"}
    hdrs.update(headers or {})
    return PlainTextResponse(message[0].upper() + message[1:] + ".\n", status_code=status, headers=hdrs)
