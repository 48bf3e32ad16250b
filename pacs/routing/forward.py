"""One forwarding job: send a lane's pending forwards (one destination, one study) oldest first.

Each forward is recorded in a transaction of its own as soon as the peer answered, so a worker
that dies mid-lane sends again at most the one instance it was sending (a peer stores a second
copy of the same SOP Instance UID in place). The first failure ends the attempt, and the job
queue retries it with backoff. An instance that can never be sent as asked (deleted meanwhile,
burned-in annotation under de-identification, pixel data that cannot be transcoded) is set aside
at once, and the lane goes on.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from sqlalchemy import Engine, and_, select, update

from pacs.deid import Deidentifier, deidentify_part10
from pacs.errors import CloudfilmError
from pacs.index.db import utcnow
from pacs.index.models import Instance
from pacs.jobs import write_transaction
from pacs.routing.dispatch import ForwardStatus, mark_dead
from pacs.routing.models import RoutingForward
from pacs.routing.rules import Destination, Rule
from pacs.routing.senders import DicomSender, Outgoing, Sender, StowSender
from pacs.settings import Settings
from pacs.storage import ObjectStore
from pacs.transcode import to_transfer_syntax

log = logging.getLogger(__name__)
_BATCH = 100  # forwards per association


@dataclass(frozen=True, slots=True)
class LaneResult:
    """What one attempt at a lane did: instances sent, and the one that failed (if any)."""

    sent: int
    failed_id: int | None = None
    error: str = ""
    status_code: int | None = None
    attempts: int = 0  # of the failed forward, this one included
    stopped: bool = False  # the worker is stopping: the rest waits for the next attempt
    gone: bool = False  # the destination is no longer configured


@dataclass(frozen=True, slots=True)
class _Pending:
    id: int
    rule: str
    sop_uid: str
    attempts: int
    sop_class_uid: str | None
    transfer_syntax_uid: str | None
    object_key: str | None


def deidentifier(key: bytes, rule: Rule) -> Deidentifier:
    """Pseudonyms and UIDs stable per rule: a study sent twice keeps its de-identified UIDs."""
    return Deidentifier(key, f"cloudfilm-routing/{rule.name}")


def _pending(engine: Engine, destination: str, study_uid: str) -> list[_Pending]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(RoutingForward.id, RoutingForward.rule, RoutingForward.sop_uid, RoutingForward.attempts,
                   Instance.sop_class_uid, Instance.transfer_syntax_uid, Instance.object_key)
            # The forward's own partition's instance (its rule's): never a twin UID in another partition
            .outerjoin(Instance, and_(Instance.sop_uid == RoutingForward.sop_uid,
                                      Instance.partition_fk == RoutingForward.partition_fk))
            .where(RoutingForward.destination == destination, RoutingForward.study_uid == study_uid,
                   RoutingForward.status == ForwardStatus.PENDING.value)
            .order_by(RoutingForward.id).limit(_BATCH)
        ).all()  # fmt: skip
    return [_Pending(*row) for row in rows]


def _prepare(data: bytes, key: bytes, rule: Rule, dest: Destination, row: _Pending) -> Outgoing:
    """The bytes to send; :class:`CloudfilmError` when the instance cannot be sent as asked."""
    assert row.sop_class_uid is not None and row.transfer_syntax_uid is not None
    ts = row.transfer_syntax_uid
    if rule.deidentify:
        data, _ = deidentify_part10(data, deidentifier(key, rule))
    if dest.transfer_syntax is not None and dest.transfer_syntax != ts:
        data, ts = to_transfer_syntax(data, dest.transfer_syntax), dest.transfer_syntax
    return Outgoing(row.sop_class_uid, row.sop_uid, ts, data)


def _record(engine: Engine, row: _Pending, *, ok: bool, status_code: int | None, error: str) -> None:
    now = utcnow()
    values: dict[str, object] = {"attempts": row.attempts + 1, "status_code": status_code, "last_attempt_at": now,
                                 "last_error": error[:2000]}  # fmt: skip
    if ok:
        values |= {"status": ForwardStatus.SENT.value, "sent_at": now}
    with write_transaction(engine) as conn:
        conn.execute(update(RoutingForward).where(RoutingForward.id == row.id).values(**values))


def deliver_lane(engine: Engine, store: ObjectStore, settings: Settings, archive_key: bytes, destination: str,
                 study_uid: str, *, stopping: Callable[[], bool]) -> LaneResult:  # fmt: skip
    """Send the lane's pending forwards oldest first until one fails or none is left."""
    dest = settings.routing_destinations.get(destination)
    if dest is None:
        return LaneResult(0, gone=True)
    rules = {r.name: r for r in settings.routing_rules}
    sent = 0
    while True:
        batch = _pending(engine, destination, study_uid)
        if not batch:
            return LaneResult(sent)
        result = _send_batch(engine, store, settings, archive_key, dest, rules, batch, stopping)
        sent += result.sent
        if result.failed_id is not None or result.stopped:
            return replace(result, sent=sent)


def _send_batch(engine: Engine, store: ObjectStore, settings: Settings, key: bytes, dest: Destination,
                rules: dict[str, Rule], batch: Sequence[_Pending],
                stopping: Callable[[], bool]) -> LaneResult:  # fmt: skip
    sender: Sender | None = None
    sent = 0
    try:
        for row in batch:
            if stopping():
                return LaneResult(sent, stopped=True)
            rule = rules.get(row.rule)
            reason = ""
            if rule is None:  # its de-identification (or not) is unknown now: nothing is sent blind
                reason = f"routing rule {row.rule!r} is no longer configured"
            elif row.object_key is None:
                reason = "the instance was deleted before it was sent"
            item: Outgoing | None = None
            if not reason and rule is not None and row.object_key is not None:
                # Read outside the try: an object store that fails now fails the attempt (retried), not the instance.
                data = store.get_bytes(row.object_key)
                try:
                    item = _prepare(data, key, rule, dest, row)
                except CloudfilmError as exc:
                    reason = f"cannot be sent as the rule asks: {exc}"
            if item is None:
                with write_transaction(engine) as conn:
                    mark_dead(conn, row.id, reason)
                log.warning("forward %d of %s set aside: %s", row.id, row.sop_uid, reason)
                continue
            if sender is None:
                sender = _open(settings, dest, batch)
            outcome = sender.send(item)
            _record(engine, row, ok=outcome.ok, status_code=outcome.status_code, error=outcome.error)
            if not outcome.ok:
                log.warning("forward of %s to %s failed (attempt %d): %s", row.sop_uid, dest.label(),
                            row.attempts + 1, outcome.error)  # fmt: skip
                return LaneResult(sent, row.id, outcome.error, outcome.status_code, row.attempts + 1)
            sent += 1
        return LaneResult(sent)
    finally:
        if sender is not None:
            sender.close()


def _open(settings: Settings, dest: Destination, batch: Sequence[_Pending]) -> Sender:
    if dest.kind == "dicomweb":
        return StowSender(dest)
    syntaxes = [(row.sop_class_uid, dest.transfer_syntax or row.transfer_syntax_uid) for row in batch
                if row.sop_class_uid is not None and row.transfer_syntax_uid is not None]  # fmt: skip
    return DicomSender(settings, dest, [(c, t) for c, t in syntaxes if t is not None])
