"""Webhook registration, signatures and one lane's delivery, against a real local HTTP receiver."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacs.accounts.keys import secret_key
from pacs.archive import Archive
from pacs.errors import InvalidQuery, NotFound
from pacs.events import Action
from pacs.jobs import JobQueue
from pacs.webhooks import registry
from pacs.webhooks.delivery import deliver_lane
from pacs.webhooks.dispatch import JOB_KIND, dispatch
from pacs.webhooks.registry import DeliveryStatus
from pacs.webhooks.signing import signature, verify, webhook_secret
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.jobsupport import DB_BACKENDS, db_settings
from tests.webhook_receiver import receiving


@pytest.fixture(params=[DB_BACKENDS[0], pytest.param(DB_BACKENDS[1], marks=pytest.mark.postgres)])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    with db_settings(request.param, tmp_path) as settings, Archive.open(settings) as opened:
        yield opened


def _store(archive: Archive, seed: int, n: int) -> str:
    datasets = make_ct_study(PATIENTS[0], n_slices=n, rows=8, cols=8, seed=seed, study_uid=f"1.2.826.0.7.{seed}")
    for ds in datasets:
        assert archive.ingest.store_bytes(to_bytes(ds)).ok
    return str(datasets[0].StudyInstanceUID)


def test_signature_round_trip_and_replay_window() -> None:
    secret = webhook_secret(b"k" * 32, "nonce")
    assert secret.startswith("whsec_") and secret == webhook_secret(b"k" * 32, "nonce")
    assert secret != webhook_secret(b"k" * 32, "other") != webhook_secret(b"j" * 32, "nonce")
    body = b'{"Sequence":1}'
    sent = signature(secret, 1_800_000_000, body)
    assert verify(secret, "1800000000", sent, body, now=1_800_000_100)
    assert not verify(secret, "1800000000", sent, body + b" ", now=1_800_000_100)  # body changed
    assert not verify(secret, "1800000001", sent, body, now=1_800_000_100)  # timestamp changed
    assert not verify(secret, "1800000000", sent, body, now=1_800_000_301)  # a replay past the window
    assert not verify("whsec_other", "1800000000", sent, body, now=1_800_000_100)
    assert not verify(secret, "soon", sent, body, now=1_800_000_100)


def test_register_validates_and_shows_the_secret_once(archive: Archive) -> None:
    key = secret_key(archive.settings)
    _store(archive, 1, 2)
    view, secret = registry.register(archive.engine, key, "https://hooks.example.org/pacs", actions=["stable"],
                                     description="RIS", created_by="admin")  # fmt: skip
    assert view.actions == (Action.STABLE,) and view.last_seq == 2  # starts after what is in the feed now
    assert registry.secret_of(archive.engine, key, view.id) == ("https://hooks.example.org/pacs", secret)
    assert [w.id for w in registry.list_webhooks(archive.engine)] == [view.id]
    for url in ("ftp://x/y", "hooks.example.org", "http://user:pw@x/", "http:///nohost", "http://x/" + "a" * 2050):
        with pytest.raises(InvalidQuery):
            registry.register(archive.engine, key, url)
    with pytest.raises(InvalidQuery, match="unknown change feed action"):
        registry.register(archive.engine, key, "http://x/", actions=["created"])
    registry.remove(archive.engine, view.id)
    with pytest.raises(NotFound):
        registry.remove(archive.engine, view.id)
    with pytest.raises(NotFound):
        registry.deliveries(archive.engine, view.id)


def test_a_lane_is_delivered_in_order_and_stops_at_the_first_failure(archive: Archive) -> None:
    key = secret_key(archive.settings)
    with receiving() as receiver:
        view, receiver.secret = registry.register(archive.engine, key, receiver.url)
        study = _store(archive, 2, 4)
        other = _store(archive, 3, 1)
        assert dispatch(archive.engine, max_attempts=3)  # a job per lane
        jobs = JobQueue(archive.engine).list_jobs(kind=JOB_KIND)
        assert sorted(j.study_uid for j in jobs) == sorted([study, other])
        assert not dispatch(archive.engine, max_attempts=3)  # one job per lane at a time

        receiver.answer = lambda body: 503 if body["Sequence"] == 3 else 200
        result = deliver_lane(archive.engine, key, view.id, study, timeout_s=5, stopping=lambda: False)
        assert (result.delivered, result.error) == (2, "the receiver answered 503: no")
        assert [r.sequence for r in receiver.accepted] == [1, 2]

        receiver.answer = lambda body: 200
        result = deliver_lane(archive.engine, key, view.id, study, timeout_s=5, stopping=lambda: False)
        assert result.delivered == 2 and result.failed_id is None
        assert receiver.per_study() == {study: [1, 2, 3, 4]}
        assert receiver.bad_signatures == 0
        first = receiver.accepted[0]
        assert first.body["Action"] == "create" and first.event_id == "1" and first.attempt == 1
        log = registry.deliveries(archive.engine, view.id, study_uid=study)
        assert [(d.sequence, d.status, d.attempts, d.status_code) for d in log] == [
            (4, DeliveryStatus.DELIVERED, 1, 200), (3, DeliveryStatus.DELIVERED, 2, 200),
            (2, DeliveryStatus.DELIVERED, 1, 200), (1, DeliveryStatus.DELIVERED, 1, 200)]
        assert log[1].last_error == ""
        assert json.loads(json.dumps(first.body))["SopInstanceUid"]
        assert registry.get(archive.engine, view.id).pending == 1  # the other study's lane

        result = deliver_lane(archive.engine, key, view.id, other, timeout_s=5, stopping=lambda: True)
        assert result.stopped and result.delivered == 0  # a stopping worker sends nothing more


def test_an_unreachable_receiver_is_an_error_sentence(archive: Archive) -> None:
    key = secret_key(archive.settings)
    view, _ = registry.register(archive.engine, key, "http://127.0.0.1:9/hook")
    study = _store(archive, 4, 1)
    dispatch(archive.engine, max_attempts=3)
    started = time.monotonic()
    result = deliver_lane(archive.engine, key, view.id, study, timeout_s=5, stopping=lambda: False)
    assert time.monotonic() - started < 5
    assert result.error.startswith("the receiver could not be reached")
    [log] = registry.deliveries(archive.engine, view.id)
    assert (log.status, log.attempts, log.status_code) == (DeliveryStatus.PENDING, 1, None)
