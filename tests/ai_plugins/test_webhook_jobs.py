"""Webhook deliveries as jobs of the one worker: every event delivered, in order per study, retried
with backoff, dead-lettered when the attempts run out (the study's later events still go)."""

from __future__ import annotations

import contextlib
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import update

from ai_plugins.runner.handler import job_queue
from ai_plugins.runner.service import PluginService
from ai_plugins.runner.worker import Worker
from pacs.access import AccessScope
from pacs.accounts.keys import secret_key
from pacs.archive import Archive
from pacs.errors import Conflict, NotFound
from pacs.events import Action, State, read_feed
from pacs.jobs import JobStatus, write_transaction
from pacs.webhooks import registry
from pacs.webhooks.dispatch import JOB_KIND, redeliver
from pacs.webhooks.models import Webhook
from pacs.webhooks.registry import DeliveryStatus
from tests.ai_plugins.sample_plugins import EchoPlugin
from tests.ai_plugins.test_worker import wait_until
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.jobsupport import DB_BACKENDS, db_settings
from tests.webhook_receiver import receiving


@pytest.fixture(params=[DB_BACKENDS[0], pytest.param(DB_BACKENDS[1], marks=pytest.mark.postgres)])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    with db_settings(request.param, tmp_path, stable_age=1.0, job_poll_interval=0.1, job_retry_backoff=0.2,
                     job_retry_backoff_max=1.0, webhook_max_attempts=3) as settings, \
            Archive.open(settings) as opened:  # fmt: skip
        yield opened


@contextlib.contextmanager
def working(archive: Archive) -> Iterator[Worker]:
    worker = Worker(archive, concurrency=3, use_entry_points=False)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def _store(archive: Archive, seed: int, n: int) -> str:
    datasets = make_ct_study(PATIENTS[seed % 3], n_slices=n, rows=8, cols=8, seed=seed,
                             study_uid=f"1.2.826.0.8.{seed}")  # fmt: skip
    for ds in datasets:
        assert archive.ingest.store_bytes(to_bytes(ds)).ok
    return str(datasets[0].StudyInstanceUID)


def test_every_event_arrives_in_order_per_study_with_retries(archive: Archive) -> None:
    tries: Counter[int] = Counter()

    def flaky_first(body: dict[str, object]) -> int:
        seq = int(body["Sequence"])  # type: ignore[call-overload]
        tries[seq] += 1
        return 500 if seq in (1, 2) and tries[seq] <= 2 else 200  # 2 fails after 1 got through: a new job

    with receiving() as receiver:
        view, receiver.secret = registry.register(archive.engine, secret_key(archive.settings), receiver.url)
        receiver.answer = flaky_first
        first, second = _store(archive, 1, 3), _store(archive, 2, 3)
        with working(archive):
            # 6 creates and 2 stable transitions (stable_age 1 s)
            wait_until("every event", lambda: len(receiver.unique()) == 8, timeout=120)
    assert receiver.bad_signatures == 0
    order = receiver.per_study()
    assert set(order) == {first, second}
    for sequences in order.values():
        assert sequences == sorted(sequences) and len(sequences) == len(set(sequences)) == 4
    actions = [r.body["Action"] for r in receiver.accepted if r.study == first]
    assert actions == ["create", "create", "create", "stable"]
    log = {d.sequence: d for d in registry.deliveries(archive.engine, view.id)}
    assert (log[1].status, log[1].attempts, log[1].status_code) == (DeliveryStatus.DELIVERED, 3, 200)
    assert (log[2].status, log[2].attempts, log[2].status_code) == (DeliveryStatus.DELIVERED, 3, 200)
    assert {d.status for d in log.values()} == {DeliveryStatus.DELIVERED}
    assert receiver.unique()["1"].attempt == 3 and receiver.unique()["2"].attempt == 3
    lane = [j for j in job_queue(archive).list_jobs(kind=JOB_KIND) if j.study_uid == log[1].study_uid]
    assert lane[-1].result == {"delivered": 1, "error": "the receiver answered 500: no"}  # 1 went, 2 did not
    assert all(j.status is JobStatus.SUCCEEDED for j in lane)
    assert len(read_feed(archive.engine)) == 8


