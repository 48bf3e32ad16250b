"""Retention (``kind = "retention"``) as jobs of the one worker: a thin handler over
:mod:`pacs.retention` (which holds the logic; ``pacs`` may not import the worker).

Housekeeping queues the day's job once ``[retention] run_at`` has passed (one job per day across
every worker: :mod:`pacs.retention.schedule`). An attempt runs the retention plan as of now; a
study whose step failed fails the attempt after the others were done, so the queue retries it
with backoff (the run is idempotent: what was done is not in the plan any more).
"""

from __future__ import annotations

from ai_plugins.runner.handler import Done, JobFailed, Lease
from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.jobs import ClaimedJob
from pacs.retention.run import run
from pacs.retention.schedule import JOB_KIND, NightlySchedule


class RetentionJobs:
    kinds: tuple[str, ...] = (JOB_KIND,)

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.schedule = NightlySchedule(archive.settings.retention_run_at)

    def housekeep(self) -> bool:
        if not self.archive.settings.retention_rules:
            return False
        return self.schedule.tick(self.archive.engine, utcnow())

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        archive = self.archive
        report = run(archive.engine, archive.store, archive.settings, utcnow(), source="worker",
                     stopping=lease.stopping, progress=lease.progress,
                     partitions={p.slug: p.id for p in archive.partitions.all()})  # fmt: skip
        if report.stopped:
            raise JobFailed("the worker stopped before the retention run was done")
        if report.errors:
            raise JobFailed(f"{len(report.errors)} step(s) failed, e.g. {report.errors[0]}")
        summary = ", ".join(f"{n} {kind}" for kind, n in sorted(report.counts.items())) or "nothing to do"
        return Done(report.as_dict(), note=f"retention run of {job.target}: {summary}")
