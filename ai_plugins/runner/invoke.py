"""The one place a plugin runs: installed plugins in a child process, admitted algorithm packages in
the sandbox (:mod:`ai_plugins.sandbox`), vendor-hosted ones by a call to their endpoint with a job
token scoped to the one study they are given.

Every handler that needs a plugin's answer calls :func:`invoke_plugin`: a clinical run on the study
itself, a benchmark case on the study (never by a hosted plugin: a test case does not leave). An
edge worker (:mod:`ai_plugins.edge`) runs its installed plugins with :func:`run_installed` and
admitted packages with :func:`run_package`, reading the study over DICOMweb; whoever ran the
plugin, findings that come from outside a child of the archive's own workers are turned into SR/SEG
by the archive itself (:func:`archive_results`).
Whatever the plugin does (raise, hang, crash, answer garbage) ends as :class:`JobFailed` with one
sentence; the child is killed at the job's timeout or as soon as the lease says stop.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

from ai_plugins.benchmarks.visibility import HOSTED_REFUSAL, withheld_from_vendors
from ai_plugins.packages.service import PackageService
from ai_plugins.runner.child import ChildTask, run_in_child
from ai_plugins.runner.handler import JobFailed, Lease
from ai_plugins.runner.registry import PluginRegistry, PluginSource, PluginView
from ai_plugins.runner.remote import RemoteError, call_remote, job_request
from ai_plugins.runner.results import ResultObject, ResultUids, build_result_objects
from ai_plugins.runner.source import ArchiveReader, ArchiveSource, StudyReader
from ai_plugins.runner.tokens import issue_job_token
from ai_plugins.sandbox import Limits, PackageEnv, SandboxUnavailable, run_sandboxed
from ai_plugins.sandbox.case import NothingToRun, case_directory
from ai_plugins.sandbox.run import STOPPED
from ai_plugins.sdk import Findings, InputFilter, InstanceSource, InvalidFindings, StudyInput
from pacs.access import DEFAULT_PARTITION
from pacs.accounts.keys import secret_key
from pacs.archive import Archive
from pacs.errors import Conflict, NotFound

log = logging.getLogger(__name__)

TOKEN_GRACE = timedelta(minutes=2)


@dataclass(frozen=True, slots=True)
class PluginAnswer:
    """What one run produced: the findings and, when asked for, the SR/SEG built from them; or the
    SOP Instance UIDs of objects a hosted plugin stored itself (then ``findings`` is ``None``)."""

    findings: Findings | None
    objects: tuple[ResultObject, ...] = ()
    stored_instances: tuple[str, ...] = ()


def dicomweb_base(archive: Archive) -> str:
    """The archive's DICOMweb root as vendors reach it (``PUBLIC_URL`` when set)."""
    settings = archive.settings
    if settings.public_url:
        return settings.public_url.rstrip("/") + "/dicomweb"
    host = settings.http_host
    if host in ("0.0.0.0", "::", ""):
        host = socket.getfqdn()
    if ":" in host:
        host = f"[{host}]"
    return f"http://{host}:{settings.http_port}/dicomweb"


def invoke_plugin(archive: Archive, registry: PluginRegistry, plugin: PluginView, lease: Lease, *, study_uid: str,
                  series_uids: Sequence[str], uids: ResultUids | None) -> PluginAnswer:  # fmt: skip
    """Run ``plugin`` on ``study_uid`` for the leased job; with ``uids``, build its SR/SEG too.

    A hosted plugin is sent ``series_uids`` and a token that reads that study only; an installed
    one reads the study through the archive and chooses its series by its own input filter.
    """
    job = lease.job
    if plugin.source is PluginSource.REMOTE:
        return _remote(archive, plugin, lease, study_uid, series_uids, uids)
    if plugin.source is PluginSource.PACKAGE:
        return _sandboxed(archive, plugin, lease, study_uid, uids)
    installed = registry.installed(plugin.name, plugin.version)
    if installed is None:
        raise JobFailed(f"{plugin.key} is not installed on worker {job.owner}")
    return run_installed(installed.ref, ArchiveReader(archive.settings, job.partition), lease, study_uid=study_uid,
                         uids=uids, key=plugin.key)  # fmt: skip


def run_installed(ref: str, reader: StudyReader, lease: Lease, *, study_uid: str, uids: ResultUids | None,
                  key: str) -> PluginAnswer:  # fmt: skip
    """An installed plugin (``module:qualname``) in a child process that reads the study with ``reader``
    (the archive on its workers, DICOMweb on an edge worker); with ``uids`` the child builds the SR/SEG."""
    job = lease.job
    lease.progress(0.05, "starting the plugin")
    task = ChildTask(reader, study_uid, ref, uids, job.id)
    outcome = run_in_child(task, job.timeout_s, on_progress=lease.progress, should_stop=lease.stopping)
    if not outcome.ok:
        if outcome.detail:
            log.warning("job %d (%s) failed in the plugin:\n%s", job.id, key, outcome.detail)
        raise JobFailed(outcome.error)
    return PluginAnswer(Findings.from_json(outcome.findings_json), outcome.objects)


