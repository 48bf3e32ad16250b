"""QIDO-RS search (PS3.18 10.6) on the query engine C-FIND uses, answered from the index alone.

This module only translates HTTP to a :class:`~pacs.query.QueryRequest`: keys by keyword or tag,
``includefield``, ``fuzzymatching``, ``limit`` (default 100, at most 1000) and ``offset``; then adds
each match's RetrieveURL. An empty result is ``200 []`` (CP-2473).
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from fastapi import APIRouter, Depends, Request
from fastapi.responses import Response

from pacs.access import AccessScope
from pacs.errors import InvalidQuery
from pacs.query import Level, Match, QueryRequest, resolve_keyword, run_query
from viewer_api.access import current_scope
from viewer_api.auth.access import SEARCHERS, STUDY_READERS
from viewer_api.auth.http_audit import SEARCH
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.dicomweb.encoding import dumps, json_media_type, json_response
from viewer_api.dicomweb.media import BadRequest
from viewer_api.dicomweb.params import dicomweb_base, flag, int_param, uid

router = APIRouter(tags=["DICOMweb"], route_class=DeclaredRoute)

DEFAULT_LIMIT = 100
MAX_LIMIT = 1000
_RESERVED = {"limit", "offset", "fuzzymatching", "includefield", "accept", "charset"}
_MAX_VALUE = 1024


def build_request(params: Iterable[tuple[str, str]], level: Level, scope: AccessScope,
                  fixed: dict[str, str]) -> QueryRequest:  # fmt: skip
    """A query from decoded query parameters; ``fixed`` holds the UIDs of the URL path."""
    filters: dict[str, str] = {}
    return_keys: list[str] = []
    include_all = False
    fuzzy = False
    limit = DEFAULT_LIMIT
    offset = 0
    for key, value in params:
        name = key.strip()
        lowered = name.lower()
        if lowered == "limit":
            limit = int_param(value, "limit", DEFAULT_LIMIT, 1, MAX_LIMIT)
        elif lowered == "offset":
            offset = int_param(value, "offset", 0, 0, 10**9)
        elif lowered == "fuzzymatching":
            fuzzy = flag(value, "fuzzymatching")
        elif lowered == "includefield":
            for item in value.split(","):
                item = item.strip()
                if item.lower() == "all":
                    include_all = True
                elif item:
                    return_keys.append(_keyword(item))
        elif lowered in _RESERVED:
            continue
        else:
            keyword = _keyword(name)
            if keyword in filters:
                raise BadRequest(f"{keyword} is given more than once")
            if len(value) > _MAX_VALUE:
                raise BadRequest(f"the value of {keyword} is too long")
            filters[keyword] = _uid_list(value) if keyword.endswith("UID") else value
    for keyword, value in fixed.items():
        if keyword in filters and filters[keyword] not in ("", value):
            raise BadRequest(f"{keyword} in the query contradicts the URL")
        filters[keyword] = value
    return QueryRequest(level, filters, return_keys, include_all=include_all, fuzzy=fuzzy, limit=limit,
                        offset=offset, scope=scope)  # fmt: skip


def _keyword(key: str) -> str:
    if "." in key:
        raise BadRequest(f"{key[:70]!r}: matching on sequence items is not supported")
    try:
        return resolve_keyword(key)
    except InvalidQuery as exc:
        raise BadRequest(str(exc)) from None


def _uid_list(value: str) -> str:
    """UID list matching (PS3.18 8.3.4.1): commas or backslashes between UIDs."""
    return "\\".join(v.strip() for v in value.replace(",", "\\").split("\\"))


def retrieve_url(match: Match, base: str) -> str:
    study = match.get("StudyInstanceUID")
    url = f"{base}studies/{study}"
    if match.level in (Level.SERIES, Level.IMAGE):
        url += f"/series/{match.get('SeriesInstanceUID')}"
    if match.level is Level.IMAGE:
        url += f"/instances/{match.get('SOPInstanceUID')}"
    return url


async def _search(request: Request, scope: AccessScope, level: Level, fixed: dict[str, str]) -> Response:
    media_type = json_media_type(request)
    query = build_request(request.query_params.multi_items(), level, scope, fixed)
    archive = archive_of(request)
    base = dicomweb_base(request)

    def work() -> Response:
        out = []
        for match in run_query(archive.engine, query):
            item = match.to_json()
            item["00081190"] = {"vr": "UR", "Value": [retrieve_url(match, base)]}
            out.append(dict(sorted(item.items())))
        return json_response(request, dumps(out), media_type)

    return await asyncio.to_thread(work)


@router.get("/studies", summary="Search for studies (QIDO-RS)", dependencies=[Depends(SEARCHERS.audited(SEARCH))])
async def search_studies(request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    return await _search(request, scope, Level.STUDY, {})


@router.get("/series", summary="Search for series (QIDO-RS)", dependencies=[Depends(SEARCHERS)])
async def search_series(request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    return await _search(request, scope, Level.SERIES, {})


@router.get("/instances", summary="Search for instances (QIDO-RS)", dependencies=[Depends(SEARCHERS)])
async def search_instances(request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    return await _search(request, scope, Level.IMAGE, {})


@router.get("/studies/{study}/series", summary="Search for series of a study",
            dependencies=[Depends(STUDY_READERS)])
async def search_study_series(study: str, request: Request, scope: AccessScope = Depends(current_scope)) -> Response:
    return await _search(request, scope, Level.SERIES, {"StudyInstanceUID": uid(study, "StudyInstanceUID")})


@router.get("/studies/{study}/instances", summary="Search for instances of a study",
            dependencies=[Depends(STUDY_READERS)])
async def search_study_instances(study: str, request: Request,
                                 scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    return await _search(request, scope, Level.IMAGE, {"StudyInstanceUID": uid(study, "StudyInstanceUID")})


@router.get("/studies/{study}/series/{series}/instances", summary="Search for instances of a series",
            dependencies=[Depends(STUDY_READERS)])
async def search_series_instances(study: str, series: str, request: Request,
                                  scope: AccessScope = Depends(current_scope)) -> Response:  # fmt: skip
    fixed = {"StudyInstanceUID": uid(study, "StudyInstanceUID"), "SeriesInstanceUID": uid(series, "SeriesInstanceUID")}
    return await _search(request, scope, Level.IMAGE, fixed)
