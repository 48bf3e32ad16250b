"""Deleting IOCM-rejected instances after their grace period (``kind = "reject-purge"``), as jobs of the
one worker: a thin handler over :mod:`pacs.rejection` (which holds the logic).

Housekeeping queues one job whenever rejected instances are past their grace period (at most one
per minute: the job key names the minute); the job deletes them in batches through :mod:`pacs.delete`.
"""

from __future__ import annotations

from ai_plugins.runner.handler import Done, Lease
from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.jobs import ClaimedJob, JobSpec, enqueue, write_transaction
from pacs.rejection import expired_count, purge_expired

JOB_KIND = "reject-purge"


class RejectionPurge:
    kinds: tuple[str, ...] = (JOB_KIND,)

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def housekeep(self) -> bool:
        if not expired_count(self.archive.engine):
            return False
        minute = utcnow().strftime("%Y%m%dT%H%M")
        with write_transaction(self.archive.engine) as conn:
            return enqueue(conn, JobSpec(kind=JOB_KIND, dedupe_key=f"{JOB_KIND}:{minute}",
                                         requested_by="rejection grace period")) is not None  # fmt: skip

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        deleted = 0
        while not lease.stopping() and expired_count(self.archive.engine):
            deleted += purge_expired(self.archive.engine, self.archive.store)
        return Done({"deleted": deleted}, note=f"{deleted} rejected instance(s) deleted after the grace period")
