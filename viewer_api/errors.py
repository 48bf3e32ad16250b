"""The one mapping of archive errors to HTTP responses: a short sentence, never a traceback.

An outage of the index database or the object store answers 503 with ``Retry-After`` on every
route (RFC 9110 15.6.4): the request may succeed once the archive's parts are back.
"""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import PlainTextResponse, Response
from sqlalchemy.exc import DisconnectionError, InterfaceError, OperationalError
from starlette.exceptions import HTTPException as StarletteHTTPException

from pacs.errors import (
    CloudfilmError,
    Conflict,
    InvalidDataset,
    InvalidQuery,
    NotDicom,
    NotFound,
    StorageUnavailable,
)

log = logging.getLogger(__name__)
#: psycopg2's refusal of a NUL character in any statement parameter (URLs with one are refused before).
_PG_NUL = "cannot contain NUL (0x00) characters"

#: Seconds a client is asked to wait after an outage (503) before trying again.
RETRY_AFTER_S = 30

STATUS_OF: dict[type[CloudfilmError], int] = {
    NotFound: 404,
    InvalidQuery: 400,
    InvalidDataset: 400,
    NotDicom: 400,
    Conflict: 409,
    StorageUnavailable: 503,
}


def status_for(exc: CloudfilmError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_OF:
            return STATUS_OF[cls]
    return 500


def error_response(status: int, message: str, headers: dict[str, str] | None = None) -> Response:
    hdrs = {"X-Content-Type-Options": "nosniff", "Cache-Control": "no-store"}
    hdrs.update(headers or {})
    return PlainTextResponse(message.rstrip(".") + ".\n", status_code=status, headers=hdrs)


def unavailable_response(message: str) -> Response:
    """503: a part of the archive is unreachable; the client should retry after ``RETRY_AFTER_S``."""
    return error_response(503, f"{message.rstrip('.')}; try again in {RETRY_AFTER_S} seconds",
                          {"Retry-After": str(RETRY_AFTER_S)})


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(CloudfilmError)
    async def _archive_error(_request: Request, exc: CloudfilmError) -> Response:
        status = status_for(exc)
        if status >= 500:
            log.error("request failed: %s", exc, exc_info=exc.__cause__)
        if status == 503:
            return unavailable_response(str(exc))
        return error_response(status, str(exc))

    async def _database_down(_request: Request, exc: Exception) -> Response:
        # Services map their database errors to StorageUnavailable; this catches any that escape,
        # so that an outage reads "retry later" on every route, never "internal error".
        log.error("the index database failed: %s", exc)
        return unavailable_response("the index database is unreachable")

    for lost in (OperationalError, InterfaceError, DisconnectionError):
        app.add_exception_handler(lost, _database_down)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(_request: Request, exc: StarletteHTTPException) -> Response:
        return error_response(exc.status_code, str(exc.detail), dict(exc.headers or {}))

    @app.exception_handler(RequestValidationError)
    async def _validation_error(_request: Request, exc: RequestValidationError) -> Response:
        first = exc.errors()[0] if exc.errors() else {"loc": (), "msg": "invalid request"}
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query", "path"))
        return error_response(400, f"invalid {where or 'request'}: {first.get('msg', 'invalid value')}")

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> Response:
        if isinstance(exc, ValueError) and _PG_NUL in str(exc):  # a NUL in a JSON body reached PostgreSQL
            return error_response(400, "a value in the request holds a NUL character, which the archive cannot store")
        log.exception("unexpected error", exc_info=exc)
        return error_response(500, "internal error; the details are in the server log")
