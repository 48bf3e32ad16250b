"""Registering webhooks and reading their delivery log (the service behind ``/api/webhooks``)."""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Engine, delete, func, insert, select

from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.errors import InvalidQuery, NotFound
from pacs.events import Action, latest, parse_actions
from pacs.index.db import utcnow
from pacs.jobs import aware, write_transaction
from pacs.webhooks.models import Webhook, WebhookDelivery
from pacs.webhooks.signing import webhook_secret


class DeliveryStatus(StrEnum):
    PENDING = "pending"  # not yet answered with 2xx; retried with backoff
    DELIVERED = "delivered"
    DEAD = "dead"  # attempts ran out (dead letter); later events of the study go on


@dataclass(frozen=True, slots=True)
class WebhookView:
    id: int
    url: str
    description: str
    actions: tuple[Action, ...]  # empty: every action
    created_by: str
    created_at: datetime
    last_seq: int  # the newest feed event turned into a delivery (or skipped by the filter)
    pending: int
    delivered: int
    dead: int


@dataclass(frozen=True, slots=True)
class DeliveryView:
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


def _check_url(url: str) -> str:
    url = url.strip()
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidQuery("the webhook URL must be an absolute http:// or https:// URL")
    if len(url) > 2048:
        raise InvalidQuery("the webhook URL is longer than 2048 characters")
    if parts.username or parts.password:
        raise InvalidQuery("the webhook URL must not hold credentials; verify the signature instead")
    return url


def register(engine: Engine, archive_key: bytes, url: str, *, actions: list[str] | None = None,
             description: str = "", created_by: str = "",
             partition: int = DEFAULT_PARTITION) -> tuple[WebhookView, str]:  # fmt: skip
    """A new webhook of ``partition`` and its secret (shown this once). It receives the events of that
    partition's feed after the newest one now in it, not the archive's history."""
    url = _check_url(url)
    try:
        chosen = parse_actions(actions or [])
    except ValueError as exc:
        raise InvalidQuery(str(exc)) from None
    if len(description) > 256:
        raise InvalidQuery("the description is longer than 256 characters")
    newest = latest(engine, AccessScope.everything(partition))
    nonce = secrets.token_hex(16)
    with write_transaction(engine) as conn:
        hook_id = conn.execute(insert(Webhook).values(
            url=url, description=description, actions=",".join(sorted(a.value for a in chosen)),
            secret_nonce=nonce, last_seq=newest.sequence if newest else 0, created_by=created_by[:64],
            created_at=utcnow(), partition_fk=partition,
        ).returning(Webhook.id)).scalar_one()  # fmt: skip
    return get(engine, int(hook_id), partition), webhook_secret(archive_key, nonce)


def _counts(engine: Engine, ids: list[int]) -> dict[tuple[int, str], int]:
    if not ids:
        return {}
    with engine.connect() as conn:
        rows = conn.execute(
            select(WebhookDelivery.webhook_fk, WebhookDelivery.status, func.count())
            .where(WebhookDelivery.webhook_fk.in_(ids))
            .group_by(WebhookDelivery.webhook_fk, WebhookDelivery.status)
        ).all()
    return {(int(r[0]), str(r[1])): int(r[2]) for r in rows}


def _view(row: Any, counts: dict[tuple[int, str], int]) -> WebhookView:
    return WebhookView(
        id=row.id, url=row.url, description=row.description,
        actions=tuple(Action(a) for a in row.actions.split(",") if a), created_by=row.created_by,
        created_at=aware(row.created_at), last_seq=int(row.last_seq),
        pending=counts.get((row.id, DeliveryStatus.PENDING), 0),
        delivered=counts.get((row.id, DeliveryStatus.DELIVERED), 0), dead=counts.get((row.id, DeliveryStatus.DEAD), 0),
    )  # fmt: skip


def list_webhooks(engine: Engine, partition: int = DEFAULT_PARTITION) -> list[WebhookView]:
    """The webhooks of ``partition``."""
    with engine.connect() as conn:
        rows = list(conn.execute(select(Webhook).where(Webhook.partition_fk == partition).order_by(Webhook.id)))
    counts = _counts(engine, [r.id for r in rows])
    return [_view(r, counts) for r in rows]


def get(engine: Engine, webhook_id: int, partition: int = DEFAULT_PARTITION) -> WebhookView:
    """One webhook of ``partition`` (another partition's does not exist for the caller)."""
    with engine.connect() as conn:
        row = conn.execute(select(Webhook).where(Webhook.id == webhook_id, Webhook.partition_fk == partition)).first()
    if row is None:
        raise NotFound("no such webhook")
    return _view(row, _counts(engine, [row.id]))


def secret_of(engine: Engine, archive_key: bytes, webhook_id: int) -> tuple[str, str]:
    """The URL and secret a delivery of ``webhook_id`` is sent to and signed with."""
    with engine.connect() as conn:
        row = conn.execute(select(Webhook.url, Webhook.secret_nonce).where(Webhook.id == webhook_id)).first()
    if row is None:
        raise NotFound("no such webhook")
    return row.url, webhook_secret(archive_key, row.secret_nonce)


def remove(engine: Engine, webhook_id: int, partition: int = DEFAULT_PARTITION) -> None:
    """Delete ``partition``'s webhook and its delivery log; its waiting jobs find it gone and end."""
    with write_transaction(engine) as conn:
        gone = conn.execute(delete(Webhook).where(Webhook.id == webhook_id, Webhook.partition_fk == partition))
        if not gone.rowcount:
            raise NotFound("no such webhook")
        conn.execute(delete(WebhookDelivery).where(WebhookDelivery.webhook_fk == webhook_id))


def deliveries(engine: Engine, webhook_id: int, *, statuses: list[DeliveryStatus] | None = None,
               study_uid: str | None = None, limit: int = 100, offset: int = 0,
               partition: int = DEFAULT_PARTITION) -> list[DeliveryView]:  # fmt: skip
    """The delivery log of ``partition``'s webhook, newest first."""
    get(engine, webhook_id, partition)
    stmt = select(WebhookDelivery).where(WebhookDelivery.webhook_fk == webhook_id)
    if statuses:
        stmt = stmt.where(WebhookDelivery.status.in_([s.value for s in statuses]))
    if study_uid:
        stmt = stmt.where(WebhookDelivery.study_uid == study_uid)
    stmt = stmt.order_by(WebhookDelivery.id.desc()).limit(max(1, min(limit, 1000))).offset(max(0, offset))
    with engine.connect() as conn:
        rows = list(conn.execute(stmt))
    return [DeliveryView(
        id=r.id, webhook_id=r.webhook_fk, sequence=int(r.seq), action=r.action, study_uid=r.study_uid,
        status=DeliveryStatus(r.status), attempts=r.attempts, status_code=r.status_code, last_error=r.last_error,
        created_at=aware(r.created_at), last_attempt_at=None if r.last_attempt_at is None else aware(r.last_attempt_at),
        delivered_at=None if r.delivered_at is None else aware(r.delivered_at),
    ) for r in rows]  # fmt: skip
