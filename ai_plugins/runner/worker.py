"""The one AI worker: job threads that claim jobs of every kind it serves and hand each to the
handler of its kind, plus one housekeeping thread. Runs in ``cloudfilm worker``, inside ``serve``,
and (benchmark kinds only) inside ``cloudfilm benchmark evaluate``.

Handlers (:mod:`ai_plugins.runner.handler`): clinical plugin runs (:mod:`~ai_plugins.runner.plugin_jobs`),
benchmark cases and their scoring (:mod:`ai_plugins.benchmarks.runner`), webhook deliveries
(:mod:`~ai_plugins.runner.webhook_jobs`), forwarding by routing rules
(:mod:`~ai_plugins.runner.forward_jobs`). Each attempt runs under
one :class:`~ai_plugins.runner.handler.Lease`, and its outcome is recorded here whatever the
handler did: returned, raised, outlived its lease (nothing is written), or was stopped with the
worker (the job is handed back uncounted). Housekeeping returns jobs whose worker died (expired
leases) to the queue, then gives each handler its turn. Any number of workers, in any number of
processes and machines, may share one index database.

Jobs are claimed oldest first, except that after a job of one kind a thread takes a due job of
another kind if there is one: no kind waits behind another's backlog (a clinical study behind a
hundred-case evaluation waits for one case, and the evaluation goes on at least every other job).
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Collection, Sequence

from ai_plugins.benchmarks.runner import BenchmarkCases, BenchmarkScoring
from ai_plugins.packages.service import PackageService
from ai_plugins.runner.child import preload
from ai_plugins.runner.forward_jobs import ForwardJobs
from ai_plugins.runner.handler import Done, JobCancelled, JobFailed, JobHandler, Lease, job_queue
from ai_plugins.runner.plugin_jobs import PluginJobs
from ai_plugins.runner.registry import PluginRegistry, PluginSource
from ai_plugins.runner.rejection_jobs import RejectionPurge
from ai_plugins.runner.webhook_jobs import WebhookJobs
from ai_plugins.sdk import Plugin
from pacs import logs, metrics
from pacs.archive import Archive
from pacs.errors import CloudfilmError
from pacs.jobs import ClaimedJob, LeaseLost

log = logging.getLogger(__name__)


class Worker:
    """``concurrency`` job threads and the housekeeping thread; ``start``/``stop`` as a background service.

    ``kinds`` limits the jobs it claims (default: every kind a handler serves); ``handlers`` adds
    handlers to (or replaces those of the same kinds in) the standard set.
    """

    name = "ai-worker"

    def __init__(self, archive: Archive, *, concurrency: int | None = None, kinds: Collection[str] | None = None,
                 extra_plugins: Sequence[type[Plugin]] = (), use_entry_points: bool = True,
                 handlers: Sequence[JobHandler] = ()) -> None:  # fmt: skip
        settings = archive.settings
        self.archive = archive
        self.concurrency = settings.worker_concurrency if concurrency is None else concurrency
        self.registry = PluginRegistry(archive.engine, extra=extra_plugins, default_timeout_s=settings.job_timeout,
                                       use_entry_points=use_entry_points)  # fmt: skip
        self.queue = job_queue(archive)
        standard: list[JobHandler] = [PluginJobs(archive, self.registry), BenchmarkCases(archive, self.registry),
                                      BenchmarkScoring(archive), WebhookJobs(archive),
                                      ForwardJobs(archive), RejectionPurge(archive)]  # fmt: skip
        self.handlers: dict[str, JobHandler] = {
            kind: h for h in [*standard, *handlers] for kind in h.kinds if kinds is None or kind in kinds
        }
        self.poll_interval = min(settings.job_poll_interval, max(0.05, settings.stable_age / 4))
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
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

    # --- housekeeping --------------------------------------------------------------------------

    def _prepare(self) -> None:
        """Register the installed plugins and have the fork server import them before any job runs."""
        plugins = self.registry.sync()
        # Package files from before they lived in the object store: this node's, moved there once
        # (an admission or a run that misses one looks in the data directory too, so a store that
        # is down now only postpones this).
        try:
            if moved := PackageService(self.archive).migrate_legacy():
                log.info("moved %d package file(s) from the data directory into the object store", moved)
        except CloudfilmError as exc:
            log.warning("package files not moved into the object store yet: %s", exc)
        # Installed plugins only: a package's code is never imported outside its sandbox.
        preload(sorted({p.entry_point.partition(":")[0] for p in plugins
                        if p.source is PluginSource.ENTRY_POINT and p.entry_point and p.installed}))  # fmt: skip
        log.info("AI worker %s: %d job thread(s) for %s; plugins: %s", self.worker_id, self.concurrency,
                 ", ".join(sorted(self.handlers)),
                 ", ".join(f"{p.key}{'' if p.runnable else ' (off)'}" for p in plugins) or "none")  # fmt: skip
        self._ready.set()

    def housekeep_once(self) -> None:
        """One lease sweep, then each handler's housekeeping (one failing does not stop the others)."""
        if self.queue.reap_expired():
            self._wake.set()
        for handler in {id(h): h for h in self.handlers.values()}.values():
            try:
                if handler.housekeep():
                    self._wake.set()
            except Exception:  # the database may be briefly unavailable; the next round retries
                log.exception("housekeeping of %s jobs failed; retrying", "/".join(handler.kinds))

    def _housekeeping(self) -> None:
        while not self._stop.is_set():
            try:
                if not self._ready.is_set():
                    self._prepare()
                self.housekeep_once()
            except Exception:  # the database may be briefly unavailable; keep going
                log.exception("AI housekeeping failed; retrying")
            self._stop.wait(self.poll_interval)

    # --- jobs ----------------------------------------------------------------------------------

    def _work(self, owner: str) -> None:
        while not self._ready.wait(self.poll_interval):
            if self._stop.is_set():
                return
        kinds, last = sorted(self.handlers), ""
        while not self._stop.is_set():
            others = [k for k in kinds if k != last]
            try:
                claimed = self.queue.claim(owner, others) if others else []
                if not claimed and len(others) < len(kinds):
                    claimed = self.queue.claim(owner, kinds)
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


def worker_service(archive: Archive) -> Worker | None:
    """The worker of ``serve`` (none when ``CLOUDFILM_WORKER_CONCURRENCY=0``)."""
    if archive.settings.worker_concurrency <= 0:
        return None
    return Worker(archive)
