"""Feed events → deliveries → jobs, run on the worker's housekeeping thread.

For each webhook, the events after its ``last_seq`` that its filter accepts become delivery rows,
and ``last_seq`` moves on, in one transaction whose update is conditional on the ``last_seq`` it
read: two workers dispatching at once write each delivery once. Then every *lane* (a webhook and
a study) with pending deliveries and no active job gets one job (kind ``webhook``) that posts the
lane's deliveries in order. At most one job per lane is active at a time, so a study's events
reach a receiver in feed order; lanes run side by side, so a receiver that is slow for one study
does not hold up the others.
"""

from __future__ import annotations

import json
import logging
import uuid
from datetime import datetime

from sqlalchemy import Engine, func, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.errors import Conflict, NotFound
from pacs.events import Action, read_feed
from pacs.index.db import utcnow
from pacs.jobs import JobSpec, active_job, dedupe_key, enqueue, enqueue_lane_head, write_transaction
from pacs.webhooks.models import Webhook, WebhookDelivery
from pacs.webhooks.registry import DeliveryStatus

log = logging.getLogger(__name__)

JOB_KIND = "webhook"
_BATCH = 1000


def lane_job(webhook_id: int, study_uid: str, head_id: int, *, max_attempts: int,
             run_after: datetime | None = None, after_job: int = 0) -> JobSpec:  # fmt: skip
    """The job that delivers a lane from its oldest pending delivery ``head_id`` on."""
    return JobSpec(kind=JOB_KIND, dedupe_key=dedupe_key(JOB_KIND, webhook_id, study_uid, head_id, after_job),
                   target=str(webhook_id), study_uid=study_uid, payload={"head": head_id},
                   max_attempts=max_attempts, timeout_s=3600.0, run_after=run_after)  # fmt: skip


def dispatch(engine: Engine, *, max_attempts: int) -> bool:
    """One round: new events into deliveries, lanes without a job into jobs; whether a job was queued."""
    with engine.connect() as conn:
        hooks = conn.execute(select(Webhook.id, Webhook.last_seq, Webhook.actions, Webhook.partition_fk)).all()
    if not hooks:
        return False
    for hook in hooks:  # each follows its own partition's feed
        _collect(engine, int(hook.id), int(hook.last_seq), frozenset(Action(a) for a in hook.actions.split(",") if a),
                 int(hook.partition_fk))  # fmt: skip
    return _start_lanes(engine, max_attempts)


def _collect(engine: Engine, webhook_id: int, last_seq: int, actions: frozenset[Action],
             partition: int = DEFAULT_PARTITION) -> None:  # fmt: skip
    scope = AccessScope.everything(partition)
    while True:
        entries = read_feed(engine, since=last_seq, limit=_BATCH, scope=scope)
        if not entries:
            return
        now = utcnow()
        rows = [{"webhook_fk": webhook_id, "partition_fk": partition, "seq": e.sequence, "action": e.action.value,
                 "study_uid": e.study_uid,
                 "body": json.dumps(e.to_json(), separators=(",", ":")), "status": DeliveryStatus.PENDING.value,
                 "attempts": 0, "last_error": "", "created_at": now}
                for e in entries if not actions or e.action in actions]  # fmt: skip
        upto = entries[-1].sequence
        with write_transaction(engine) as conn:
            moved = conn.execute(
                update(Webhook).where(Webhook.id == webhook_id, Webhook.last_seq == last_seq).values(last_seq=upto)
            ).rowcount
            if not moved:
                return  # another worker dispatched these (or the webhook was deleted)
            if rows:
                conn.execute(_insert(conn).on_conflict_do_nothing(index_elements=["webhook_fk", "seq"]), rows)
        last_seq = upto
        if len(entries) < _BATCH:
            return


def _insert(conn: Connection) -> postgresql.Insert | sqlite.Insert:
    return (postgresql.insert if conn.dialect.name == "postgresql" else sqlite.insert)(WebhookDelivery)


def _start_lanes(engine: Engine, max_attempts: int) -> bool:
    with engine.connect() as conn:
        lanes = conn.execute(
            select(WebhookDelivery.webhook_fk, WebhookDelivery.study_uid, func.min(WebhookDelivery.id))
            .where(WebhookDelivery.status == DeliveryStatus.PENDING.value)
            .group_by(WebhookDelivery.webhook_fk, WebhookDelivery.study_uid)
        ).all()
    queued = False
    for webhook_id, study_uid, _head in lanes:
        with write_transaction(engine) as conn:
            if active_job(conn, kind=JOB_KIND, target=str(webhook_id), target_version="", study_uid=study_uid):
                continue
            # Read again after the look at the jobs: a job that just ended may have moved the head and
            # queued the lane's next job itself (seen as active above, or by the key below).
            head = conn.execute(
                select(func.min(WebhookDelivery.id)).where(
                    WebhookDelivery.webhook_fk == webhook_id, WebhookDelivery.study_uid == study_uid,
                    WebhookDelivery.status == DeliveryStatus.PENDING.value)
            ).scalar_one_or_none()
            if head is None:
                continue
            hook, first = int(webhook_id), int(head)

            def job(after_job: int = 0, hook: int = hook, first: int = first, study: str = study_uid) -> JobSpec:
                return lane_job(hook, study, first, max_attempts=max_attempts, after_job=after_job)

            def dead(error: str, conn: Connection = conn, first: int = first) -> None:
                mark_dead(conn, first, error)

            queued = enqueue_lane_head(conn, job(), again=job, dead=dead) or queued
    return queued


def mark_dead(conn: Connection, delivery_id: int, error: str) -> None:
    """Set a pending delivery aside (dead letter): its attempts ran out; the lane's later events go on."""
    conn.execute(
        update(WebhookDelivery)
        .where(WebhookDelivery.id == delivery_id, WebhookDelivery.status == DeliveryStatus.PENDING.value)
        .values(status=DeliveryStatus.DEAD.value, last_error=error[:2000])
    )


def redeliver(engine: Engine, webhook_id: int, delivery_id: int, *, max_attempts: int,
              partition: int = DEFAULT_PARTITION) -> None:  # fmt: skip
    """Send a delivered or dead-lettered event of ``partition``'s webhook again (an admin's re-send): it
    becomes pending, and goes before the study's later pending events (it is older), with a fresh set
    of attempts."""
    with write_transaction(engine) as conn:
        row = conn.execute(
            select(WebhookDelivery.study_uid, WebhookDelivery.status)
            .where(WebhookDelivery.id == delivery_id, WebhookDelivery.webhook_fk == webhook_id,
                   WebhookDelivery.partition_fk == partition)
        ).first()  # fmt: skip
        if row is None:
            raise NotFound("no such delivery")
        if row.status == DeliveryStatus.PENDING.value:
            raise Conflict("the delivery is still pending: it is being sent")
        conn.execute(update(WebhookDelivery).where(WebhookDelivery.id == delivery_id)
                     .values(status=DeliveryStatus.PENDING.value, delivered_at=None))  # fmt: skip
        if active_job(conn, kind=JOB_KIND, target=str(webhook_id), target_version="", study_uid=row.study_uid):
            return  # the lane's job reads its oldest pending delivery before each send: this one is next
        # A key of its own: the jobs that sent (or dead-lettered) this delivery before keep theirs.
        enqueue(conn, JobSpec(kind=JOB_KIND, dedupe_key=dedupe_key(JOB_KIND, "resend", uuid.uuid4().hex),
                              target=str(webhook_id), study_uid=row.study_uid, payload={"head": delivery_id},
                              max_attempts=max_attempts, timeout_s=3600.0))  # fmt: skip
