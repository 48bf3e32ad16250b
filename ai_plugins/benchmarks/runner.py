"""The benchmark worker: runs ``benchmark-case`` and ``benchmark-score`` jobs from the job queue.

A case job runs the plugin on one test case: in-process plugins in a child process on the study
itself, vendor-hosted plugins over HTTP on a de-identified copy of it read with a job token scoped
to that copy. The normalised answer is recorded with the job's completion; the last case queues the
scoring. A housekeeping pass returns jobs of dead workers to the queue and closes cases whose job
was dead-lettered, so an evaluation always ends. Runs inside ``cloudfilm serve`` and, for the
duration of a command, inside ``cloudfilm benchmark evaluate``.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from ai_plugins.benchmarks.copies import deidentifier, ensure_copy
from ai_plugins.benchmarks.datasets import get_benchmark
from ai_plugins.benchmarks.evaluation import (
    KINDS,
    SCORE_KIND,
    case_context,
    enqueue_scoring,
    get_evaluation,
    normalise,
    pending_count,
    score,
)
from ai_plugins.benchmarks.models import EvaluationRow, PredictionRow
from ai_plugins.runner.child import ChildTask, preload, run_in_child
from ai_plugins.runner.execute import TOKEN_GRACE, dicomweb_base
from ai_plugins.runner.registry import PluginRegistry, PluginSource, PluginView
from ai_plugins.runner.remote import RemoteError, call_remote, job_request
from ai_plugins.runner.routing import input_series, study_contents
from ai_plugins.runner.tokens import issue_job_token
from ai_plugins.runner.worker import job_queue
from ai_plugins.sdk import Findings, InvalidFindings, Plugin
from pacs.accounts.keys import secret_key
from pacs.archive import Archive
from pacs.errors import CloudfilmError, NotFound
from pacs.index.db import utcnow
from pacs.jobs import ClaimedJob, Job, JobStatus, LeaseLost, dedupe_key, write_transaction

log = logging.getLogger(__name__)

class CaseError(Exception):
    """A case attempt failed for a reason worth one sentence."""


class _Lease:
    """Extends a claimed job's lease while it runs."""

    def __init__(self, worker: BenchmarkWorker, job: ClaimedJob) -> None:
        self.worker, self.job = worker, job
        self.lost = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=f"lease-{job.id}", daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(max(0.2, self.worker.queue.lease_s / 3)):
            try:
                if not self.worker.queue.heartbeat(self.job):
                    self.lost = True
                    return
            except Exception:  # a database hiccup: the next beat retries within the lease
                log.warning("heartbeat of job %d failed", self.job.id, exc_info=True)

    def __enter__(self) -> _Lease:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class BenchmarkWorker:
    """``concurrency`` threads claiming benchmark jobs, plus housekeeping; start/stop as a service."""

    name = "benchmark-workers"

    def __init__(self, archive: Archive, *, concurrency: int | None = None, extra_plugins: Sequence[type[Plugin]] = (),
                 use_entry_points: bool = True, n_boot: int | None = None) -> None:  # fmt: skip
        settings = archive.settings
        self.archive = archive
        self.concurrency = max(1, settings.worker_concurrency if concurrency is None else concurrency)
        self.registry = PluginRegistry(archive.engine, extra=extra_plugins, default_timeout_s=settings.job_timeout,
                                       use_entry_points=use_entry_points)  # fmt: skip
        self.queue = job_queue(archive)
        self.n_boot = n_boot or settings.benchmark_bootstrap
        self.poll_interval = min(settings.job_poll_interval, 1.0)
        self.worker_id = f"{socket.gethostname()}:{os.getpid()}:bench"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    # --- service -----------------------------------------------------------------------------------

    def start(self) -> None:
        plugins = self.registry.sync()
        preload(sorted({p.entry_point.partition(":")[0] for p in plugins if p.entry_point and p.installed}))
        self._stop.clear()
        self._threads = [threading.Thread(target=self._housekeeping, name="bench-housekeeping", daemon=True)]
        self._threads += [threading.Thread(target=self._work, args=(f"{self.worker_id}:{i}",), name=f"bench-{i}",
                                           daemon=True) for i in range(self.concurrency)]  # fmt: skip
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=30)
        self._threads = []

    def _housekeeping(self) -> None:
        while not self._stop.is_set():
            try:
                self.housekeep_once()
            except Exception:
                log.exception("benchmark housekeeping failed; retrying")
            self._stop.wait(self.poll_interval)

    def housekeep_once(self) -> None:
        """Requeue jobs of dead workers; close cases whose job ended without an answer; queue scorings."""
        self.queue.reap_expired()
        with self.archive.engine.connect() as conn:
            stuck = conn.execute(
                select(PredictionRow.id, PredictionRow.evaluation_fk, Job.error, Job.status)
                .join(Job, Job.id == PredictionRow.job_id)
                .where(PredictionRow.status == "pending",
                       Job.status.in_([JobStatus.FAILED.value, JobStatus.CANCELLED.value]))).all()  # fmt: skip
        for prediction_id, evaluation_id, error, _status in stuck:
            self._record_failure(prediction_id, evaluation_id, error or "the case job ended without an answer")
        with self.archive.engine.connect() as conn:  # a crash between the last case and its scoring job
            ready = [e for e in conn.execute(select(EvaluationRow.id).where(EvaluationRow.status == "running"))
                     .scalars() if not pending_count(conn, e) and conn.execute(select(Job.id).where(
                         Job.dedupe_key == dedupe_key(SCORE_KIND, e))).first() is None]  # fmt: skip
        for evaluation_id in ready:
            with write_transaction(self.archive.engine) as conn:
                enqueue_scoring(conn, evaluation_id)

    def _work(self, owner: str) -> None:
        while not self._stop.is_set():
            try:
                claimed = self.queue.claim(owner, list(KINDS))
            except Exception:
                log.exception("claiming a benchmark job failed; retrying")
                claimed = []
            if not claimed:
                self._stop.wait(self.poll_interval)
                continue
            for job in claimed:
                self.execute(job)

    # --- jobs --------------------------------------------------------------------------------------

    def execute(self, job: ClaimedJob) -> None:
        """One attempt of a benchmark job, its outcome recorded in the queue."""
        if job.kind == SCORE_KIND:
            self._score(job)
            return
        prediction_id = int(job.payload["prediction"])
        evaluation_id = int(job.payload["evaluation"])
        error = ""
        output: dict[str, Any] = {}
        with _Lease(self, job) as lease:
            try:
                output = self._case(job, evaluation_id, int(job.payload["case"]), lease)
            except (CaseError, CloudfilmError) as exc:
                error = str(exc)
            except Exception as exc:  # whatever a plugin or its answer does, the evaluation goes on
                log.exception("benchmark job %d failed", job.id)
                error = f"{type(exc).__name__}: {exc}"
        if lease.lost:
            return
        if error:
            try:
                status = self.queue.fail(job, error)
            except LeaseLost:
                return
            if status is JobStatus.FAILED:
                self._record_failure(prediction_id, evaluation_id, error)
            return

        def record(conn: Connection) -> None:
            conn.execute(update(PredictionRow)
                         .where(PredictionRow.id == prediction_id, PredictionRow.status == "pending")
                         .values(status="ok", output_json=json.dumps(output, sort_keys=True), error="",
                                 updated_at=utcnow()))  # fmt: skip
            enqueue_scoring(conn, evaluation_id)

        try:
            self.queue.complete(job, {"evaluation": evaluation_id}, also=record)
        except LeaseLost:
            log.warning("benchmark job %d finished after its lease expired", job.id)

    def _record_failure(self, prediction_id: int, evaluation_id: int, error: str) -> None:
        with write_transaction(self.archive.engine) as conn:
            conn.execute(update(PredictionRow)
                         .where(PredictionRow.id == prediction_id, PredictionRow.status == "pending")
                         .values(status="failed", error=error[:2000], updated_at=utcnow()))  # fmt: skip
            enqueue_scoring(conn, evaluation_id)

    def _score(self, job: ClaimedJob) -> None:
        evaluation_id = int(job.payload["evaluation"])
        try:
            view = score(self.archive.engine, evaluation_id, n_boot=self.n_boot)
        except NotFound:
            self.queue.complete(job, {"evaluation": evaluation_id, "status": "gone"})
            return
        self.queue.complete(job, {"evaluation": evaluation_id, "status": view.status})
        log.info("evaluation %d of %s on %s: %s %s = %s", evaluation_id, view.plugin, view.benchmark_name,
                 view.status, view.main_metric, view.main_value)  # fmt: skip

    def _case(self, job: ClaimedJob, evaluation_id: int, case_id: int, lease: _Lease) -> dict[str, Any]:
        view = get_evaluation(self.archive.engine, evaluation_id)
        if view.status != "running":
            raise CaseError("the evaluation is no longer running")
        bench = get_benchmark(self.archive.engine, view.benchmark_id)
        study_uid, label = case_context(self.archive.engine, case_id)
        try:
            plugin = self.registry.get(view.plugin_name, view.plugin_version)
        except NotFound:
            raise CaseError(f"plugin {view.plugin} is no longer registered") from None
        if plugin.source is PluginSource.REMOTE:
            findings, alias = self._remote(job, plugin, bench.id, study_uid)
        else:
            installed = self.registry.installed(plugin.name, plugin.version)
            if installed is None:
                raise CaseError(f"{plugin.key} is not installed on worker {self.worker_id}")
            task = ChildTask(self.archive.settings, study_uid, installed.ref, None, job.id)
            outcome = run_in_child(task, job.timeout_s, should_stop=lambda: self._stop.is_set() or lease.lost)
            if not outcome.ok:
                if outcome.detail:
                    log.warning("benchmark job %d (%s) failed in the plugin:\n%s", job.id, plugin.key, outcome.detail)
                raise CaseError(outcome.error)
            findings, alias = Findings.from_json(outcome.findings_json), {}
        return normalise(bench.task, bench.schema, findings, label=label, series_alias=alias)

    def _remote(self, job: ClaimedJob, plugin: PluginView, benchmark_id: int,
                study_uid: str) -> tuple[Findings, dict[str, str]]:  # fmt: skip
        """The vendor's answer on the de-identified copy, and the copy's series UIDs → the originals'."""
        copy = ensure_copy(self.archive, benchmark_id, "eval", study_uid)
        deid = deidentifier(self.archive, benchmark_id, "eval")
        with self.archive.engine.connect() as conn:
            original = study_contents(conn, study_uid)
            contents = study_contents(conn, copy.copy_study_uid)
        alias = {deid.uid(s.series_uid): s.series_uid for s in original.series}
        chosen = input_series(plugin.input_filter, contents)
        if not chosen:
            raise CaseError(f"{plugin.key} accepts no series of this case")
        token, grant = issue_job_token(secret_key(self.archive.settings), study_uid=copy.copy_study_uid,
                                       job_id=job.id, plugin=plugin.key,
                                       lifetime=timedelta(seconds=job.timeout_s) + TOKEN_GRACE)  # fmt: skip
        body = job_request(plugin, job_id=job.id, study_uid=copy.copy_study_uid,
                           series_uids=[s.series_uid for s in chosen], dicomweb_url=dicomweb_base(self.archive),
                           token=token, expires_at=grant.expires)  # fmt: skip
        try:
            answer = call_remote(plugin, body, timeout_s=job.timeout_s, idempotency_key=job.dedupe_key)
        except (RemoteError, InvalidFindings) as exc:
            raise CaseError(str(exc)) from exc
        if answer.findings is None:
            raise CaseError("a benchmark evaluation needs findings in the vendor's answer, not stored instances")
        return answer.findings, alias
