"""The durable job queue on SQLite and PostgreSQL: idempotent enqueue, exclusive claims, leases,
retries with backoff, dead-lettering, and the handler's records committed with the job's success."""

from __future__ import annotations

import multiprocessing
import threading
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Column, Engine, MetaData, String, Table, func, insert, select
from sqlalchemy.engine import Connection

from pacs.index import db
from pacs.jobs import (
    Job,
    JobQueue,
    JobSpec,
    JobStatus,
    LeaseLost,
    backoff_delay,
    dedupe_key,
    enqueue,
    next_due,
    write_transaction,
)
from tests.jobsupport import DB_BACKENDS, FakeClock, db_settings


@pytest.fixture(params=[DB_BACKENDS[0], pytest.param(DB_BACKENDS[1], marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    with db_settings(request.param, tmp_path) as settings:
        eng = db.make_engine(settings.resolved_database_url)
        db.upgrade(eng)
        yield eng
        eng.dispose()


def _spec(n: int | str, **kw: Any) -> JobSpec:
    return JobSpec(
        kind="test", dedupe_key=dedupe_key("test", n), target="t", target_version="1", study_uid=f"1.2.{n}", **kw
    )


def test_enqueue_is_idempotent_on_its_key(engine: Engine) -> None:
    queue = JobQueue(engine)
    first = queue.enqueue(_spec(1, payload={"a": 1}))
    assert first is not None
    assert queue.enqueue(_spec(1, payload={"a": 2})) is None
    [job] = queue.list_jobs()
    assert (job.id, job.status, job.payload, job.attempts) == (first, JobStatus.QUEUED, {"a": 1}, 0)


def test_enqueue_joins_the_callers_transaction(engine: Engine) -> None:
    with pytest.raises(RuntimeError), write_transaction(engine) as conn:
        assert enqueue(conn, _spec(1)) is not None
        raise RuntimeError("the event that caused the job did not happen")
    assert JobQueue(engine).list_jobs() == []


def test_claim_takes_due_jobs_once_in_priority_order(engine: Engine) -> None:
    clock = FakeClock()
    queue = JobQueue(engine, clock=clock)
    low = queue.enqueue(_spec("low"))
    high = queue.enqueue(_spec("high", priority=5))
    later = queue.enqueue(_spec("later", run_after=clock.now.replace(year=clock.now.year + 1)))
    queue.enqueue(JobSpec(kind="other", dedupe_key=dedupe_key("other")))
    claimed = queue.claim("w1", ["test"], limit=10)
    assert [j.id for j in claimed] == [high, low]
    assert all(j.attempt == 1 and j.owner == "w1" for j in claimed)
    assert queue.claim("w2", ["test"], limit=10) == []
    assert later is not None and queue.get(later).status is JobStatus.QUEUED
    running = queue.get(claimed[0].id)
    assert running.status is JobStatus.RUNNING and running.lease_owner == "w1" and running.started_at is not None


def test_concurrent_claimers_never_share_a_job(engine: Engine) -> None:
    queue = JobQueue(engine, lease_s=300)
    ids = {queue.enqueue(_spec(i)) for i in range(60)}
    seen: Counter[int] = Counter()
    lock = threading.Lock()

    def work(owner: str) -> None:
        while batch := queue.claim(owner, ["test"], limit=2):
            for job in batch:
                with lock:
                    seen[job.id] += 1
                queue.complete(job, {"by": owner})

    threads = [threading.Thread(target=work, args=(f"w{i}",)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert set(seen) == ids and set(seen.values()) == {1}
    assert queue.counts()[JobStatus.SUCCEEDED] == 60


def _claim_in_process(url: str, owner: str, out: multiprocessing.Queue[list[int]]) -> None:
    eng = db.make_engine(url)
    queue = JobQueue(eng, lease_s=300)
    got: list[int] = []
    while batch := queue.claim(owner, ["test"]):
        for job in batch:
            got.append(job.id)
            queue.complete(job)
    eng.dispose()
    out.put(got)


def test_claimers_in_several_processes_never_share_a_job(engine: Engine) -> None:
    queue = JobQueue(engine)
    ids = {queue.enqueue(_spec(i)) for i in range(40)}
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[int]] = ctx.Queue()
    url = engine.url.render_as_string(hide_password=False)
    procs = [ctx.Process(target=_claim_in_process, args=(url, f"p{i}", out)) for i in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    claimed = [i for r in results for i in r]
    assert sorted(claimed) == sorted(i for i in ids if i is not None)  # each exactly once


def test_failed_attempts_back_off_then_dead_letter_with_the_error(engine: Engine) -> None:
    clock = FakeClock()
    queue = JobQueue(engine, backoff_base_s=10, backoff_max_s=15, clock=clock)
    job_id = queue.enqueue(_spec(1, max_attempts=3))
    assert job_id is not None
    [job] = queue.claim("w", ["test"])
    assert queue.fail(job, "ValueError: bad pixel data") is JobStatus.RETRYING
    view = queue.get(job_id)
    assert view.status is JobStatus.RETRYING and view.error == "ValueError: bad pixel data"
    assert (view.run_after - clock.now).total_seconds() == pytest.approx(10)
    assert queue.claim("w", ["test"]) == []  # not before the backoff
    assert next_due(engine, ["test"]) == view.run_after
    clock.advance(10)
    [job] = queue.claim("w", ["test"])
    assert job.attempt == 2
    assert queue.fail(job, "second") is JobStatus.RETRYING
    assert (queue.get(job_id).run_after - clock.now).total_seconds() == pytest.approx(15)  # 20, capped
    clock.advance(15)
    [job] = queue.claim("w", ["test"])
    assert queue.fail(job, "third and last") is JobStatus.FAILED
    view = queue.get(job_id)
    assert (view.status, view.attempts, view.error) == (JobStatus.FAILED, 3, "third and last")
    assert view.finished_at is not None
    clock.advance(3600)
    assert queue.claim("w", ["test"]) == []


def test_a_non_retryable_failure_is_dead_at_once(engine: Engine) -> None:
    queue = JobQueue(engine)
    queue.enqueue(_spec(1, max_attempts=5))
    [job] = queue.claim("w", ["test"])
    assert queue.fail(job, "plugin not installed", retry=False) is JobStatus.FAILED


def test_backoff_doubles_and_is_capped() -> None:
    assert [backoff_delay(n, 2, 100) for n in (1, 2, 3, 4, 8)] == [2, 4, 8, 16, 100]


def test_an_expired_lease_returns_the_job_and_the_old_holder_cannot_finish(engine: Engine) -> None:
    clock = FakeClock()
    queue = JobQueue(engine, lease_s=30, clock=clock)
    job_id = queue.enqueue(_spec(1, max_attempts=2))
    [first] = queue.claim("dead-worker", ["test"])
    clock.advance(10)
    assert queue.reap_expired() == 0  # still leased
    clock.advance(25)
    assert queue.reap_expired() == 1
    view = queue.get(job_id)  # type: ignore[arg-type]
    assert view.status is JobStatus.RETRYING and "lease expired" in view.error and "attempt 1" in view.error
    [second] = queue.claim("live-worker", ["test"])
    assert second.attempt == 2
    assert not queue.heartbeat(first)
    with pytest.raises(LeaseLost):
        queue.complete(first, {"by": "dead"})
    with pytest.raises(LeaseLost):
        queue.fail(first, "late")
    queue.complete(second, {"by": "live"})
    assert queue.get(job_id).result == {"by": "live"}  # type: ignore[arg-type]


def test_a_job_that_keeps_killing_its_worker_is_dead_lettered(engine: Engine) -> None:
    clock = FakeClock()
    queue = JobQueue(engine, lease_s=5, clock=clock)
    job_id = queue.enqueue(_spec(1, max_attempts=2))
    for _ in range(2):
        assert queue.claim("w", ["test"])
        clock.advance(6)
        queue.reap_expired()
    view = queue.get(job_id)  # type: ignore[arg-type]
    assert view.status is JobStatus.FAILED and "lease expired" in view.error


def test_heartbeats_keep_the_lease_and_record_progress(engine: Engine) -> None:
    clock = FakeClock()
    queue = JobQueue(engine, lease_s=10, clock=clock)
    job_id = queue.enqueue(_spec(1))
    [job] = queue.claim("w", ["test"])
    for step in range(5):
        clock.advance(8)
        assert queue.heartbeat(job, progress=step / 4, message=f"step {step}")
        assert queue.reap_expired() == 0
    view = queue.get(job_id)  # type: ignore[arg-type]
    assert (view.status, view.progress, view.progress_message) == (JobStatus.RUNNING, 1.0, "step 4")


def test_completion_commits_the_handlers_records_or_nothing(engine: Engine) -> None:
    results = Table("test_job_results", MetaData(), Column("job_key", String(64), primary_key=True))
    results.create(engine)
    clock = FakeClock()
    queue = JobQueue(engine, lease_s=5, clock=clock)
    queue.enqueue(_spec(1))
    [job] = queue.claim("w", ["test"])
    clock.advance(6)
    queue.reap_expired()

    def record(conn: Connection) -> None:
        conn.execute(insert(results).values(job_key=job.dedupe_key))

    with pytest.raises(LeaseLost):  # lost lease: the handler's record is rolled back with it
        queue.complete(job, also=record)
    [job] = queue.claim("w", ["test"])
    queue.complete(job, {"ok": True}, also=record)
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(results)).scalar_one() == 1
    view = queue.get(job.id)
    assert view.status is JobStatus.SUCCEEDED and view.progress == 1.0
    assert view.wait_s is not None and view.run_s is not None and view.run_s >= 6


def test_cancel_pending_and_filters(engine: Engine) -> None:
    queue = JobQueue(engine)
    for i in range(3):
        queue.enqueue(_spec(i))
    queue.enqueue(JobSpec(kind="test", dedupe_key=dedupe_key("x"), target="u", target_version="1", study_uid="9"))
    [running] = queue.claim("w", ["test"])
    assert queue.cancel_pending(kind="test", target="t", target_version="1", reason="plugin disabled") == 2
    assert {j.status for j in queue.list_jobs(target="t")} == {JobStatus.RUNNING, JobStatus.CANCELLED}
    assert [j.id for j in queue.list_jobs(statuses=[JobStatus.RUNNING])] == [running.id]
    assert [j.study_uid for j in queue.list_jobs(study_uid="9")] == ["9"]
    assert queue.active_job(kind="test", target="t", target_version="1", study_uid=running.study_uid) is not None
    assert queue.active_job(kind="test", target="t", target_version="1", study_uid="1.2.1") is None
    with engine.connect() as conn:
        assert conn.execute(select(func.count()).select_from(Job)).scalar_one() == 4
