"""Server-rendered pages: one Jinja2 environment (autoescaping on) and the static files.

Every page gets the caller, its CSRF token (echoed by scripts in ``X-CSRF-Token``), versioned
static URLs (``?v=`` content hash, so browsers may cache them for a long time) and its language
(:mod:`viewer_api.i18n`: ``t``/``tn``/``date`` for the template, the texts for its scripts, links to
the other languages; ``?lang=`` is kept in a cookie).
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
from viewer_api.i18n import CATALOGUE, LANG_COOKIE, LANGUAGES, translator_for
from viewer_api.i18n.catalogue import LANGUAGE_NAMES, SCRIPT_PREFIX
from viewer_api.i18n.negotiate import LANG_PARAM, requested_language
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


def language_links(request: Request, current: str) -> list[tuple[str, str, str]]:
    """(language, its name, this page's URL in it) for each language but ``current``."""
    links = []
    for lang in LANGUAGES:
        if lang == current:
            continue
        items = [(k, v) for k, v in request.query_params.multi_items() if k != LANG_PARAM] + [(LANG_PARAM, lang)]
        links.append((lang, LANGUAGE_NAMES[lang], f"{request.url.path}?{urlencode(items)}"))
    return links


def render(request: Request, template: str, status: int = 200, headers: dict[str, str] | None = None,
           **context: Any) -> HTMLResponse:
    """``template`` rendered with the caller, its CSRF token, its language and ``context``; never cached."""
    principal = optional_principal(request)
    tr = translator_for(request)
    body = ENV.get_template(template).render(
        request=request, principal=principal, csrf=getattr(request.state, "csrf", ""), lang=tr.lang,
        t=tr.t, tn=tr.plural, fmt=tr, texts=CATALOGUE.texts(tr.lang),
        script_texts=CATALOGUE.texts(tr.lang, prefix=SCRIPT_PREFIX), languages=language_links(request, tr.lang),
        **context,
    )
    hdrs = {"Cache-Control": "no-store", "Content-Language": tr.lang}
    hdrs.update(headers or {})
    response = HTMLResponse(body, status_code=status, headers=hdrs)
    chosen = requested_language(request)
    if chosen is not None and request.cookies.get(LANG_COOKIE) != chosen:
        response.set_cookie(LANG_COOKIE, chosen, max_age=365 * 24 * 3600, httponly=True, samesite="lax",
                            secure=request.url.scheme == "https", path="/")
    return response


class VersionedStatic(StaticFiles):
    """Static files; versioned URLs are immutable, so they may be cached for a year."""

    async def get_response(self, path: str, scope: Scope) -> Any:
        response = await super().get_response(path, scope)
        query = scope.get("query_string", b"")
        response.headers["Cache-Control"] = "public, max-age=31536000, immutable" if b"v=" in query else "no-cache"
        return response


def static_files() -> StaticFiles:
    return VersionedStatic(directory=STATIC_DIR)