def archive_results(archive: Archive, plugin: PluginView, study_uid: str, findings: Findings,
                    uids: ResultUids, partition: int = DEFAULT_PARTITION) -> PluginAnswer:  # fmt: skip
    """``findings`` with the SR/SEG the archive writes of them (a package's, a hosted plugin's or an edge
    worker's findings: the archive alone writes their DICOM objects) on ``partition``'s study."""
    study = StudyInput(study_uid, ArchiveSource(archive.engine, archive.store, study_uid, partition))
    return PluginAnswer(findings, tuple(build_result_objects(findings, study, plugin.info(), uids)))


def _sandboxed(archive: Archive, plugin: PluginView, lease: Lease, study_uid: str,
               uids: ResultUids | None) -> PluginAnswer:  # fmt: skip
    """An admitted package on the study's accepted series, in the sandbox; the archive validates its
    findings and writes the SR/SEG."""
    try:
        env, limits = PackageService(archive).runnable(plugin.digest)
    except (NotFound, Conflict) as exc:
        raise JobFailed(f"{plugin.key} cannot run: {exc}", retry=False) from None
    source = ArchiveSource(archive.engine, archive.store, study_uid, lease.job.partition)
    findings = run_package(env, limits, plugin.input_filter, source, lease, key=plugin.key)
    if uids is None:
        return PluginAnswer(findings)
    lease.progress(0.7, "writing results")
    return archive_results(archive, plugin, study_uid, findings, uids, lease.job.partition)


def run_package(env: PackageEnv, limits: Limits, input_filter: InputFilter, source: InstanceSource, lease: Lease, *,
                key: str) -> Findings:  # fmt: skip
    """An admitted package's environment on the series of ``source``'s study its input filter accepts,
    in the sandbox, for the leased job (the archive's workers read the study from the archive, an
    edge worker over DICOMweb); its findings, validated against the SDK schema."""
    job = lease.job
    limits = limits.model_copy(update={"wall_s": min(limits.wall_s, job.timeout_s)})
    lease.progress(0.05, "writing the case for the sandbox")
    try:
        with case_directory(source, input_filter) as case:
            lease.progress(0.1, "running the package in the sandbox")
            outcome = run_sandboxed(env, case, limits, should_stop=lease.stopping)
    except NothingToRun as exc:
        raise JobFailed(f"{key}: {exc}", retry=False) from None
    except SandboxUnavailable as exc:
        raise JobFailed(str(exc)) from None  # another worker's machine may run it
    if not outcome.ok:
        log.warning("job %d (%s) failed in the sandbox after %.1f s: %s\n%s", job.id, key, outcome.wall_s,
                    outcome.error, outcome.log_tail[-4000:])  # fmt: skip
        # what a package does with the same case it does again: only a stopped worker's attempt is retried
        raise JobFailed(outcome.error, retry=outcome.error == STOPPED)
    try:
        return Findings.from_json(outcome.findings_json)
    except InvalidFindings as exc:
        raise JobFailed(f"the package's findings do not match the SDK schema: {exc}", retry=False) from None


def _remote(archive: Archive, plugin: PluginView, lease: Lease, study_uid: str, series_uids: Sequence[str],
            uids: ResultUids | None) -> PluginAnswer:  # fmt: skip
    job = lease.job
    if job.partition != DEFAULT_PARTITION:  # its token and DICOMweb base are the default partition's
        raise JobFailed(f"{plugin.key} is hosted by its vendor, which serves the default partition only",
                        retry=False)  # fmt: skip
    with archive.engine.connect() as conn:  # the last gate before anything is sent: every path passes here
        withheld = withheld_from_vendors(conn, study_uid)
    if withheld:
        raise JobFailed(f"{plugin.key} is hosted by its vendor: {HOSTED_REFUSAL}", retry=False)
    lifetime = timedelta(seconds=job.timeout_s) + TOKEN_GRACE
    token, grant = issue_job_token(secret_key(archive.settings), study_uid=study_uid, job_id=job.id,
                                   plugin=plugin.key, lifetime=lifetime)  # fmt: skip
    body = job_request(plugin, job_id=job.id, study_uid=study_uid, series_uids=series_uids,
                       dicomweb_url=dicomweb_base(archive), token=token, expires_at=grant.expires)  # fmt: skip
    lease.progress(0.1, f"calling {plugin.endpoint_url}")
    try:
        answer = call_remote(plugin, body, timeout_s=job.timeout_s, idempotency_key=job.dedupe_key)
    except RemoteError as exc:
        raise JobFailed(str(exc)) from exc
    if answer.findings is None or uids is None:
        return PluginAnswer(answer.findings, stored_instances=answer.stored_instances)
    lease.progress(0.7, "writing results")
    return archive_results(archive, plugin, study_uid, answer.findings, uids)
