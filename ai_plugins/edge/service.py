"""The archive's side of the edge job API: lease clinical plugin jobs to edge workers, extend and end
their leases, and turn an edge worker's findings into the job's SR/SEG.

The lease is the queue's own (:class:`pacs.jobs.JobQueue`), owned by ``edge:NAME:THREAD``; an edge
worker that dies stops heartbeating, the lease expires (swept here on every lease request, and by
the archive's own workers' housekeeping) and the job is retried by whichever worker asks next. An
edge worker is leased only clinical runs (``kind = "plugin"``) of the installed plugins it offers
and the archive has registered and enabled, or, when it runs packages, of admitted packages enabled
for clinical studies; never a run on a benchmark test case or copy. The grant of a package's job
names the package file's SHA-256, which the edge worker fetches from ``/api/edge/packages/{sha256}``
(:meth:`EdgeJobs.downloadable`: admitted and enabled packages only) and checks before installing it.

Results: the edge worker sends findings JSON, never DICOM. The archive validates it against the SDK
schema, builds the SR/SEG with the job's UIDs (:func:`ai_plugins.runner.invoke.archive_results`, as
for sandboxed packages and hosted plugins) and stores them through the one ingest path with the
records the archive's own workers write (:meth:`PluginJobs.finish`), then completes the job if the
lease is still this attempt's. A second post, or one after the lease moved to another attempt, is
refused before anything is built; and since the UIDs derive from the job, not the attempt, a race
between two attempts can still leave only one SR.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import BinaryIO

from sqlalchemy import and_, or_, select

from ai_plugins.benchmarks.visibility import benchmark_material
from ai_plugins.edge.protocol import (
    CompleteIn,
    FailIn,
    HeartbeatIn,
    JobGrantOut,
    LeaseIn,
    OutcomeOut,
    PackageGrantOut,
    ReleaseIn,
    SeriesOut,
)
from ai_plugins.packages.service import PackageService, PackageView
from ai_plugins.runner.handler import JobFailed, Lease, job_queue
from ai_plugins.runner.invoke import TOKEN_GRACE, archive_results
from ai_plugins.runner.models import PluginRecord
from ai_plugins.runner.plugin_jobs import PluginJobs
from ai_plugins.runner.registry import PluginRegistry, PluginSource
from ai_plugins.runner.results import ResultUids
from ai_plugins.runner.routing import JOB_KIND, study_contents
from ai_plugins.runner.tokens import issue_job_token
from ai_plugins.sdk import Findings, InvalidFindings
from pacs.access import DEFAULT_PARTITION
from pacs.accounts.keys import secret_key
from pacs.archive import Archive
from pacs.errors import CloudfilmError, Conflict, NotFound
from pacs.jobs import ClaimedJob, Job, JobStatus, LeaseLost
from pacs.storage.references import package_key

log = logging.getLogger(__name__)

NO_PACKAGE = "no admitted package enabled for clinical studies has that SHA-256"


class EdgeResultRefused(CloudfilmError):
    """An edge worker's result the archive cannot store (findings off the schema or off the study); the
    attempt is recorded as failed with this sentence."""

    def __init__(self, message: str, status: JobStatus) -> None:
        super().__init__(message)
        self.status = status


def owner_of(edge: str, worker_id: str) -> str:
    """The lease owner of an edge worker's thread: the credential's name first, so that no other edge
    worker can heartbeat or finish it."""
    return f"edge:{edge}:{worker_id}"[:128]


@dataclass
class EdgeJobs:
    """Leases and results of edge workers, for the ``/api/edge/jobs`` routes."""

    archive: Archive
    registry: PluginRegistry

    def __post_init__(self) -> None:
        self.queue = job_queue(self.archive)
        self.plugin_jobs = PluginJobs(self.archive, self.registry)
        self.packages = PackageService(self.archive)

    def lease(self, edge: str, request: LeaseIn) -> JobGrantOut | None:
        """One due clinical job of a plugin ``edge`` offers, under a lease; ``None`` when there is none."""
        self.queue.reap_expired()  # an archive may run no worker of its own: dead edge workers' jobs return here
        offered = {(p.name, p.version) for p in request.plugins}
        runnable = {(p.name, p.version): p for p in self.registry.list_all() if p.enabled and (
            (p.source is PluginSource.ENTRY_POINT and (p.name, p.version) in offered)
            or (p.source is PluginSource.PACKAGE and request.packages and p.digest))}  # fmt: skip
        if not runnable:
            return None
        where = and_(
            or_(*(and_(Job.target == name, Job.target_version == version) for name, version in runnable)),
            Job.study_uid.not_in(benchmark_material()),
            Job.partition_fk == DEFAULT_PARTITION,  # edge workers read the default partition's DICOMweb only
        )
        claimed = self.queue.claim(owner_of(edge, request.worker_id), [JOB_KIND], where=where)
        if not claimed:
            return None
        job = claimed[0]
        try:
            with self.archive.engine.connect() as conn:
                contents = study_contents(conn, job.study_uid)
        except NotFound:
            self.queue.fail(job, "the study is no longer in the archive", retry=False)
            return None
        package: PackageGrantOut | None = None
        if (chosen := runnable[(job.target, job.target_version)]).source is PluginSource.PACKAGE:
            try:
                admitted = self.packages.admitted(chosen.digest)
            except (NotFound, Conflict) as exc:
                self.queue.fail(job, f"{chosen.key} cannot run: {exc}", retry=False)
                return None
            package = PackageGrantOut(sha256=admitted.digest, size=admitted.size,
                                      limits=self.packages.limits(admitted))  # fmt: skip
        plugin = f"{job.target}@{job.target_version}"
        lifetime = timedelta(seconds=job.timeout_s) + TOKEN_GRACE
        token, grant = issue_job_token(secret_key(self.archive.settings), study_uid=job.study_uid, job_id=job.id,
                                       plugin=plugin, lifetime=lifetime)  # fmt: skip
        log.info("job %d (%s on study %s) leased to edge worker %s, attempt %d/%d", job.id, plugin, job.study_uid,
                 job.owner, job.attempt, job.max_attempts)  # fmt: skip
        return JobGrantOut(job_id=job.id, attempt=job.attempt, max_attempts=job.max_attempts, plugin=job.target,
                           plugin_version=job.target_version, study_uid=job.study_uid, timeout_s=job.timeout_s,
                           lease_s=self.queue.lease_s, token=token, token_expires_at=grant.expires,
                           series=[SeriesOut.of(s) for s in contents.series], package=package)  # fmt: skip

    def downloadable(self, digest: str) -> PackageView:
        """The admitted package whose file hashes to ``digest``, if a plugin version of it is enabled
        for clinical studies: what an edge worker may fetch. :class:`NotFound` for any other file,
        the same sentence whether or not it exists."""
        with self.archive.engine.connect() as conn:
            enabled = conn.execute(select(PluginRecord.id).where(
                PluginRecord.package_digest == digest, PluginRecord.source == PluginSource.PACKAGE.value,
                PluginRecord.enabled)).first()  # fmt: skip
        try:
            if enabled is None:
                raise NotFound(NO_PACKAGE)
            return self.packages.admitted(digest)
        except (NotFound, Conflict):
            raise NotFound(NO_PACKAGE) from None

    def package_file(self, package: PackageView) -> BinaryIO:
        """The package's file as the object store keeps it (the edge worker checks its SHA-256)."""
        try:
            return self.archive.store.open(package_key(package.digest))
        except NotFound:
            raise Conflict(f"the file of {package.key} is missing from the object store; upload it again") from None

    def _held(self, edge: str, job_id: int, request: HeartbeatIn | CompleteIn | FailIn | ReleaseIn) -> ClaimedJob:
        job = self.queue.held(job_id, owner_of(edge, request.worker_id), request.attempt)
        if job.kind != JOB_KIND:  # never leased to an edge worker; its owner cannot be one
            raise LeaseLost(f"job {job_id} is not an edge worker's")
        return job

    def heartbeat(self, edge: str, job_id: int, request: HeartbeatIn) -> None:
        """Extend the lease; :class:`LeaseLost` when it is no longer this attempt's."""
        job = self._held(edge, job_id, request)
        if not self.queue.heartbeat(job, progress=request.progress, message=request.message):
            raise LeaseLost(f"job {job_id} is not held by {job.owner}")

    def complete(self, edge: str, job_id: int, request: CompleteIn) -> OutcomeOut:
        """Validate the findings, store the job's SR/SEG and complete the job.

        The archive holds the lease itself while it writes (the edge worker's heartbeat ended with its
        attempt), so a slow SR build does not let the job go to another worker halfway through.
        """
        job = self._held(edge, job_id, request)
        with Lease(self.queue, job, threading.Event()) as lease:
            lease.progress(0.9, "the archive writes the results")
            try:
                plugin = self.registry.get(job.target, job.target_version)
                findings = Findings.from_json(json.dumps(request.findings))
                uids = ResultUids.for_job(job.dedupe_key)
                answer = archive_results(self.archive, plugin, job.study_uid, findings, uids)
            except (InvalidFindings, ValueError, KeyError, NotFound) as exc:
                reason = f"the edge worker's findings cannot be stored: {_sentence(exc)}"
                raise EdgeResultRefused(reason, self.queue.fail(job, reason, retry=False)) from None
            if lease.lost:  # another attempt owns the job now: store nothing
                raise LeaseLost(f"job {job_id} is not held by {job.owner}")
            try:
                done = self.plugin_jobs.finish(job, plugin, answer)
            except JobFailed as exc:
                raise EdgeResultRefused(str(exc), self.queue.fail(job, str(exc), retry=exc.retry)) from None
        self.queue.complete(job, done.result, also=done.also)
        log.info("job %d (%s): %s", job.id, job.kind, done.note)
        return OutcomeOut(status=JobStatus.SUCCEEDED.value, objects=[
            {k: str(v) for k, v in o.items()} for o in done.result.get("objects", [])])  # fmt: skip

    def fail(self, edge: str, job_id: int, request: FailIn) -> OutcomeOut:
        job = self._held(edge, job_id, request)
        status = self.queue.fail(job, f"edge worker {edge}: {request.error}", retry=request.retry)
        log.warning("job %d (%s@%s) attempt %d/%d failed on edge worker %s (%s): %s", job.id, job.target,
                    job.target_version, job.attempt, job.max_attempts, edge, status.value, request.error)  # fmt: skip
        return OutcomeOut(status=status.value)

    def release(self, edge: str, job_id: int, request: ReleaseIn) -> OutcomeOut:
        job = self._held(edge, job_id, request)
        self.queue.release(job, request.reason)
        return OutcomeOut(status=JobStatus.RETRYING.value)


def _sentence(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text if not isinstance(exc, KeyError) else f"no series {text} in the study"
