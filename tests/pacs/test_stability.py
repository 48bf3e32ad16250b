"""Stable-study detection from the index: once per transition across processes, jobs written in
the same transaction, unstable again when an instance arrives, nothing lost when routing fails."""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from pacs.archive import Archive
from pacs.index import db
from pacs.jobs import JobQueue, JobSpec, dedupe_key, enqueue
from pacs.stability import StabilityCursor, StabilityDetector, StableStudy, stability_of
from tests.factories import make_ct_study, to_bytes
from tests.jobsupport import DB_BACKENDS, FakeClock, db_settings

AGE = 30.0


@pytest.fixture(params=[DB_BACKENDS[0], pytest.param(DB_BACKENDS[1], marks=pytest.mark.postgres)])
def archive(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Archive]:
    with db_settings(request.param, tmp_path) as settings, Archive.open(settings) as opened:
        yield opened


def _store(archive: Archive, seed: int, n: int = 2, start: int = 0) -> str:
    datasets = make_ct_study(n_slices=start + n, rows=8, cols=8, seed=seed, study_uid=f"1.2.826.0.1.{seed}")
    for ds in datasets[start:]:
        assert archive.ingest.store_bytes(to_bytes(ds)).ok
    return str(datasets[0].StudyInstanceUID)


def _job_per_transition(conn: Connection, stable: StableStudy) -> None:
    enqueue(
        conn,
        JobSpec(
            kind="test",
            dedupe_key=dedupe_key(stable.study_uid, stable.generation),
            study_uid=stable.study_uid,
            generation=stable.generation,
        ),
    )


def test_a_study_becomes_stable_after_the_age_once(archive: Archive) -> None:
    uid = _store(archive, seed=1)
    clock = FakeClock()
    detector = StabilityDetector(archive.engine, AGE, _job_per_transition, clock=clock)
    assert detector.poll() == []
    assert not stability_of(archive.engine, uid).stable
    clock.advance(AGE + 1)
    [stable] = detector.poll()
    assert (stable.study_uid, stable.generation) == (uid, 1)
    assert detector.poll() == []
    clock.advance(3600)
    assert detector.poll() == []
    state = stability_of(archive.engine, uid)
    assert state.stable and state.generation == 1 and state.stable_at == stable.stable_at
    [job] = JobQueue(archive.engine).list_jobs()
    assert (job.study_uid, job.generation) == (uid, 1)


def test_an_arrival_makes_a_stable_study_unstable_until_the_age_passes_again(archive: Archive) -> None:
    uid = _store(archive, seed=2, n=2)
    clock = FakeClock()
    detector = StabilityDetector(archive.engine, AGE, _job_per_transition, clock=clock)
    clock.advance(AGE + 1)
    assert [s.generation for s in detector.poll()] == [1]
    _store(archive, seed=2, n=1, start=2)  # a late slice of the same study
    assert not stability_of(archive.engine, uid).stable
    clock.now = db.utcnow() + timedelta(seconds=AGE / 2)
    assert detector.poll() == []
    clock.advance(AGE)
    [again] = detector.poll()
    assert again.generation == 2 and stability_of(archive.engine, uid).stable
    assert sorted(j.generation for j in JobQueue(archive.engine).list_jobs()) == [1, 2]


def test_many_detectors_at_once_make_each_transition_once(archive: Archive) -> None:
    uids = {_store(archive, seed=10 + i, n=1) for i in range(8)}
    clock = FakeClock()
    clock.advance(AGE + 1)
    calls: list[str] = []
    lock = threading.Lock()

    def route(conn: Connection, stable: StableStudy) -> None:
        with lock:
            calls.append(stable.study_uid)
        _job_per_transition(conn, stable)

    detectors = [StabilityDetector(archive.engine, AGE, route, clock=clock, batch=3) for _ in range(5)]
    barrier = threading.Barrier(len(detectors))

    def run(d: StabilityDetector) -> None:
        barrier.wait()
        d.poll()

    threads = [threading.Thread(target=run, args=(d,)) for d in detectors]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert sorted(calls) == sorted(uids)
    assert sorted(j.study_uid for j in JobQueue(archive.engine).list_jobs()) == sorted(uids)


def _poll_in_process(url: str, shift_s: float, out: multiprocessing.Queue[list[str]]) -> None:
    engine = db.make_engine(url)
    clock = FakeClock(db.utcnow() + timedelta(seconds=shift_s))
    detector = StabilityDetector(engine, AGE, _job_per_transition, clock=clock, batch=2)
    out.put([s.study_uid for s in detector.poll()])
    engine.dispose()


def test_detectors_in_several_processes_agree(archive: Archive) -> None:
    uids = {_store(archive, seed=20 + i, n=1) for i in range(6)}
    ctx = multiprocessing.get_context("spawn")
    out: multiprocessing.Queue[list[str]] = ctx.Queue()
    url = archive.engine.url.render_as_string(hide_password=False)
    procs = [ctx.Process(target=_poll_in_process, args=(url, AGE + 1, out)) for _ in range(3)]
    for p in procs:
        p.start()
    results = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=30)
    transitioned = [u for r in results for u in r]
    assert sorted(transitioned) == sorted(uids)
    assert len(JobQueue(archive.engine).list_jobs()) == len(uids)


def test_a_failed_routing_writes_nothing_and_is_retried(archive: Archive) -> None:
    uid = _store(archive, seed=3)
    clock = FakeClock()
    clock.advance(AGE + 1)
    failing = True

    def route(conn: Connection, stable: StableStudy) -> None:
        _job_per_transition(conn, stable)
        if failing:
            raise RuntimeError("registry unavailable")

    detector = StabilityDetector(archive.engine, AGE, route, clock=clock)
    assert detector.poll() == []
    assert not stability_of(archive.engine, uid).stable
    assert JobQueue(archive.engine).list_jobs() == []  # the job went with the transition
    failing = False
    clock.advance(600)  # well past the cursor margin: the failed study was not skipped
    [stable] = detector.poll()
    assert stable.generation == 1
    assert len(JobQueue(archive.engine).list_jobs()) == 1


def test_the_cursor_advances_and_studies_from_before_detection_are_left_alone(archive: Archive) -> None:
    clock = FakeClock()
    with archive.engine.begin() as conn:  # as if detection had begun after this study arrived
        conn.execute(
            update(StabilityCursor).values(
                floor_at=clock.now + timedelta(seconds=3600), scanned_to=clock.now + timedelta(seconds=3600)
            )
        )
    _store(archive, seed=4)
    clock.advance(7200)
    detector = StabilityDetector(archive.engine, AGE, _job_per_transition, clock=clock)
    assert detector.poll() == []
    with archive.engine.connect() as conn:
        scanned_to = conn.execute(select(StabilityCursor.scanned_to)).scalar_one()
    assert db.utcnow() < clock.now - timedelta(seconds=AGE + 1) <= scanned_to.replace(tzinfo=clock.now.tzinfo)
