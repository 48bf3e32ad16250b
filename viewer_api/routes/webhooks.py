"""Webhooks over HTTP (admins): ``POST/GET /api/webhooks``, ``GET/DELETE /api/webhooks/{id}``,
``GET /api/webhooks/{id}/deliveries`` (the delivery log) and ``POST …/deliveries/{id}/redeliver``.
The secret is in the answer to the POST only; :mod:`pacs.webhooks.signing` says how a receiver
checks it."""

from __future__ import annotations

from datetime import datetime

from fastapi import APIRouter, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, ConfigDict, Field

from pacs.accounts.keys import secret_key
from pacs.webhooks import dispatch, registry
from pacs.webhooks.registry import DeliveryStatus
from viewer_api.auth.access import WebhookAdmin
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of

router = APIRouter(tags=["webhooks"], route_class=DeclaredRoute)


class WebhookIn(BaseModel):
    url: str = Field(description="http:// or https:// URL that receives each event as a signed JSON POST")
    actions: list[str] = Field(default_factory=list, description="feed actions to send (empty: all)")
    description: str = ""


class WebhookOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    url: str
    description: str
    actions: list[str]
    created_by: str
    created_at: datetime
    last_seq: int = Field(description="the newest change feed Sequence dispatched to this webhook")
    pending: int
    delivered: int
    dead: int


class WebhookCreated(WebhookOut):
    secret: str = Field(description="shown this once: verify X-Cloudfilm-Signature with it")


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: int
    webhook_id: int
    sequence: int
    action: str
    study_uid: str
    status: DeliveryStatus
    attempts: int
    status_code: int | None
    last_error: str
    created_at: datetime
    last_attempt_at: datetime | None
    delivered_at: datetime | None


@router.post("/api/webhooks", response_model=WebhookCreated, status_code=201, summary="Register a webhook")
async def create_webhook(principal: WebhookAdmin, body: WebhookIn, request: Request) -> WebhookCreated:
    """Events of the caller's partition after the newest one now in its feed go to ``url``; the secret is
    shown only here."""
    archive = archive_of(request)
    view, secret = await run_in_threadpool(
        registry.register, archive.engine, secret_key(archive.settings), body.url, actions=body.actions,
        description=body.description, created_by=principal.label, partition=principal.home_partition)  # fmt: skip
    return WebhookCreated(**WebhookOut.model_validate(view).model_dump(), secret=secret)


@router.get("/api/webhooks", response_model=list[WebhookOut], summary="Webhooks")
async def list_webhooks(admin: WebhookAdmin, request: Request) -> list[WebhookOut]:
    """The caller's partition's webhooks."""
    views = await run_in_threadpool(registry.list_webhooks, archive_of(request).engine, admin.home_partition)
    return [WebhookOut.model_validate(v) for v in views]


@router.get("/api/webhooks/{webhook_id}", response_model=WebhookOut, summary="One webhook")
async def read_webhook(admin: WebhookAdmin, webhook_id: int, request: Request) -> WebhookOut:
    return WebhookOut.model_validate(await run_in_threadpool(registry.get, archive_of(request).engine, webhook_id,
                                                             admin.home_partition))  # fmt: skip


@router.delete("/api/webhooks/{webhook_id}", status_code=204, summary="Delete a webhook")
async def delete_webhook(admin: WebhookAdmin, webhook_id: int, request: Request) -> Response:
    """Stops deliveries to it and removes its delivery log."""
    await run_in_threadpool(registry.remove, archive_of(request).engine, webhook_id, admin.home_partition)
    return Response(status_code=204)


@router.get("/api/webhooks/{webhook_id}/deliveries", response_model=list[DeliveryOut], summary="Delivery log")
async def list_deliveries(
    admin: WebhookAdmin,
    webhook_id: int,
    request: Request,
    status: list[DeliveryStatus] = Query(default_factory=list, description="pending, delivered, dead (repeat)"),
    study: str | None = Query(None, description="StudyInstanceUID"),
    limit: int = Query(100, ge=1, le=1000),
    offset: int = Query(0, ge=0),
) -> list[DeliveryOut]:
    """Newest first: each event's status, attempts, the receiver's last status code and the last error."""
    views = await run_in_threadpool(lambda: registry.deliveries(
        archive_of(request).engine, webhook_id, statuses=status, study_uid=study, limit=limit, offset=offset,
        partition=admin.home_partition))
    return [DeliveryOut.model_validate(v) for v in views]


@router.post("/api/webhooks/{webhook_id}/deliveries/{delivery_id}/redeliver", status_code=202,
             summary="Send a delivered or dead-lettered event again")  # fmt: skip
async def redeliver(admin: WebhookAdmin, webhook_id: int, delivery_id: int, request: Request) -> Response:
    """The event becomes pending again, ahead of the study's later pending events, with fresh attempts."""
    archive = archive_of(request)
    await run_in_threadpool(lambda: dispatch.redeliver(archive.engine, webhook_id, delivery_id,
                                                       max_attempts=archive.settings.webhook_max_attempts,
                                                       partition=admin.home_partition))
    return Response(status_code=202)
