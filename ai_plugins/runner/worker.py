"""The AI worker: job threads plus one housekeeping thread, in ``cloudfilm worker`` or inside ``serve``.

Housekeeping runs the stable-study detector (which routes stable studies to plugin jobs in the
transition's transaction) and returns jobs whose worker died (expired leases) to the queue. Each
of the ``concurrency`` job threads claims one job at a time and executes it. Any number of
workers, in any number of processes and machines, may share one index database.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from collections.abc import Sequence

from ai_plugins.runner.child import preload
from ai_plugins.runner.execute import JobExecutor
from ai_plugins.runner.registry import PluginRegistry
from ai_plugins.runner.routing import JOB_KIND, Router
from ai_plugins.sdk import Plugin
from pacs.archive import Archive
from pacs.jobs import JobQueue
from pacs.stability import StabilityDetector

log = logging.getLogger(__name__)


def job_queue(archive: Archive) -> JobQueue:
    """The queue with the archive's lease and backoff settings."""
    s = archive.settings
    return JobQueue(archive.engine, lease_s=s.job_lease, backoff_base_s=s.job_retry_backoff,
                    backoff_max_s=s.job_retry_backoff_max)  # fmt: skip


class WorkerPool:
    """``concurrency`` job threads and the housekeeping thread; ``start``/``stop`` as a background service."""

    name = "ai-workers"

    def __init__(self, archive: Archive, *, concurrency: int | None = None, extra_plugins: Sequence[type[Plugin]] = (),
                 use_entry_points: bool = True, detect: bool = True) -> None:  # fmt: skip
        settings = archive.settings
        self.archive = archive
        self.concurrency = settings.worker_concurrency if concurrency is None else concurrency
        self.registry = PluginRegistry(archive.engine, extra=extra_plugins, default_timeout_s=settings.job_timeout,
                                       use_entry_points=use_entry_points)  # fmt: skip
        self.queue = job_queue(archive)
        self.router = Router(self.registry, max_attempts=settings.job_max_attempts)
        self.detector = (
            StabilityDetector(archive.engine, settings.stable_age, self.router.on_stable) if detect else None
        )
        self.poll_interval = min(settings.job_poll_interval, max(0.05, settings.stable_age / 4))
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}"
        self.executor = JobExecutor(archive, self.registry, self.queue, worker_id=self.worker_id)
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

    def _prepare(self) -> None:
        """Register the installed plugins and have the fork server import them before any job runs."""
        plugins = self.registry.sync()
        preload(sorted({p.entry_point.partition(":")[0] for p in plugins if p.entry_point and p.runnable}))
        log.info("AI worker %s: %d job thread(s); plugins: %s", self.worker_id, self.concurrency,
                 ", ".join(f"{p.key}{'' if p.runnable else ' (off)'}" for p in plugins) or "none")  # fmt: skip
        self._ready.set()

    def stop(self) -> None:
        """Stop claiming; a running plugin is stopped and its job handed back for another worker."""
        self._stop.set()
        self._wake.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []

    def wait(self) -> None:
        """Block until :meth:`stop` (the ``cloudfilm worker`` foreground)."""
        self._stop.wait()

    def housekeep_once(self) -> None:
        """One detector pass and one lease sweep."""
        if self.detector is not None and self.detector.poll():
            self._wake.set()
        self.queue.reap_expired()

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
        while not self._stop.is_set():
            try:
                claimed = self.queue.claim(owner, [JOB_KIND])
            except Exception:
                log.exception("claiming a job failed; retrying")
                claimed = []
            if not claimed:
                self._wake.wait(self.poll_interval)
                self._wake.clear()
                continue
            for job in claimed:
                try:
                    self.executor.execute(job, self._stop)
                except Exception:  # the database failed while recording the outcome: the lease expires, it retries
                    log.exception("job %d: its outcome could not be recorded; it is retried", job.id)


def worker_service(archive: Archive) -> WorkerPool | None:
    """The in-process workers of ``serve`` (none when ``CLOUDFILM_WORKER_CONCURRENCY=0``)."""
    if archive.settings.worker_concurrency <= 0:
        return None
    return WorkerPool(archive)
