"""Executing one claimed plugin job: run the plugin (child process or vendor endpoint), store what it
produced through the archive's ingest path, and record the outcome with the job's completion.

Whatever the plugin does (raise, hang, crash, answer garbage), the job ends as a failed attempt
with one sentence of error and the archive carries on. A lease held by a heartbeat thread tells
the other workers the job is alive; if it is lost (this worker stalled past the lease), the
attempt stops and writes nothing.

Each object a job stores is recorded in ``plugin_results`` before it is stored, in a transaction
of its own: an object enters the study already known as plugin output, so no stable transition,
whenever it comes (during the attempt, after a failed one, after the worker died), takes it for
input. A retried attempt stores the same objects (their UIDs derive from the job's key) under
the same records.
"""

from __future__ import annotations

import json
import logging
import socket
import threading
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ai_plugins.runner.child import ChildTask, run_in_child
from ai_plugins.runner.models import PluginResult
from ai_plugins.runner.registry import PluginRegistry, PluginSource, PluginView
from ai_plugins.runner.remote import RemoteError, call_remote, job_request
from ai_plugins.runner.results import ResultObject, ResultUids, build_result_objects, kind_of
from ai_plugins.runner.source import ArchiveSource
from ai_plugins.runner.tokens import issue_job_token
from ai_plugins.sdk import Findings, StudyInput
from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.index.db import utcnow
from pacs.jobs import ClaimedJob, JobQueue, LeaseLost, write_transaction
from pacs.retrieve import find_instances_by_sop

log = logging.getLogger(__name__)

TOKEN_GRACE = timedelta(minutes=2)


class JobError(Exception):
    """An attempt failed for a reason worth one sentence in the job record."""


@dataclass(frozen=True, slots=True)
class StoredResult:
    kind: str
    sop_uid: str
    series_uid: str
    sop_class_uid: str


class _Heartbeat:
    """Extends the job's lease every ``interval`` seconds and carries the job's progress along."""

    def __init__(self, queue: JobQueue, job: ClaimedJob, interval: float) -> None:
        self.queue = queue
        self.job = job
        self.interval = interval
        self.lost = False
        self._progress: tuple[float, str] | None = None
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"heartbeat-{job.id}", daemon=True)

    def progress(self, value: float, message: str) -> None:
        self._progress = (value, message)
        self._beat()

    def _beat(self) -> None:
        value, message = self._progress if self._progress else (None, None)
        try:
            if not self.queue.heartbeat(self.job, progress=value, message=message):
                self.lost = True
        except Exception:  # a database hiccup: the next beat retries well within the lease
            log.warning("heartbeat of job %d failed", self.job.id, exc_info=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval) and not self.lost:
            self._beat()

    def __enter__(self) -> _Heartbeat:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


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


