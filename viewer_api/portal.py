"""Accounts, share links, the web viewer and the audit trail on the HTTP app (issue 5).

:func:`install` adds the authentication middleware in front of every route (DICOMweb included),
the sign-in and credential routes, share links, the viewer pages, downloads, the audit API and the
static files.
"""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import PlainTextResponse, Response

from pacs.accounts.errors import Forbidden, InvalidAccountData, Locked
from pacs.archive import Archive
from viewer_api.auth import routes as auth_routes
from viewer_api.auth.authenticator import Authenticator
from viewer_api.auth.middleware import AuthMiddleware
from viewer_api.errors import STATUS_OF
from viewer_api.pages import render, static_files
from viewer_api.routes import audit, downloads, share_pages, shares, viewer_pages


def install(app: FastAPI, archive: Archive) -> Authenticator:
    """Add the portal to ``app``; call it before any outer middleware (CORS) is added."""
    auth = Authenticator(archive.engine, archive.settings)
    app.state.authenticator = auth
    STATUS_OF.update({InvalidAccountData: 400, Forbidden: 403, Locked: 429})
    for module in (auth_routes, shares, share_pages, viewer_pages, audit, downloads):
        app.include_router(module.router)
    app.mount("/static", static_files(), name="static")
    app.add_api_route("/robots.txt", _robots, include_in_schema=False)
    app.add_middleware(AuthMiddleware, authenticator=auth, login_page=auth_routes.login_page,
                       message_page=message_page)
    return auth


def message_page(request: Request, status: int, title: str, text: str) -> Response:
    return render(request, "message.html", status=status, title=title, text=text)


async def _robots() -> PlainTextResponse:
    return PlainTextResponse("User-agent: *\nDisallow: /\n")
