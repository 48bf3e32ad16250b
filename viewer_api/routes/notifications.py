"""The patient message log over HTTP (admins): ``GET /api/notifications`` and
``POST /api/notifications/{id}/resend`` (a dead or in-doubt message, sent again on an operator's
word). What the messages say is built when they are sent and kept nowhere (:mod:`pacs.notify`)."""

from __future__ import annotations

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool

from pacs.notify import outbox
from pacs.notify.outbox import DeliveryStatus, DeliveryView
from viewer_api.auth.access import NotifyAdmin
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["notifications"], route_class=DeclaredRoute)


@router.get("/api/notifications", response_model=list[DeliveryView], summary="Patient message log")
async def list_notifications(
    admin: NotifyAdmin,
    request: Request,
    status: DeliveryStatus | None = Query(None, description="pending, sending, sent, unknown, dead"),
    study: str | None = Query(None, description="StudyInstanceUID"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[DeliveryView]:
    """The caller's partition's messages, newest first: each one's channel, recipient, status, attempts
    and last error."""
    views = await run_in_threadpool(lambda: outbox.deliveries(archive_of(request).engine, status=status,
                                                              study_uid=study, limit=limit, offset=offset,
                                                              partition=admin.partition))  # fmt: skip
    return list(views)


@router.post("/api/notifications/{delivery_id}/resend", status_code=202,
             summary="Send a dead or in-doubt message again")  # fmt: skip
async def resend(admin: NotifyAdmin, delivery_id: int, request: Request) -> Response:
    """An in-doubt message may then arrive twice; it carries the same Message-ID both times."""
    settings = archive_of(request).settings
    await run_in_threadpool(lambda: outbox.resend(archive_of(request).engine, delivery_id,
                                                  max_attempts=settings.notify_max_attempts,
                                                  timeout_s=settings.smtp_timeout * 8 + 60,
                                                  partition=admin.partition))
    return Response(status_code=202)