class JobExecutor:
    """Runs claimed plugin jobs for one worker process."""

    def __init__(self, archive: Archive, registry: PluginRegistry, queue: JobQueue, *,
                 worker_id: str = "") -> None:  # fmt: skip
        self.archive = archive
        self.registry = registry
        self.queue = queue
        self.worker_id = worker_id or f"{socket.gethostname()}:{id(self):x}"
        self._key: bytes | None = None

    def _secret_key(self) -> bytes:
        if self._key is None:
            from pacs.accounts.keys import secret_key

            self._key = secret_key(self.archive.settings)
        return self._key

    # --- the job ---------------------------------------------------------------------------------

    def execute(self, job: ClaimedJob, stop: threading.Event | None = None) -> None:
        """Run one attempt of ``job`` and record its outcome in the queue."""
        stop = stop or threading.Event()
        try:
            plugin = self.registry.get(job.target, job.target_version)
        except NotFound:
            self._fail(job, f"plugin {job.target}@{job.target_version} is no longer registered", retry=False)
            return
        if not plugin.enabled:
            self.queue.cancel_claimed(job, f"{plugin.key} was disabled")
            return
        if not plugin.installed:
            self._fail(job, f"{plugin.key} is not installed on worker {self.worker_id}")
            return
        uids = ResultUids.for_job(job.dedupe_key)
        interval = max(0.2, self.queue.lease_s / 3)
        error = ""
        stored: list[StoredResult] = []
        findings: Findings | None = None
        with _Heartbeat(self.queue, job, interval) as beat:
            try:
                if plugin.source is PluginSource.REMOTE:
                    findings, stored = self._remote(job, plugin, uids, beat)
                else:
                    findings, stored = self._in_process(job, plugin, uids, beat, stop)
            except JobError as exc:
                error = str(exc)
            except Exception as exc:  # the archive keeps working whatever a plugin does
                log.exception("job %d (%s) failed", job.id, plugin.key)
                error = f"{type(exc).__name__}: {exc}"
        if beat.lost:
            log.warning("job %d: lease lost during the attempt; another worker owns it now", job.id)
            return
        if stop.is_set() and error:
            self._release(job)
            return
        if error:
            self._fail(job, error)
            return
        self._complete(job, plugin, stored, findings)

    def _in_process(self, job: ClaimedJob, plugin: PluginView, uids: ResultUids, beat: _Heartbeat,
                    stop: threading.Event) -> tuple[Findings, list[StoredResult]]:  # fmt: skip
        installed = self.registry.installed(plugin.name, plugin.version)
        if installed is None:
            raise JobError(f"{plugin.key} is not installed on worker {self.worker_id}")
        beat.progress(0.05, "starting the plugin")
        task = ChildTask(self.archive.settings, job.study_uid, installed.ref, uids, job.id)
        outcome = run_in_child(task, job.timeout_s, on_progress=beat.progress,
                               should_stop=lambda: stop.is_set() or beat.lost)  # fmt: skip
        if not outcome.ok:
            if outcome.detail:
                log.warning("job %d (%s) failed in the plugin:\n%s", job.id, plugin.key, outcome.detail)
            raise JobError(outcome.error)
        beat.progress(0.8, "storing results")
        findings = Findings.from_json(outcome.findings_json)
        return findings, self._store(job, plugin, outcome.objects, findings)

    def _remote(self, job: ClaimedJob, plugin: PluginView, uids: ResultUids,
                beat: _Heartbeat) -> tuple[Findings | None, list[StoredResult]]:  # fmt: skip
        lifetime = timedelta(seconds=job.timeout_s) + TOKEN_GRACE
        token, grant = issue_job_token(self._secret_key(), study_uid=job.study_uid, job_id=job.id,
                                       plugin=plugin.key, lifetime=lifetime)  # fmt: skip
        series = [str(s) for s in job.payload.get("series", [])]
        body = job_request(plugin, job_id=job.id, study_uid=job.study_uid, series_uids=series,
                           dicomweb_url=dicomweb_base(self.archive), token=token, expires_at=grant.expires)  # fmt: skip
        beat.progress(0.1, f"calling {plugin.endpoint_url}")
        try:
            answer = call_remote(plugin, body, timeout_s=job.timeout_s, idempotency_key=job.dedupe_key)
        except RemoteError as exc:
            raise JobError(str(exc)) from exc
        if answer.findings is None:
            return None, self._vendor_stored(job, answer.stored_instances)
        beat.progress(0.7, "writing results")
        study = StudyInput(job.study_uid, ArchiveSource(self.archive.engine, self.archive.store, job.study_uid))
        objects = build_result_objects(answer.findings, study, plugin.info(), uids)
        beat.progress(0.85, "storing results")
        return answer.findings, self._store(job, plugin, tuple(objects), answer.findings)

    def _vendor_stored(self, job: ClaimedJob, sop_uids: tuple[str, ...]) -> list[StoredResult]:
        found = find_instances_by_sop(self.archive.engine, AccessScope.studies(job.study_uid), list(sop_uids))
        missing = sorted(set(sop_uids) - {i.sop_uid for i in found})
        if missing:
            raise JobError(f"the vendor reported {len(missing)} stored instance(s) that are not in the study")
        return [StoredResult(kind_of(i.sop_class_uid), i.sop_uid, i.series_uid, i.sop_class_uid) for i in found]

    def _store(self, job: ClaimedJob, plugin: PluginView, objects: tuple[ResultObject, ...],
               findings: Findings) -> list[StoredResult]:  # fmt: skip
        """Record the objects as this job's output, then store them through the ingest path."""
        stored = [StoredResult(obj.kind, obj.sop_uid, obj.series_uid, obj.sop_class_uid) for obj in objects]
        with write_transaction(self.archive.engine) as conn:
            record_results(conn, job, plugin, stored, summarise(findings))
        for obj in objects:
            result = self.archive.ingest.store_bytes(obj.data, label=f"{plugin.key} {obj.kind}")
            if not result.ok:
                raise JobError(f"the archive refused the {obj.kind}: {result.reason}")
        return stored

    # --- outcomes --------------------------------------------------------------------------------

    def _complete(self, job: ClaimedJob, plugin: PluginView, stored: list[StoredResult],
                  findings: Findings | None) -> None:  # fmt: skip
        """Mark the job succeeded, recording (again: the records are idempotent) what it stored;
        objects a vendor stored itself are recorded here, the first moment their UIDs are known."""
        summary = summarise(findings)
        result = {"objects": [{"kind": s.kind, "sop_instance_uid": s.sop_uid, "series_instance_uid": s.series_uid}
                              for s in stored], **summary}  # fmt: skip
        try:
            self.queue.complete(job, result, also=lambda conn: record_results(conn, job, plugin, stored, summary))
        except LeaseLost:
            log.warning("job %d finished after its lease expired; the retry will find the same objects", job.id)
            return
        log.info("job %d: %s on study %s stored %s", job.id, plugin.key, job.study_uid,
                 ", ".join(f"{s.kind} {s.sop_uid}" for s in stored) or "nothing")  # fmt: skip

    def _fail(self, job: ClaimedJob, error: str, *, retry: bool = True) -> None:
        try:
            status = self.queue.fail(job, error, retry=retry)
        except LeaseLost:
            return
        log.warning("job %d (%s@%s) attempt %d/%d failed (%s): %s", job.id, job.target, job.target_version,
                    job.attempt, job.max_attempts, status.value, error)  # fmt: skip

    def _release(self, job: ClaimedJob) -> None:
        try:
            self.queue.release(job, "the worker stopped")
        except LeaseLost:
            return


def summarise(findings: Findings | None) -> dict[str, Any]:
    """What the job record and each result record say about the findings (empty when there are none)."""
    if findings is None:
        return {}
    return {
        "findings": len(findings.findings),
        "classifications": [
            {"code": c.code.value, "scheme": c.code.scheme, "meaning": c.code.meaning, "probability": c.probability}
            for c in findings.classifications
        ],
        "summary": findings.summary or "",
    }


def record_results(conn: Connection, job: ClaimedJob, plugin: PluginView, stored: list[StoredResult],
                   summary: dict[str, Any]) -> None:  # fmt: skip
    """Record objects as ``job``'s output; an object already recorded keeps its first record."""
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    now = utcnow()
    for s in stored:
        conn.execute(
            dialect.insert(PluginResult)
            .values(job_id=job.id, study_uid=job.study_uid, plugin_name=plugin.name, plugin_version=plugin.version,
                    generation=job.generation, kind=s.kind, series_uid=s.series_uid, sop_uid=s.sop_uid,
                    sop_class_uid=s.sop_class_uid, summary_json=json.dumps(summary, sort_keys=True), created_at=now)
            .on_conflict_do_nothing(index_elements=["sop_uid"])
        )  # fmt: skip
