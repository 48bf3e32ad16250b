"""``cloudfilm worker --archive URL --token TOKEN``: the job loop on an edge machine.

The plugins it runs are those installed here (the ``cloudfilm.plugins`` entry points, built-in ones
included), offered to the archive with every lease request; each runs in a child process exactly as
on the archive's own workers (:func:`~ai_plugins.runner.invoke.run_installed`), reading its study
over DICOMweb. Where the sandbox can run (bubblewrap), it asks for jobs of admitted algorithm
packages too: the package comes from its cache (:mod:`~ai_plugins.edge.package_cache`, fetched from
the archive once per SHA-256), the case is written from the study read over DICOMweb, and it runs in
the sandbox exactly as on the archive (:func:`~ai_plugins.runner.invoke.run_package`). Only
findings JSON goes back: the archive writes the SR/SEG.
"""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

import httpx

from ai_plugins.edge.client import ArchiveClient, ArchiveRefused, RemoteJobQueue
from ai_plugins.edge.package_cache import PackageCache, default_cache_dir
from ai_plugins.edge.protocol import JobGrantOut, PackageGrantOut
from ai_plugins.edge.source import DicomwebError, DicomwebReader
from ai_plugins.packages.environment import DigestMismatch
from ai_plugins.packages.manifest import InvalidPackage
from ai_plugins.runner.child import preload
from ai_plugins.runner.handler import Done, JobFailed, Lease
from ai_plugins.runner.invoke import run_installed, run_package
from ai_plugins.runner.loop import JobLoop
from ai_plugins.runner.registry import InstalledPlugin, discover_installed
from ai_plugins.runner.routing import JOB_KIND
from ai_plugins.sandbox import unavailable
from ai_plugins.sdk import Findings, Plugin
from pacs.jobs import ClaimedJob

log = logging.getLogger(__name__)


class EdgePluginJobs:
    """Clinical plugin runs on an edge worker: the study over DICOMweb, the findings back to the archive."""

    kinds: tuple[str, ...] = (JOB_KIND,)

    def __init__(self, worker: EdgeWorker) -> None:
        self.worker = worker

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        grant = self.worker.jobs.grant(job)
        reader = DicomwebReader(self.worker.client.dicomweb_url, grant.token, tuple(s.info() for s in grant.series))
        key = f"{job.target}@{job.target_version}"
        if grant.package is not None:
            findings = self._package(job, lease, grant, grant.package, reader)
        else:
            installed = self.worker.installed.get((job.target, job.target_version))
            if installed is None:  # offered a moment ago; gone only if discovery changed
                raise JobFailed(f"{key} is not installed on edge worker {job.owner}")
            answer = run_installed(installed.ref, reader, lease, study_uid=job.study_uid, uids=None, key=key)
            if answer.findings is None:
                raise JobFailed("the plugin returned no findings")
            findings = answer.findings
        lease.progress(0.85, "sending the findings to the archive")
        return Done({"findings": json.loads(findings.to_json())},
                    note=f"{key} on study {job.study_uid}: {len(findings.findings)} finding(s) sent")  # fmt: skip

    def _package(self, job: ClaimedJob, lease: Lease, grant: JobGrantOut, package: PackageGrantOut,
                 reader: DicomwebReader) -> Findings:  # fmt: skip
        """The leased package from this machine's cache, on the study read over DICOMweb, in the sandbox."""
        key = f"{job.target}@{job.target_version}"
        lease.progress(0.02, "preparing the package")
        try:
            env, manifest = self.worker.packages.environment(package.sha256)
        except DigestMismatch as exc:
            raise JobFailed(f"the package file of {key} from the archive was refused: {exc}") from None
        except (ArchiveRefused, httpx.HTTPError) as exc:
            raise JobFailed(f"the package file of {key} cannot be fetched: {exc}") from None
        except InvalidPackage as exc:
            raise JobFailed(f"{key} cannot be installed on edge worker {job.owner}: {exc}", retry=False) from None
        if (manifest.name, manifest.version) != (job.target, job.target_version):
            raise JobFailed(f"the package sha256 {package.sha256} is {manifest.name}@{manifest.version}, not {key}",
                            retry=False)  # fmt: skip
        try:
            with reader.open(grant.study_uid) as source:
                return run_package(env, package.limits, manifest.input_filter, source, lease, key=key)
        except (DicomwebError, httpx.HTTPError) as exc:
            raise JobFailed(f"the study cannot be read over DICOMweb: {exc}") from None

    def housekeep(self) -> bool:
        return False  # the archive sweeps expired leases and routes stable studies


class EdgeWorker(JobLoop):
    """Job threads leasing clinical plugin jobs from the archive at ``archive_url``.

    ``cache_dir`` holds the environments of the packages it has run; ``packages=None`` runs them
    wherever the sandbox can (bubblewrap installed), ``False`` never."""

    def __init__(self, archive_url: str, token: str, *, concurrency: int = 1, poll_interval: float = 1.0,
                 extra_plugins: Sequence[type[Plugin]] = (), use_entry_points: bool = True,
                 client: ArchiveClient | None = None, cache_dir: Path | None = None,
                 packages: bool | None = None) -> None:  # fmt: skip
        self.client = client or ArchiveClient(archive_url, token)
        self.extra_plugins = tuple(extra_plugins)
        self.use_entry_points = use_entry_points
        self.installed: dict[tuple[str, str], InstalledPlugin] = {}
        self.packages = PackageCache(cache_dir or default_cache_dir(), self.client)
        self.no_packages = "not asked to run packages" if packages is False else unavailable()
        self.jobs = RemoteJobQueue(self.client, offered=lambda: sorted(self.installed),
                                   packages=self.no_packages is None)  # fmt: skip
        super().__init__(self.jobs, {JOB_KIND: EdgePluginJobs(self)}, concurrency=concurrency,
                         poll_interval=poll_interval, worker_id=f"{socket.gethostname()}:{os.getpid()}")  # fmt: skip

    def _prepare(self) -> None:
        """Discover the installed plugins and have the fork server import them before any job runs."""
        found = discover_installed(self.extra_plugins, use_entry_points=self.use_entry_points)
        self.installed = {(p.info.name, p.info.version): p for p in found}
        preload(sorted({p.ref.partition(":")[0] for p in found}))
        log.info("edge worker %s for %s: %d job thread(s); plugins: %s; packages: %s", self.worker_id,
                 self.client.base_url, self.concurrency,
                 ", ".join(f"{n}@{v}" for n, v in sorted(self.installed)) or "none",
                 f"sandboxed, cached in {self.packages.root}" if self.no_packages is None
                 else f"not run ({self.no_packages})")  # fmt: skip
        self._ready.set()

    def stop(self) -> None:
        super().stop()
        self.client.close()
