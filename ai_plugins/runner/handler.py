"""What the one worker (:mod:`ai_plugins.runner.worker`) asks of a job handler, and the lease each
attempt runs under.

A handler serves one or more job kinds. ``execute`` runs one attempt of a claimed job and returns
:class:`Done`, or raises: :class:`JobFailed` (one sentence for the job record; retried with backoff
unless ``retry=False``), :class:`JobCancelled` (never run), a :class:`~pacs.errors.CloudfilmError`
(its sentence), or anything else (a failed attempt named after the exception). The worker records
the outcome, so a handler never touches the job's row. ``housekeep`` runs on the worker's
housekeeping thread once per poll interval and says whether it queued work (the job threads then
look at once).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy.engine import Connection

from pacs.archive import Archive
from pacs.jobs import ClaimedJob, JobQueue, JobStatus

log = logging.getLogger(__name__)


def job_queue(archive: Archive) -> JobQueue:
    """The queue with the archive's lease and backoff settings."""
    s = archive.settings
    return JobQueue(archive.engine, lease_s=s.job_lease, backoff_base_s=s.job_retry_backoff,
                    backoff_max_s=s.job_retry_backoff_max)  # fmt: skip


class LeaseQueue(Protocol):
    """What the worker asks of the queue it works: the archive's :class:`~pacs.jobs.JobQueue`, or an
    edge worker's view of it over the archive's HTTP API (:mod:`ai_plugins.edge.client`). Each call
    that ends an attempt raises :class:`~pacs.jobs.LeaseLost` when the lease is no longer the worker's."""

    @property
    def lease_s(self) -> float: ...

    def claim(self, owner: str, kinds: Sequence[str], limit: int = 1) -> list[ClaimedJob]: ...

    def heartbeat(self, job: ClaimedJob, *, progress: float | None = None, message: str | None = None) -> bool: ...

    def complete(self, job: ClaimedJob, result: dict[str, Any] | None = None, *,
                 also: Callable[[Connection], None] | None = None) -> None: ...  # fmt: skip

    def fail(self, job: ClaimedJob, error: str, *, retry: bool = True) -> JobStatus: ...

    def release(self, job: ClaimedJob, reason: str) -> None: ...

    def cancel_claimed(self, job: ClaimedJob, reason: str) -> None: ...


class JobFailed(Exception):
    """An attempt failed for a reason worth one sentence in the job record."""

    def __init__(self, message: str, *, retry: bool = True) -> None:
        super().__init__(message)
        self.retry = retry


class JobCancelled(Exception):
    """The job must not run (its plugin was disabled meanwhile); the message says why."""


@dataclass(frozen=True, slots=True)
class Done:
    """A successful attempt: the job's result, the handler's own records (written by ``also`` in the
    transaction that completes the job, so they exist exactly when the job succeeded) and a log line."""

    result: dict[str, Any]
    also: Callable[[Connection], None] | None = None
    note: str = ""


class Lease:
    """A claimed job's lease, extended by a heartbeat thread every third of it while the attempt runs,
    progress riding along. ``lost`` turns true once another attempt owns the job (this worker stalled
    past the lease); the attempt should then stop and write nothing."""

    def __init__(self, queue: LeaseQueue, job: ClaimedJob, worker_stop: threading.Event) -> None:
        self.queue = queue
        self.job = job
        self.worker_stop = worker_stop
        self.lost = False
        self._progress: tuple[float, str] | None = None
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job.id}", daemon=True)

    def progress(self, value: float, message: str) -> None:
        """Record how far the attempt got (0..1) and what it is doing."""
        self._progress = (value, message)
        self._beat()

    def stopping(self) -> bool:
        """Whether the attempt should give up now: its lease is lost or the worker is stopping."""
        return self.lost or self.worker_stop.is_set()

    def _beat(self) -> None:
        value, message = self._progress if self._progress else (None, None)
        try:
            if not self.queue.heartbeat(self.job, progress=value, message=message):
                self.lost = True
        except Exception:  # a database hiccup: the next beat retries well within the lease
            log.warning("heartbeat of job %d failed", self.job.id, exc_info=True)

    def _run(self) -> None:
        while not self._done.wait(max(0.2, self.queue.lease_s / 3)) and not self.lost:
            self._beat()

    def __enter__(self) -> Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join(timeout=10)


class JobHandler(Protocol):
    """Runs the jobs of ``kinds`` for the worker."""

    kinds: tuple[str, ...]

    def execute(self, job: ClaimedJob, lease: Lease) -> Done: ...

    def housekeep(self) -> bool: ...
