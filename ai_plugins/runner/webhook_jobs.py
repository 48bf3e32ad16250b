"""Webhook deliveries (``kind = "webhook"``) as jobs of the one worker: a thin handler over
:mod:`pacs.webhooks` (which holds the delivery logic; ``pacs`` may not import the worker).

Housekeeping turns new change feed events into deliveries and starts a job per lane (webhook and
study). An attempt posts the lane's deliveries in order. A failure before any delivery is the
attempt's failure: the queue retries it with backoff, and on the last attempt the delivery is
dead-lettered (the lane goes on with the next event). A failure after some deliveries ends the
job successfully and queues the lane's next job after the first backoff, so each event gets all
its attempts.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Connection

from ai_plugins.runner.handler import Done, JobFailed, Lease
from pacs.accounts.keys import secret_key
from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.jobs import ClaimedJob, enqueue, write_transaction
from pacs.webhooks.delivery import deliver_lane
from pacs.webhooks.dispatch import JOB_KIND, dispatch, lane_job, mark_dead


class WebhookJobs:
    kinds: tuple[str, ...] = (JOB_KIND,)

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._key: bytes | None = None  # read when a delivery is signed (creating it is serve's business)

    def _archive_key(self) -> bytes:
        if self._key is None:
            self._key = secret_key(self.archive.settings)
        return self._key

    def housekeep(self) -> bool:
        return dispatch(self.archive.engine, max_attempts=self.archive.settings.webhook_max_attempts)

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        settings = self.archive.settings
        result = deliver_lane(self.archive.engine, self._archive_key(), int(job.target), job.study_uid,
                              timeout_s=settings.webhook_timeout, stopping=lease.stopping)  # fmt: skip
        if result.gone:
            return Done({"delivered": result.delivered}, note=f"webhook {job.target} was deleted")
        if result.stopped:  # handed back uncounted when the worker stops; nothing written when the lease is lost
            raise JobFailed("the worker stopped before the lane was delivered")
        done = {"delivered": result.delivered}
        if result.failed_id is None:
            return Done(done, note=f"webhook {job.target}: {result.delivered} event(s) of study {job.study_uid}")
        if result.delivered:
            failed_id, error = result.failed_id, result.error
            run_after = utcnow() + timedelta(seconds=settings.job_retry_backoff)

            def next_job(conn: Connection) -> None:
                enqueue(conn, lane_job(int(job.target), job.study_uid, failed_id,
                                       max_attempts=settings.webhook_max_attempts, run_after=run_after))

            return Done(done | {"error": error}, also=next_job,
                        note=f"webhook {job.target}: {result.delivered} event(s), then: {error}")
        if job.attempt >= job.max_attempts:
            with write_transaction(self.archive.engine) as conn:
                mark_dead(conn, result.failed_id, result.error)
            raise JobFailed(result.error, retry=False)
        raise JobFailed(result.error)
