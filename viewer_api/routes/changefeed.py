"""The change feed over HTTP: ``GET /api/changefeed?since=SEQ&limit=N`` and ``GET /api/changefeed/latest``.

The shape of each entry is Microsoft's DICOM change feed (``Sequence``, ``StudyInstanceUid``,
``SeriesInstanceUid``, ``SopInstanceUid``, ``Action``, ``Timestamp``, ``State``, ``Metadata``),
plus ``Detail`` on events that say more than their UIDs; :mod:`pacs.events` defines it, for the
feed and for webhook bodies alike.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse

from pacs.access import AccessScope
from pacs.events import MAX_LIMIT, latest, parse_actions, read_feed
from viewer_api.auth.access import FeedReader
from viewer_api.auth.dependencies import current_scope
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["changefeed"], route_class=DeclaredRoute)

_ENTRY_EXAMPLE: dict[str, Any] = {
    "Sequence": 42, "StudyInstanceUid": "1.2.3", "SeriesInstanceUid": "1.2.3.4", "SopInstanceUid": "1.2.3.4.5",
    "Action": "create", "Timestamp": "2026-12-07T01:30:00.123456Z", "State": "current", "Metadata": None,
}  # fmt: skip
_NO_STORE = {"Cache-Control": "no-store"}


@router.get("/api/changefeed", summary="Change feed", responses={200: {"content": {
    "application/json": {"example": [_ENTRY_EXAMPLE]}}}})  # fmt: skip
async def changefeed(
    _reader: FeedReader,
    request: Request,
    since: int = Query(0, ge=0, description="the last Sequence already read (0: from the start)"),
    offset: int | None = Query(None, ge=0, description="Microsoft's change feed name for since"),
    limit: int = Query(100, ge=1, le=MAX_LIMIT),
    action: list[str] = Query(default_factory=list, description="only these actions (repeat to combine)"),
    include_metadata: bool = Query(False, alias="includeMetadata",
                                   description="the instance's DICOM JSON on create/update events still current"),
    scope: AccessScope = Depends(current_scope),
) -> JSONResponse:
    """Events after ``since`` in sequence order: create, update, delete, stable, ai-result (report-signed
    once reports exist). Read on with ``since`` = the last ``Sequence`` returned; an empty page means
    the reader is up to date."""
    try:
        actions = parse_actions(action)
    except ValueError as exc:
        raise HTTPException(400, str(exc)) from None
    entries = await run_in_threadpool(read_feed, archive_of(request).engine, since=since if offset is None else offset,
                                      limit=limit, scope=scope,
                                      actions=actions, include_metadata=include_metadata)  # fmt: skip
    return JSONResponse([e.to_json() for e in entries], headers=_NO_STORE)


@router.get("/api/changefeed/latest", summary="The newest change feed event",
            responses={200: {"content": {"application/json": {"example": _ENTRY_EXAMPLE}}}})  # fmt: skip
async def changefeed_latest(
    _reader: FeedReader,
    request: Request,
    scope: AccessScope = Depends(current_scope),
) -> JSONResponse:
    """The newest event (a new reader starts after its ``Sequence``); ``{"Sequence": 0}`` while the feed is empty."""
    entry = await run_in_threadpool(latest, archive_of(request).engine, scope)
    return JSONResponse(entry.to_json() if entry else {"Sequence": 0}, headers=_NO_STORE)
