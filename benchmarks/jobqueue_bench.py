"""The job queue's ceiling on PostgreSQL: jobs/s enqueued, and claimed + completed (empty jobs) by
W workers at once, each a thread with its own connection, through ``pacs.jobs.JobQueue`` (claims
use ``FOR UPDATE SKIP LOCKED``). What is measured is the queue's own cost per job, with nothing
else in the job; it bounds how many jobs a PostgreSQL-backed archive can run per second.

    .venv/bin/python benchmarks/jobqueue_bench.py [--jobs 5000] [--workers 1,2,4,8] [--batch 1]
                                                  [--pg-admin URL] [--runs 3]

Each run uses a scratch database (dropped afterwards) holding ``--backlog`` finished jobs first, as
a long-running archive's table does. Figures are medians of ``--runs``.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import threading
import time
from datetime import timedelta
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import Engine, insert  # noqa: E402

from benchmarks.index_scale_bench import PG_ADMIN, scratch_database  # noqa: E402
from pacs.index.db import make_engine, upgrade, utcnow  # noqa: E402
from pacs.jobs import Job, JobQueue, JobSpec, JobStatus  # noqa: E402

KIND = "bench.noop"


def backlog(engine: Engine, n: int) -> None:
    """``n`` succeeded jobs, as months of a busy archive leave behind."""
    now = utcnow()
    old = now - timedelta(days=30)
    rows = [{"kind": KIND, "dedupe_key": f"old-{i}", "status": JobStatus.SUCCEEDED.value, "run_after": old,
             "created_at": old, "updated_at": old, "finished_at": old} for i in range(n)]  # fmt: skip
    with engine.begin() as conn:
        for start in range(0, n, 10_000):
            conn.execute(insert(Job), rows[start : start + 10_000])


def one_run(url: str, jobs: int, workers: int, batch: int) -> tuple[float, float]:
    """(enqueued/s by one thread, completed/s by ``workers`` threads)."""
    engine = make_engine(url, pool_size=max(10, workers + 2))
    queue = JobQueue(engine)
    tag = time.monotonic_ns()
    started = time.perf_counter()
    for i in range(jobs):
        queue.enqueue(JobSpec(kind=KIND, dedupe_key=f"{tag}-{i}"))
    enqueued = jobs / (time.perf_counter() - started)
    done = [0] * workers

    def work(w: int) -> None:
        while True:
            claimed = queue.claim(f"bench-{w}", [KIND], limit=batch)
            if not claimed:
                return
            for job in claimed:
                queue.complete(job)
            done[w] += len(claimed)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(workers)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    completed = sum(done) / (time.perf_counter() - started)
    assert sum(done) == jobs, f"{sum(done)} of {jobs} jobs completed"  # each exactly once
    engine.dispose()
    return enqueued, completed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=5000)
    parser.add_argument("--workers", default="1,2,4,8")
    parser.add_argument("--batch", type=int, default=1, help="jobs claimed per claim")
    parser.add_argument("--backlog", type=int, default=100_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--pg-admin", default=PG_ADMIN)
    args = parser.parse_args()
    print(f"{args.jobs:,} empty jobs per run over a backlog of {args.backlog:,} finished ones; claims of "
          f"{args.batch}; medians of {args.runs} runs")
    print(f"{'workers':>7} {'enqueue jobs/s':>15} {'claim+complete jobs/s':>22}")
    for workers in (int(w) for w in args.workers.split(",")):
        enq, comp = [], []
        for _ in range(args.runs):
            with scratch_database(args.pg_admin) as url:
                upgrade(make_engine(url))
                backlog(make_engine(url), args.backlog)
                e, c = one_run(url, args.jobs, workers, args.batch)
            enq.append(e)
            comp.append(c)
        print(f"{workers:>7} {statistics.median(enq):>15,.0f} {statistics.median(comp):>22,.0f}", flush=True)


if __name__ == "__main__":
    main()
