"""The patient message log over HTTP (admins): ``GET /api/notifications`` and
``POST /api/notifications/{id}/resend`` (a dead or in-doubt message, sent again on an operator's
word). What the messages say is built when they are sent and kept nowhere (:mod:`pacs.notify`)."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict

from pacs.notify import outbox
from pacs.notify.outbox import DeliveryStatus
from viewer_api.auth.access import NotifyAdmin
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["notifications"], route_class=DeclaredRoute)


class NotificationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    notification: str
    kind: str
    channel: str
    recipient: str
    study_uid: str
    status: DeliveryStatus
    attempts: int
    last_error: str
    message_id: str
    created_by: str
    created_at: datetime
    last_attempt_at: datetime | None
    sent_at: datetime | None


@router.get("/api/notifications", response_model=list[NotificationOut], summary="Patient message log")
async def list_notifications(
    _admin: NotifyAdmin,
    request: Request,
    status: DeliveryStatus | None = Query(None, description="pending, sending, sent, unknown, dead"),
    study: str | None = Query(None, description="StudyInstanceUID"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[NotificationOut]:
    """Newest first: each message's channel, recipient, status, attempts and last error."""
    views = await run_in_threadpool(lambda: outbox.deliveries(archive_of(request).engine, status=status,
                                                              study_uid=study, limit=limit, offset=offset))
    return [NotificationOut.model_validate(v) for v in views]


@router.post("/api/notifications/{delivery_id}/resend", status_code=202,
             summary="Send a dead or in-doubt message again")  # fmt: skip
async def resend(_admin: NotifyAdmin, delivery_id: int, request: Request) -> Response:
    """An in-doubt message may then arrive twice; it carries the same Message-ID both times."""
    settings = archive_of(request).settings
    await run_in_threadpool(lambda: outbox.resend(archive_of(request).engine, delivery_id,
                                                  max_attempts=settings.notify_max_attempts,
                                                  timeout_s=settings.smtp_timeout * 8 + 60))
    return Response(status_code=202)
