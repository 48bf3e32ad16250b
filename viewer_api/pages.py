"""Server-rendered pages: one Jinja2 environment (autoescaping on) and the static files.

Every page gets the caller, its CSRF token (echoed by scripts in ``X-CSRF-Token``) and versioned
static URLs (``?v=`` content hash, so browsers may cache them for a long time).
"""

from __future__ import annotations

import hashlib
from functools import cache
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from fastapi import Request
from fastapi.responses import HTMLResponse
from fastapi.staticfiles import StaticFiles
from jinja2 import Environment, FileSystemLoader, select_autoescape
from starlette.types import Scope

from viewer_api.auth.dependencies import optional_principal
from viewer_api.viewer.model import display_name

HERE = Path(__file__).parent
TEMPLATES_DIR = HERE / "templates"
STATIC_DIR = HERE / "static"

ENV = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(["html", "xml"], default=True),
    trim_blocks=True,
    lstrip_blocks=True,
)


@cache
def _version(name: str) -> str:
    try:
        return hashlib.sha256((STATIC_DIR / name).read_bytes()).hexdigest()[:12]
    except OSError:
        return "0"


def static_url(name: str) -> str:
    return f"/static/{name}?v={_version(name)}"


def page_params(params: Any, page: int) -> str:
    """The query string of ``params`` with ``page`` replaced (worklist pager)."""
    items = [(k, v) for k, v in params.multi_items() if k != "page"] + [("page", str(page))]
    return urlencode(items)


ENV.globals["static_url"] = static_url
ENV.filters["pageparams"] = page_params
ENV.filters["person"] = display_name


def render(request: Request, template: str, status: int = 200, headers: dict[str, str] | None = None,
           **context: Any) -> HTMLResponse:
    """``template`` rendered with the caller, its CSRF token and ``context``; never cached."""
    principal = optional_principal(request)
    body = ENV.get_template(template).render(
        request=request, principal=principal, csrf=getattr(request.state, "csrf", ""), **context
    )
    hdrs = {"Cache-Control": "no-store"}
    hdrs.update(headers or {})
    return HTMLResponse(body, status_code=status, headers=hdrs)


class VersionedStatic(StaticFiles):
    """Static files; versioned URLs are immutable, so they may be cached for a year."""

    async def get_response(self, path: str, scope: Scope) -> Any:
        response = await super().get_response(path, scope)
        query = scope.get("query_string", b"")
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if b"v=" in query else "no-cache"
        return response


def static_files() -> StaticFiles:
    return VersionedStatic(directory=STATIC_DIR)
