"""Accounts, share links, the web viewer and the audit trail on the HTTP app (issue 5).

:func:`install` adds the security middleware in front of every route (DICOMweb included), the
answer to a request a route's access rule refuses, the sign-in and credential routes, share
links, the viewer pages, downloads, the audit API and the static files.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import PlainTextResponse, RedirectResponse, Response

from pacs.accounts.errors import Forbidden, InvalidAccountData, Locked
from pacs.archive import Archive
from viewer_api.auth import routes as auth_routes
from viewer_api.auth.access import OPEN, AccessRefused, wants_html
from viewer_api.auth.authenticator import Authenticator
from viewer_api.auth.middleware import SecurityMiddleware
from viewer_api.auth.routing import DeclaredMount, DeclaredRoute
from viewer_api.errors import STATUS_OF, error_response
from viewer_api.i18n import translator_for
from viewer_api.pages import render, static_files, static_url
from viewer_api.routes import audit, downloads, share_pages, shares, viewer_pages

site = APIRouter(include_in_schema=False, route_class=DeclaredRoute, dependencies=[Depends(OPEN)])


def install(app: FastAPI, archive: Archive) -> Authenticator:
    """Add the portal to ``app``; call it before any outer middleware (CORS) is added."""
    auth = Authenticator(archive.engine, archive.settings)
    app.state.authenticator = auth
    STATUS_OF.update({InvalidAccountData: 400, Forbidden: 403, Locked: 429})
    for module in (auth_routes, shares, share_pages, viewer_pages, audit, downloads):
        app.include_router(module.router)
    app.include_router(site)
    app.router.routes.append(DeclaredMount("/static", static_files(), rule=OPEN, name="static"))
    app.add_exception_handler(AccessRefused, refused)
    app.add_middleware(SecurityMiddleware, engine=archive.engine)
    return auth


async def refused(request: Request, exc: Exception) -> Response:
    """A request its route's rule refused: the sign-in page (401) or a message page (403) for a
    browser asking for a page, else the plain sentence."""
    assert isinstance(exc, AccessRefused)
    if exc.page and request.method == "GET" and wants_html(request):
        if exc.status == 401:
            return auth_routes.login_page(request, 401)
        return message_page(request, exc.status, translator_for(request).t("msg.not_available"),
                            exc.message[0].upper() + exc.message[1:] + ".")
    return error_response(exc.status, exc.message, exc.headers)


def message_page(request: Request, status: int, title: str, text: str) -> Response:
    return render(request, "message.html", status=status, title=title, text=text)


@site.get("/robots.txt")
async def robots() -> PlainTextResponse:
    return PlainTextResponse("User-agent: *\nDisallow: /\n")


@site.get("/favicon.ico")
async def favicon() -> RedirectResponse:
    """Browsers ask for ``/favicon.ico`` on pages that name no icon (JSON, images)."""
    return RedirectResponse(static_url("favicon.svg"), status_code=308)
