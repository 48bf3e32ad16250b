"""Patient notifications (``kind = "notify"``) as jobs of the one worker: a thin handler over
:mod:`pacs.notify` (which holds the logic; ``pacs`` may not import the worker).

Housekeeping turns ``report.signed`` change feed events into deliveries and gives each pending
delivery a job. An attempt sends one delivery: a failure that may pass is retried with the queue's
backoff and dead-lettered on the last attempt; a refusal (5xx, a revoked link) ends it at once; a
message in doubt is never sent again.
"""

from __future__ import annotations

from ai_plugins.runner.handler import Done, JobFailed, Lease
from pacs.accounts.keys import secret_key
from pacs.archive import Archive
from pacs.jobs import ClaimedJob, write_transaction
from pacs.notify.delivery import deliver
from pacs.notify.outbox import JOB_KIND, DeliveryStatus, collect_reports, mark_dead, start_jobs
from pacs.notify.senders import Notifier, notifiers


class NotifyJobs:
    kinds: tuple[str, ...] = (JOB_KIND,)

    def __init__(self, archive: Archive) -> None:
        self.archive = archive
        self.senders: dict[str, Notifier] = notifiers(archive.settings)
        self._key: bytes | None = None  # read when a share link's message is built (creating it is serve's business)

    def _archive_key(self) -> bytes:
        if self._key is None:
            self._key = secret_key(self.archive.settings)
        return self._key

    def _timeout_s(self) -> float:
        return self.archive.settings.smtp_timeout * 8 + 60  # connect, EHLO, STARTTLS, AUTH, MAIL, RCPT, DATA, end

    def housekeep(self) -> bool:
        engine, settings = self.archive.engine, self.archive.settings
        collect_reports(engine, channels=frozenset(self.senders))
        return start_jobs(engine, max_attempts=settings.notify_max_attempts, timeout_s=self._timeout_s())

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        delivery_id = int(job.target)
        if lease.stopping():
            raise JobFailed("the worker stopped before the message was sent")
        attempt = deliver(self.archive.engine, self.archive.settings, self._archive_key(), delivery_id, self.senders)
        if attempt.status is DeliveryStatus.SENT:
            return Done({"status": attempt.status.value}, note=f"notification delivery {delivery_id} sent")
        if not attempt.retry:
            if attempt.error:
                raise JobFailed(attempt.error, retry=False)
            return Done({"status": attempt.status.value}, note=f"notification delivery {delivery_id}: {attempt.status}")
        if job.attempt >= job.max_attempts:
            with write_transaction(self.archive.engine) as conn:
                mark_dead(conn, delivery_id, attempt.error)
            raise JobFailed(attempt.error, retry=False)
        raise JobFailed(attempt.error)
