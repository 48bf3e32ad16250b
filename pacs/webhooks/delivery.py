"""One webhook job: POST a lane's pending deliveries (one webhook, one study) in feed order.

Each delivery is recorded in a transaction of its own as soon as the receiver answered, so a
worker that dies mid-lane redelivers at most the one event it was sending (at least once; the
receiver drops the duplicate by ``X-Cloudfilm-Event-Id``). The first failure ends the attempt:
nothing later in the lane is sent before it (order per study), and the job queue retries it with
backoff; the job's handler decides what a failure means (retry, or dead letter on the last attempt).
"""

from __future__ import annotations

import logging
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import Engine, select, update

from pacs import __version__
from pacs.errors import NotFound
from pacs.index.db import utcnow
from pacs.jobs import write_transaction
from pacs.webhooks.models import WebhookDelivery
from pacs.webhooks.registry import DeliveryStatus, secret_of
from pacs.webhooks.signing import (
    ATTEMPT_HEADER,
    DELIVERY_HEADER,
    EVENT_HEADER,
    EVENT_ID_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    signature,
)

log = logging.getLogger(__name__)
_ERROR_BODY = 300  # characters of a refusing receiver's answer kept in the delivery log


@dataclass(frozen=True, slots=True)
class LaneResult:
    """What one attempt at a lane did: deliveries made, and the one that failed (if any)."""

    delivered: int
    failed_id: int | None = None  # the delivery the receiver refused or could not be reached for
    error: str = ""
    stopped: bool = False  # the worker is stopping (or lost the lease): the rest waits for the next attempt
    gone: bool = False  # the webhook was deleted meanwhile


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """A redirect is an answer other than 2xx: the receiver's URL is what the admin registered."""

    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


_OPENER = urllib.request.build_opener(_NoRedirect())


def post(url: str, secret: str, body: bytes, *, event_id: int, action: str, delivery_id: int, attempt: int,
         timeout_s: float) -> tuple[int | None, str]:  # fmt: skip
    """Send one signed delivery; the status code (``None`` when none came) and an error sentence
    (empty on 2xx)."""
    timestamp = int(time.time())
    request = urllib.request.Request(url, data=body, method="POST", headers={
        "Content-Type": "application/json", "User-Agent": f"cloudfilm/{__version__}",
        TIMESTAMP_HEADER: str(timestamp), SIGNATURE_HEADER: signature(secret, timestamp, body),
        EVENT_ID_HEADER: str(event_id), EVENT_HEADER: action, DELIVERY_HEADER: str(delivery_id),
        ATTEMPT_HEADER: str(attempt),
    })  # fmt: skip
    try:
        with _OPENER.open(request, timeout=timeout_s) as response:
            code = int(response.status)
    except urllib.error.HTTPError as exc:
        detail = exc.read(_ERROR_BODY).decode("utf-8", "replace").strip()
        return exc.code, f"the receiver answered {exc.code}" + (f": {detail}" if detail else "")
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return None, f"the receiver could not be reached: {reason}"
    if 200 <= code < 300:
        return code, ""
    return code, f"the receiver answered {code}"


def deliver_lane(engine: Engine, archive_key: bytes, webhook_id: int, study_uid: str, *, timeout_s: float,
                 stopping: Callable[[], bool]) -> LaneResult:  # fmt: skip
    """Send the lane's pending deliveries oldest first until one fails or none is left."""
    try:
        url, secret = secret_of(engine, archive_key, webhook_id)
    except NotFound:
        return LaneResult(0, gone=True)
    delivered = 0
    while True:
        with engine.connect() as conn:
            head = conn.execute(
                select(WebhookDelivery.id, WebhookDelivery.seq, WebhookDelivery.action, WebhookDelivery.body,
                       WebhookDelivery.attempts)
                .where(WebhookDelivery.webhook_fk == webhook_id, WebhookDelivery.study_uid == study_uid,
                       WebhookDelivery.status == DeliveryStatus.PENDING.value)
                .order_by(WebhookDelivery.id)
                .limit(1)
            ).first()  # fmt: skip
        if head is None:
            return LaneResult(delivered)
        if stopping():
            return LaneResult(delivered, stopped=True)
        attempt = int(head.attempts) + 1
        code, error = post(url, secret, head.body.encode("utf-8"), event_id=int(head.seq), action=head.action,
                           delivery_id=int(head.id), attempt=attempt, timeout_s=timeout_s)  # fmt: skip
        now = utcnow()
        values: dict[str, object] = {"attempts": attempt, "status_code": code, "last_attempt_at": now,
                                     "last_error": error[:2000]}
        if not error:
            values |= {"status": DeliveryStatus.DELIVERED.value, "delivered_at": now}
        with write_transaction(engine) as conn:
            conn.execute(update(WebhookDelivery).where(WebhookDelivery.id == head.id).values(**values))
        if error:
            log.warning("webhook %d: event %d for study %s not delivered (attempt %d): %s", webhook_id, head.seq,
                        study_uid, attempt, error)  # fmt: skip
            return LaneResult(delivered, failed_id=int(head.id), error=error)
        delivered += 1
