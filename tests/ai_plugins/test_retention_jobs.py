"""The nightly retention job: queued once per day whatever the number of workers (two nodes here,
each its own Archive on one index), run by one of them, its steps audited once."""

from __future__ import annotations

import time
from datetime import timedelta

from sqlalchemy import select

from ai_plugins.runner.retention_jobs import RetentionJobs
from ai_plugins.runner.worker import Worker
from pacs.accounts.audit import Action, AuditQuery, query
from pacs.index.db import utcnow
from pacs.jobs import Job, JobStatus
from pacs.retention.rules import RetentionRule
from pacs.retention.schedule import JOB_KIND
from tests.factories import PATIENTS, make_ct_study
from tests.pacs.retention.conftest import OpenArchive, open_archive, store  # noqa: F401  (the fixture)

RULE = RetentionRule(name="old", action="delete", age_days=365, grace_days=30)


def _jobs(engine: object) -> list[tuple[str, str]]:
    with engine.connect() as conn:  # type: ignore[attr-defined]
        return [(r.target, r.status) for r in conn.execute(select(Job.target, Job.status).where(Job.kind == JOB_KIND))]


def test_the_scheduled_job_runs_once_per_day_with_two_workers(open_archive: OpenArchive) -> None:  # noqa: F811
    node_a, node_b = open_archive([RULE], run_at="00:00"), open_archive([RULE], run_at="00:00")
    study = make_ct_study(PATIENTS[0], n_slices=1, rows=8, cols=8, seed=150, study_date="20150301")
    store(node_a, study)
    workers = [Worker(node, concurrency=1, kinds=[JOB_KIND], use_entry_points=False) for node in (node_a, node_b)]
    for worker in workers:
        worker.start()
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and [s for _, s in _jobs(node_a.engine)] != [JobStatus.SUCCEEDED]:
            time.sleep(0.2)
        time.sleep(3 * node_a.settings.job_poll_interval)  # more housekeeping rounds on both nodes
    finally:
        for worker in workers:
            worker.stop()

    today = utcnow().date().isoformat()
    assert _jobs(node_a.engine) == [(today, JobStatus.SUCCEEDED)]
    trail = query(node_a.engine, AuditQuery(study_uids=frozenset([study[0].StudyInstanceUID])))
    assert [(e.action, e.username) for e in trail] == [(Action.RETENTION, "retention")]

    tomorrow = utcnow() + timedelta(days=1)
    handlers = [RetentionJobs(node_a), RetentionJobs(node_b)]
    assert sorted(h.schedule.tick(node_a.engine, tomorrow) for h in handlers) == [False, True]
    assert [h.schedule.tick(node_a.engine, tomorrow + timedelta(hours=1)) for h in handlers] == [False, False]
    assert sorted(t for t, _ in _jobs(node_a.engine)) == [today, tomorrow.date().isoformat()]
