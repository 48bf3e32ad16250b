"""DICOMweb (PS3.18) under ``/dicomweb``, WADO-URI at ``/wado`` and the OHIF viewer at ``/ohif/``.

:func:`install` adds every route to the application. Each module serves one kind of resource
(``stow``, ``qido``, ``wado``, ``metadata``, ``frames``, ``bulk``, ``rendered``, ``delete``,
``wado_uri``); this one adds the protocol hygiene around them: 405 with the full ``Allow`` list for
a known path and a wrong method, and 400/404 for paths that are malformed or unknown. These answer
only the callers the rule of the refused method admits (deletes: admins; other changes: staff;
reads: accounts and clinician share tokens, and share visitors and job tokens under their study),
as the real routes would.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable

from fastapi import APIRouter, Depends, FastAPI
from fastapi.routing import APIRoute
from starlette.exceptions import HTTPException

from viewer_api.auth.access import ADMIN_DELETE, SEARCHERS, STAFF, STUDY_READERS, Rule
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.dicomweb import bulk, delete, frames, metadata, ohif, qido, rendered, stow, wado, wado_uri
from viewer_api.dicomweb.media import BadRequest

PREFIX = "/dicomweb"
_ALL_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE")
_READS = ("GET", "HEAD")
_CHANGES = ("POST", "PUT", "PATCH")
_SAFE_PATH = re.compile(r"^[A-Za-z0-9.,/_-]*$")


#: A partition's DICOMweb root (pacs.partitions): the same routes, over that partition's studies only.
PARTITION_PREFIX = PREFIX + "/p/{partition}"


def dicomweb_router(prefix: str = PREFIX) -> APIRouter:
    router = APIRouter(prefix=prefix, route_class=DeclaredRoute)
    modules = (stow, qido, metadata, frames, bulk, rendered, wado, delete)
    for module in modules:
        router.include_router(module.router)
        router.include_router(head_twins(module.router))
    _add_method_guards(router, [r for m in modules for r in m.router.routes if isinstance(r, APIRoute)])
    for path, endpoint, methods, rule in (("/studies/{study}/{rest:path}", _unknown_in_study, _READS, STUDY_READERS),
                                          ("/{rest:path}", _unknown, _READS, SEARCHERS),
                                          ("/{rest:path}", _unknown, _CHANGES, STAFF),
                                          ("/{rest:path}", _unknown, ("DELETE",), ADMIN_DELETE)):
        router.add_api_route(path, endpoint, methods=list(methods), include_in_schema=False,
                             dependencies=[Depends(rule)])
    return router


def head_twins(source: APIRouter) -> APIRouter:
    """A HEAD route for each GET route of ``source``: answered like GET, without the body (RFC 9110
    9.3.2), under the same access rule. Separate routes, kept out of the OpenAPI schema, so that each
    operation ID stays unique."""
    twins = APIRouter(route_class=DeclaredRoute)
    for route in source.routes:
        if isinstance(route, APIRoute) and "GET" in (route.methods or ()):
            twins.add_api_route(route.path, route.endpoint, methods=["HEAD"], include_in_schema=False,
                                response_class=route.response_class, status_code=route.status_code,
                                name=f"{route.name}_head", dependencies=route.dependencies)
    return twins


def _guard_rule(method: str) -> Rule:
    """Who gets the 405 for ``method``: those who would reach a route of that method."""
    if method == "DELETE":
        return ADMIN_DELETE
    return STAFF if method in _CHANGES else STUDY_READERS


def _add_method_guards(router: APIRouter, routes: list[APIRoute]) -> None:
    """For each path, routes answering the methods it lacks with 405 and the full Allow list."""
    methods: dict[str, set[str]] = {}
    for route in routes:
        methods.setdefault(route.path, set()).update(route.methods or ())
    for path, allowed in methods.items():
        if "GET" in allowed:
            allowed.add("HEAD")
        allow = ", ".join(m for m in _ALL_METHODS if m in allowed)
        for method in (m for m in _ALL_METHODS if m not in allowed):
            router.add_api_route(path, _refuse(allow), methods=[method], include_in_schema=False,
                                 dependencies=[Depends(_guard_rule(method))])


def _refuse(allow: str) -> Callable[[], Awaitable[None]]:
    async def not_allowed() -> None:
        raise HTTPException(405, f"this resource supports {allow}", headers={"Allow": allow})

    return not_allowed


async def _unknown(rest: str) -> None:
    if ".." in rest or "//" in rest or not _SAFE_PATH.match(rest):
        raise BadRequest("the DICOMweb path is malformed")
    raise HTTPException(404, "no such DICOMweb resource")


async def _unknown_in_study(study: str, rest: str) -> None:
    await _unknown(f"studies/{study}/{rest}")


def install(app: FastAPI) -> None:
    """Add DICOMweb, WADO-URI and the OHIF viewer to ``app``."""
    # First, as /dicomweb/{rest:path} would take its paths; out of the schema, which lists each operation once.
    app.include_router(dicomweb_router(PARTITION_PREFIX), include_in_schema=False)
    app.include_router(dicomweb_router())
    app.include_router(wado_uri.router)
    app.include_router(head_twins(wado_uri.router))
    app.include_router(ohif.router)
