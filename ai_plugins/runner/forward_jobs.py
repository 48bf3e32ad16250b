"""Forwarding by routing rules (``kind = "forward"``) as jobs of the one worker: a thin handler over
:mod:`pacs.routing` (which holds the logic; ``pacs`` may not import the worker).

Housekeeping turns new change feed events into forwards and starts a job per lane (destination and
study) within each destination's concurrency. An attempt sends the lane's forwards in order. A
failure before anything was sent is the attempt's failure: the queue retries it with backoff,  and
the forward is dead-lettered with the peer's status when its attempts run out (the lane goes on). A
failure after some instances went ends the job successfully and queues the lane's next job after
the first backoff. An instance is dead-lettered once its own attempts (counted on the forward,
over every job of its lane) reach the destination's ``max_attempts``.
"""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy.engine import Connection

from ai_plugins.runner.handler import Done, JobFailed, Lease
from pacs.accounts.keys import secret_key
from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.jobs import ClaimedJob, enqueue, write_transaction
from pacs.routing.dispatch import JOB_KIND, dispatch, job_timeout, lane_job, mark_dead
from pacs.routing.forward import deliver_lane


class ForwardJobs:
    kinds: tuple[str, ...] = (JOB_KIND,)

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self._key: bytes | None = None  # read when a rule de-identifies (creating it is serve's business)

    def _archive_key(self) -> bytes:
        if self._key is None:
            self._key = secret_key(self.archive.settings)
        return self._key

    def housekeep(self) -> bool:
        settings = self.archive.settings
        partitions = {p.slug: p.id for p in self.archive.partitions.all()}
        return dispatch(self.archive.engine, self.archive.store, settings.routing_rules, settings.routing_destinations,
                        partitions)  # fmt: skip

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        settings = self.archive.settings
        needs_key = any(r.deidentify for r in settings.routing_rules)
        result = deliver_lane(self.archive.engine, self.archive.store, settings,
                              self._archive_key() if needs_key else b"", job.target, job.study_uid,
                              stopping=lease.stopping)  # fmt: skip
        if result.gone:
            return Done({"sent": 0}, note=f"destination {job.target} is no longer configured")
        if result.stopped:  # handed back uncounted when the worker stops
            raise JobFailed("the worker stopped before the lane was sent")
        done = {"sent": result.sent}
        if result.failed_id is None:
            return Done(done, note=f"{job.target}: {result.sent} instance(s) of study {job.study_uid}")
        dest = settings.routing_destinations[job.target]
        if result.attempts >= dest.max_attempts:  # the instance's attempts (over every job of the lane) ran out
            with write_transaction(self.archive.engine) as conn:
                mark_dead(conn, result.failed_id, result.error, result.status_code)
            if not result.sent:
                raise JobFailed(result.error, retry=False)
            return Done(done | {"error": result.error}, note=f"{job.target}: dead letter: {result.error}")
        if result.sent:
            failed_id, error = result.failed_id, result.error
            run_after = utcnow() + timedelta(seconds=settings.job_retry_backoff)

            def next_job(conn: Connection) -> None:
                enqueue(conn, lane_job(job.target, job.study_uid, failed_id, max_attempts=dest.max_attempts,
                                       timeout_s=job_timeout(dest), run_after=run_after))  # fmt: skip

            return Done(done | {"error": error}, also=next_job,
                        note=f"{job.target}: {result.sent} instance(s), then: {error}")
        raise JobFailed(result.error)
