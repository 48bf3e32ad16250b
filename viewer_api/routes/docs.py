"""The OpenAPI description and its Swagger UI (``/openapi.json``, ``/docs``), for signed-in accounts.

Served here rather than by FastAPI's built-in routes so that they declare their access rule like
every other route.
"""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request
from fastapi.openapi.docs import get_swagger_ui_html, get_swagger_ui_oauth2_redirect_html
from fastapi.responses import HTMLResponse, JSONResponse

from viewer_api.auth.access import ACCOUNTS
from viewer_api.auth.routing import DeclaredRoute

OPENAPI_URL = "/openapi.json"
DOCS_URL = "/docs"
_REDIRECT_URL = DOCS_URL + "/oauth2-redirect"

router = APIRouter(include_in_schema=False, route_class=DeclaredRoute, dependencies=[Depends(ACCOUNTS)])


@router.get(OPENAPI_URL)
async def openapi(request: Request) -> JSONResponse:
    return JSONResponse(request.app.openapi())


@router.get(DOCS_URL)
async def swagger_ui(request: Request) -> HTMLResponse:
    return get_swagger_ui_html(openapi_url=OPENAPI_URL, title=f"{request.app.title} - Swagger UI",
                               oauth2_redirect_url=_REDIRECT_URL)


@router.get(_REDIRECT_URL)
async def swagger_ui_redirect() -> HTMLResponse:
    return get_swagger_ui_oauth2_redirect_html()
