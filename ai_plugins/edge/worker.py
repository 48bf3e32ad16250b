"""``cloudfilm worker --archive URL --token TOKEN``: the job loop on an edge machine.

The plugins it runs are those installed here (the ``cloudfilm.plugins`` entry points, built-in ones
included), offered to the archive with every lease request; each runs in a child process exactly as
on the archive's own workers (:func:`~ai_plugins.runner.invoke.run_installed`), reading its study
over DICOMweb. Only findings JSON goes back: the archive writes the SR/SEG.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence

from ai_plugins.edge.client import ArchiveClient, RemoteJobQueue
from ai_plugins.edge.source import DicomwebReader
from ai_plugins.runner.child import preload
from ai_plugins.runner.handler import Done, JobFailed, Lease
from ai_plugins.runner.invoke import run_installed
from ai_plugins.runner.loop import JobLoop
from ai_plugins.runner.registry import InstalledPlugin, discover_installed
from ai_plugins.runner.routing import JOB_KIND
from ai_plugins.sdk import Plugin
from pacs.jobs import ClaimedJob

log = logging.getLogger(__name__)


class EdgePluginJobs:
    """Clinical plugin runs on an edge worker: the study over DICOMweb, the findings back to the archive."""

    kinds: tuple[str, ...] = (JOB_KIND,)

    def __init__(self, worker: EdgeWorker) -> None:
        self.worker = worker

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        grant = self.worker.jobs.grant(job)
        installed = self.worker.installed.get((job.target, job.target_version))
        if installed is None:  # offered a moment ago; gone only if discovery changed
            raise JobFailed(f"{job.target}@{job.target_version} is not installed on edge worker {job.owner}")
        reader = DicomwebReader(self.worker.client.dicomweb_url, grant.token, tuple(s.info() for s in grant.series))
        answer = run_installed(installed.ref, reader, lease, study_uid=job.study_uid, uids=None,
                               key=f"{job.target}@{job.target_version}")  # fmt: skip
        if answer.findings is None:
            raise JobFailed("the plugin returned no findings")
        lease.progress(0.85, "sending the findings to the archive")
        findings = answer.findings
        return Done({"findings": json.loads(findings.to_json())},
                    note=f"{job.target}@{job.target_version} on study {job.study_uid}: "
                         f"{len(findings.findings)} finding(s) sent")  # fmt: skip

    def housekeep(self) -> bool:
        return False  # the archive sweeps expired leases and routes stable studies


class EdgeWorker(JobLoop):
    """Job threads leasing clinical plugin jobs from the archive at ``archive_url``."""

    def __init__(self, archive_url: str, token: str, *, concurrency: int = 1, poll_interval: float = 1.0,
                 extra_plugins: Sequence[type[Plugin]] = (), use_entry_points: bool = True,
                 client: ArchiveClient | None = None) -> None:  # fmt: skip
        self.client = client or ArchiveClient(archive_url, token)
        self.extra_plugins = tuple(extra_plugins)
        self.use_entry_points = use_entry_points
        self.installed: dict[tuple[str, str], InstalledPlugin] = {}
        self.jobs = RemoteJobQueue(self.client, offered=lambda: sorted(self.installed))
        super().__init__(self.jobs, {JOB_KIND: EdgePluginJobs(self)}, concurrency=concurrency,
                         poll_interval=poll_interval, worker_id=f"{socket.gethostname()}:{os.getpid()}")  # fmt: skip

    def _prepare(self) -> None:
        """Discover the installed plugins and have the fork server import them before any job runs."""
        found = discover_installed(self.extra_plugins, use_entry_points=self.use_entry_points)
        self.installed = {(p.info.name, p.info.version): p for p in found}
        preload(sorted({p.ref.partition(":")[0] for p in found}))
        log.info("edge worker %s for %s: %d job thread(s); plugins: %s", self.worker_id, self.client.base_url,
                 self.concurrency, ", ".join(f"{n}@{v}" for n, v in sorted(self.installed)) or "none")  # fmt: skip
        self._ready.set()

    def stop(self) -> None:
        super().stop()
        self.client.close()