def test_dead_letter_after_the_attempts_and_the_study_goes_on(archive: Archive) -> None:
    with receiving() as receiver:
        view, receiver.secret = registry.register(archive.engine, secret_key(archive.settings), receiver.url,
                                                  actions=["create"])  # fmt: skip
        receiver.answer = lambda body: 500 if body["Sequence"] == 1 else 200
        study = _store(archive, 3, 3)
        with working(archive):
            wait_until("the later events", lambda: len(receiver.unique()) == 2, timeout=120)
    log = {d.sequence: d for d in registry.deliveries(archive.engine, view.id)}
    assert sorted(log) == [1, 2, 3]  # the filter left the stable event out
    assert (log[1].status, log[1].attempts, log[1].status_code) == (DeliveryStatus.DEAD, 3, 500)
    assert log[1].last_error == "the receiver answered 500: no"
    assert receiver.per_study() == {study: [2, 3]}
    assert receiver.refused == [("1", 500)] * 3
    assert registry.get(archive.engine, view.id).dead == 1
    failed = job_queue(archive).list_jobs(kind=JOB_KIND, statuses=[JobStatus.FAILED])
    assert len(failed) == 1 and failed[0].error == "the receiver answered 500: no" and failed[0].attempts == 3

    # An admin re-sends the dead letter once the receiver is fixed: fresh attempts, delivered.
    with pytest.raises(NotFound):
        redeliver(archive.engine, view.id, 10_000, max_attempts=3)
    with receiving(receiver.secret) as again:
        _point(archive, view.id, again.url)
        redeliver(archive.engine, view.id, log[1].id, max_attempts=3)
        with pytest.raises(Conflict):
            redeliver(archive.engine, view.id, log[1].id, max_attempts=3)
        with working(archive):
            wait_until("the re-sent event", lambda: len(again.unique()) == 1, timeout=60)
    assert again.accepted[0].sequence == 1 and again.accepted[0].attempt == 4
    [resent] = [d for d in registry.deliveries(archive.engine, view.id) if d.sequence == 1]
    assert (resent.status, resent.attempts, resent.last_error) == (DeliveryStatus.DELIVERED, 4, "")


def _point(archive: Archive, webhook_id: int, url: str) -> None:
    """Move a webhook to another receiver (the test's second server)."""
    with write_transaction(archive.engine) as conn:
        conn.execute(update(Webhook).where(Webhook.id == webhook_id).values(url=url))


def test_an_ai_result_is_an_event_and_a_delivery(archive: Archive) -> None:
    plugins = PluginService(archive, extra_plugins=(EchoPlugin,), use_entry_points=False)
    with receiving() as receiver:
        view, receiver.secret = registry.register(archive.engine, secret_key(archive.settings), receiver.url,
                                                  actions=["ai-result"])  # fmt: skip
        study = _store(archive, 4, 4)
        job, _ = plugins.rerun(study, "test-echo", version=None, requested_by="dr", scope=AccessScope.everything())
        worker = Worker(archive, concurrency=2, extra_plugins=(EchoPlugin,), use_entry_points=False)
        worker.start()
        try:
            wait_until("the plugin job", lambda: plugins.job(job.id).status is JobStatus.SUCCEEDED)
            wait_until("the ai-result delivery", lambda: len(receiver.unique()) == 1, timeout=60)
        finally:
            worker.stop()
    [event] = read_feed(archive.engine, actions={Action.AI_RESULT})
    [sr] = [r for r in plugins.results(study) if r.kind == "SR"]
    assert (event.study_uid, event.sop_uid, event.state) == (study, sr.sop_uid, State.CURRENT)
    assert event.detail is not None and event.detail["Plugin"] == "test-echo" and event.detail["JobId"] == job.id
    assert {o["Kind"] for o in event.detail["Objects"]} == {"SR", "SEG"}
    [received] = receiver.accepted
    assert received.body == event.to_json() and received.body["Action"] == "ai-result"
    creates = read_feed(archive.engine, actions={Action.CREATE})
    assert sr.sop_uid in {e.sop_uid for e in creates}  # the SR itself arrived as a create before
