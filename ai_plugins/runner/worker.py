"""The one AI worker: job threads that claim jobs of every kind it serves and hand each to the
handler of its kind, plus one housekeeping thread. Runs in ``cloudfilm worker``, inside ``serve``,
and (benchmark kinds only) inside ``cloudfilm benchmark evaluate``.

Handlers (:mod:`ai_plugins.runner.handler`): clinical plugin runs (:mod:`~ai_plugins.runner.plugin_jobs`),
benchmark cases and their scoring (:mod:`ai_plugins.benchmarks.runner`), webhook deliveries
(:mod:`~ai_plugins.runner.webhook_jobs`), forwarding by routing rules
(:mod:`~ai_plugins.runner.forward_jobs`), patient notifications (:mod:`~ai_plugins.runner.notify_jobs`),
the nightly retention run (:mod:`~ai_plugins.runner.retention_jobs`), run by the job loop
(:mod:`ai_plugins.runner.loop`). Housekeeping returns jobs whose worker died (expired leases) to the
queue, then gives each handler its turn. Any number of workers, in any number of processes and
machines, may share one index database; edge workers share it through the archive's HTTP API
(:mod:`ai_plugins.edge`).
"""

from __future__ import annotations

import logging
import os
import socket
from collections.abc import Collection, Sequence

from ai_plugins.benchmarks.runner import BenchmarkCases, BenchmarkScoring
from ai_plugins.packages.service import PackageService
from ai_plugins.runner.child import preload
from ai_plugins.runner.forward_jobs import ForwardJobs
from ai_plugins.runner.handler import JobHandler, job_queue
from ai_plugins.runner.loop import JobLoop
from ai_plugins.runner.notify_jobs import NotifyJobs
from ai_plugins.runner.plugin_jobs import PluginJobs, edge_only
from ai_plugins.runner.registry import PluginRegistry, PluginSource
from ai_plugins.runner.rejection_jobs import RejectionPurge
from ai_plugins.runner.retention_jobs import RetentionJobs
from ai_plugins.runner.webhook_jobs import WebhookJobs
from ai_plugins.sdk import Plugin
from pacs.archive import Archive
from pacs.errors import CloudfilmError
from pacs.jobs import ClaimedJob

log = logging.getLogger(__name__)


class Worker(JobLoop):
    """The archive's worker: every kind a handler serves, on the index database's queue.

    ``kinds`` limits the jobs it claims (default: every kind a handler serves); ``handlers`` adds
    handlers to (or replaces those of the same kinds in) the standard set. Clinical runs of the
    plugins named in ``EDGE_PLUGINS`` are left to edge workers.
    """

    def __init__(self, archive: Archive, *, concurrency: int | None = None, kinds: Collection[str] | None = None,
                 extra_plugins: Sequence[type[Plugin]] = (), use_entry_points: bool = True,
                 handlers: Sequence[JobHandler] = ()) -> None:  # fmt: skip
        settings = archive.settings
        self.archive = archive
        self.registry = PluginRegistry(archive.engine, extra=extra_plugins, default_timeout_s=settings.job_timeout,
                                       use_entry_points=use_entry_points,
                                       gated=bool(settings.plugins_gate_benchmark))  # fmt: skip
        self.jobs = job_queue(archive)
        standard: list[JobHandler] = [PluginJobs(archive, self.registry), BenchmarkCases(archive, self.registry),
                                      BenchmarkScoring(archive), WebhookJobs(archive),
                                      ForwardJobs(archive), NotifyJobs(archive),
                                      RetentionJobs(archive), RejectionPurge(archive)]  # fmt: skip
        super().__init__(
            self.jobs,
            {kind: h for h in [*standard, *handlers] for kind in h.kinds if kinds is None or kind in kinds},
            concurrency=settings.worker_concurrency if concurrency is None else concurrency,
            poll_interval=min(settings.job_poll_interval, max(0.05, settings.stable_age / 4)),
            worker_id=f"{socket.gethostname()}:{os.getpid()}",
        )
        self._left_to_edge = edge_only(settings.edge_plugins)

    def _claim(self, owner: str, kinds: Sequence[str]) -> list[ClaimedJob]:
        return self.jobs.claim(owner, kinds, where=self._left_to_edge)

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
        if self.jobs.reap_expired():
            self._wake.set()
        for handler in {id(h): h for h in self.handlers.values()}.values():
            try:
                if handler.housekeep():
                    self._wake.set()
            except Exception:  # the database may be briefly unavailable; the next round retries
                log.exception("housekeeping of %s jobs failed; retrying", "/".join(handler.kinds))


def worker_service(archive: Archive) -> Worker | None:
    """The worker of ``serve`` (none when ``CLOUDFILM_WORKER_CONCURRENCY=0``)."""
    if archive.settings.worker_concurrency <= 0:
        return None
    return Worker(archive)
