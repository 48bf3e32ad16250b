"""The job loop every worker runs: job threads that claim jobs of the kinds it serves and hand each to
the handler of its kind, plus one housekeeping thread, over one :class:`~ai_plugins.runner.handler.LeaseQueue`.

Each attempt runs under one :class:`~ai_plugins.runner.handler.Lease`, and its outcome is recorded
here whatever the handler did: returned, raised, outlived its lease (nothing is written), or was
stopped with the worker (the job is handed back uncounted). :class:`~ai_plugins.runner.worker.Worker`
runs it on the archive's queue; an edge worker (:mod:`ai_plugins.edge.worker`) over the archive's
HTTP API, with the same leases, retries and outcomes.

Jobs are claimed oldest first, except that after a job of one kind a thread takes a due job of
another kind if there is one: no kind waits behind another's backlog (a clinical study behind a
hundred-case evaluation waits for one case, and the evaluation goes on at least every other job).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence

from ai_plugins.runner.handler import Done, JobCancelled, JobFailed, JobHandler, Lease, LeaseQueue
from pacs import logs, metrics
from pacs.errors import CloudfilmError
from pacs.jobs import ClaimedJob, LeaseLost

log = logging.getLogger(__name__)


class JobLoop:
    """``concurrency`` job threads and the housekeeping thread over one :class:`LeaseQueue`;
    ``start``/``stop`` as a background service. :class:`Worker` works the archive's own queue; an edge
    worker (:mod:`ai_plugins.edge.worker`) works it over the archive's HTTP API."""

    name = "ai-worker"

    def __init__(self, queue: LeaseQueue, handlers: dict[str, JobHandler], *, concurrency: int,
                 poll_interval: float, worker_id: str) -> None:  # fmt: skip
        self.queue = queue
        self.handlers = handlers
        self.concurrency = concurrency
        self.poll_interval = poll_interval
        self.worker_id = worker_id
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._ready = threading.Event()  # plugins discovered and preloaded
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        """Start the threads; plugin discovery (which imports plugin packages) happens in the background."""
        self._threads = [threading.Thread(target=self._housekeeping, name="ai-housekeeping", daemon=True)]
        self._threads += [
            threading.Thread(target=self._work, args=(f"{self.worker_id}:{i}",), name=f"ai-job-{i}", daemon=True)
            for i in range(self.concurrency)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        """Stop claiming; a running plugin is stopped and its job handed back for another worker."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []

    def wait_ready(self, timeout: float) -> bool:
        """Whether the plugins were discovered and preloaded within ``timeout`` seconds."""
        return self._ready.wait(timeout)

    def wait(self) -> None:
        """Block until :meth:`stop` (the ``cloudfilm worker`` foreground)."""
        self._stop.wait()

    def _prepare(self) -> None:
        """Whatever must happen once before the first job (plugin discovery); sets ``_ready``."""
        self._ready.set()

    def housekeep_once(self) -> None:
        """One round of housekeeping (none by default)."""

    def _claim(self, owner: str, kinds: Sequence[str]) -> list[ClaimedJob]:
        return self.queue.claim(owner, kinds)

    def _housekeeping(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._ready.is_set():
                    self._prepare()
                self.housekeep_once()
            except Exception:  # the database may be briefly unavailable; keep going
                log.exception("AI housekeeping failed; retrying")
            self._stop.wait(self.poll_interval)

    def _work(self, owner: str) -> None:
        while not self._ready.wait(self.poll_interval):
            if self._stop.is_set():
                return
        kinds, last = sorted(self.handlers), ""
        while not self._stop.is_set():
            others = [k for k in kinds if k != last]
            try:
                claimed = self._claim(owner, others) if others else []
                if not claimed and len(others) < len(kinds):
                    claimed = self._claim(owner, kinds)
            except Exception:
                log.exception("claiming a job failed; retrying")
                claimed = []
            if not claimed:
                self._wake.wait(self.poll_interval)
                self._wake.clear()
                continue
            for job in claimed:
                last = job.kind
                try:
                    self.execute(job)
                except Exception:  # the database failed while recording the outcome: the lease expires, it retries
                    log.exception("job %d: its outcome could not be recorded; it is retried", job.id)

    def execute(self, job: ClaimedJob) -> None:
        """Run one attempt of ``job`` with the handler of its kind and record the outcome."""
        plugin = f"{job.target}@{job.target_version}" if job.target else ""
        started, outcome = time.perf_counter(), "failed"
        with logs.bound(job=job.id, kind=job.kind):
            try:
                outcome = self._attempt(job)
            finally:
                metrics.JOB_SECONDS.labels(job.kind, plugin).observe(time.perf_counter() - started)
                metrics.JOB_ATTEMPTS.labels(job.kind, plugin, outcome).inc()

    def _attempt(self, job: ClaimedJob) -> str:
        """One attempt; what became of it (succeeded, retrying, dead, cancelled, released, lease-lost)."""
        done: Done | None = None
        error, retry = "", True
        with Lease(self.queue, job, self._stop) as lease:
            try:
                done = self.handlers[job.kind].execute(job, lease)
            except JobCancelled as exc:
                self.queue.cancel_claimed(job, str(exc))
                return "cancelled"
            except (JobFailed, CloudfilmError) as exc:
                error, retry = str(exc), not isinstance(exc, JobFailed) or exc.retry
            except Exception as exc:  # the archive keeps working whatever a plugin or a handler does
                log.exception("job %d (%s) failed", job.id, job.kind)
                error = f"{type(exc).__name__}: {exc}"
        if lease.lost:
            log.warning("job %d: lease lost during the attempt; another worker owns it now", job.id)
            return "lease-lost"
        try:
            if done is not None:
                self.queue.complete(job, done.result, also=done.also)
                log.info("job %d (%s): %s", job.id, job.kind, done.note or "done")
                return "succeeded"
            if self._stop.is_set():
                self.queue.release(job, "the worker stopped")
                return "released"
            status = self.queue.fail(job, error, retry=retry)
            log.warning("job %d (%s %s@%s) attempt %d/%d failed (%s): %s", job.id, job.kind, job.target,
                        job.target_version, job.attempt, job.max_attempts, status.value, error)  # fmt: skip
            return str(status.value)
        except LeaseLost:
            log.warning("job %d finished after its lease expired; its next attempt redoes it", job.id)
            return "lease-lost"
