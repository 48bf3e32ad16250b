"""The worker's handlers of ``benchmark-case`` and ``benchmark-score`` jobs.

A case job runs the plugin on one test case (:func:`ai_plugins.runner.invoke.invoke_plugin`), on
the study itself and inside the archive: built-in and installed plugins in a child process,
algorithm packages in the sandbox. A vendor-hosted plugin is never sent a test case
(:data:`~ai_plugins.benchmarks.visibility.HOSTED_REFUSAL`). The normalised answer is recorded with the job's completion;
the last case queues the scoring. Housekeeping closes cases whose job ended without an answer
(dead-lettered, by this worker or by the lease reaper) and evaluations whose scoring was
dead-lettered, and queues scorings a crash left unqueued, so an evaluation always ends.
"""

from __future__ import annotations

import json

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from ai_plugins.benchmarks.datasets import get_benchmark
from ai_plugins.benchmarks.evaluation import (
    CASE_KIND,
    SCORE_KIND,
    case_context,
    enqueue_scoring,
    get_evaluation,
    normalise,
    pending_count,
    score,
)
from ai_plugins.benchmarks.models import EvaluationRow, PredictionRow
from ai_plugins.benchmarks.visibility import HOSTED_REFUSAL
from ai_plugins.runner.handler import Done, JobFailed, Lease
from ai_plugins.runner.invoke import invoke_plugin
from ai_plugins.runner.registry import PluginRegistry, PluginSource
from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.index.db import utcnow
from pacs.jobs import ClaimedJob, Job, JobStatus, dedupe_key, write_transaction

ENDED = (JobStatus.FAILED.value, JobStatus.CANCELLED.value)


class BenchmarkCases:
    """One test case of an evaluation: the plugin's normalised answer, or the case closed as failed."""

    kinds: tuple[str, ...] = (CASE_KIND,)

    def __init__(self, archive: Archive, registry: PluginRegistry) -> None:
        self.archive = archive
        self.registry = registry

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        evaluation_id, prediction_id = int(job.payload["evaluation"]), int(job.payload["prediction"])
        engine = self.archive.engine
        view = get_evaluation(engine, evaluation_id)
        if view.status != "running":
            raise JobFailed("the evaluation is no longer running")
        bench = get_benchmark(engine, view.benchmark_id)
        study_uid, label = case_context(engine, int(job.payload["case"]))
        try:
            plugin = self.registry.get(view.plugin_name, view.plugin_version)
        except NotFound:
            raise JobFailed(f"plugin {view.plugin} is no longer registered") from None
        if plugin.source is PluginSource.REMOTE:  # an evaluation queued before the rule; the case is not sent
            raise JobFailed(f"{plugin.key} is hosted by its vendor: {HOSTED_REFUSAL}", retry=False)
        # the plugin chooses its series by its own input filter, on the study itself
        answer = invoke_plugin(self.archive, self.registry, plugin, lease, study_uid=study_uid, series_uids=[],
                               uids=None)  # fmt: skip
        if answer.findings is None:
            raise JobFailed("a benchmark evaluation needs findings, not stored instances")
        output = normalise(bench.task, bench.schema, answer.findings, label=label)

        def record(conn: Connection) -> None:
            conn.execute(update(PredictionRow)
                         .where(PredictionRow.id == prediction_id, PredictionRow.status == "pending")
                         .values(status="ok", output_json=json.dumps(output, sort_keys=True), error="",
                                 updated_at=utcnow()))  # fmt: skip
            enqueue_scoring(conn, evaluation_id)

        return Done({"evaluation": evaluation_id}, also=record)

    def housekeep(self) -> bool:
        """Close cases whose job ended without an answer; queue missing scorings; end evaluations whose
        scoring was dead-lettered."""
        engine = self.archive.engine
        with engine.connect() as conn:
            stuck = conn.execute(select(PredictionRow.id, PredictionRow.evaluation_fk, Job.error)
                                 .join(Job, Job.id == PredictionRow.job_id)
                                 .where(PredictionRow.status == "pending", Job.status.in_(ENDED))).all()  # fmt: skip
        for prediction_id, evaluation_id, error in stuck:
            with write_transaction(engine) as conn:
                conn.execute(update(PredictionRow)
                             .where(PredictionRow.id == prediction_id, PredictionRow.status == "pending")
                             .values(status="failed", error=(error or "the case job ended without an answer")[:2000],
                                     updated_at=utcnow()))  # fmt: skip
                enqueue_scoring(conn, evaluation_id)
        with engine.connect() as conn:
            running = conn.execute(select(EvaluationRow.id).where(EvaluationRow.status == "running")).scalars().all()
            scorings = {e: conn.execute(select(Job.status, Job.error)
                                        .where(Job.dedupe_key == dedupe_key(SCORE_KIND, e))).first()
                        for e in running if not pending_count(conn, e)}  # fmt: skip
        for evaluation_id, scoring in scorings.items():
            if scoring is not None and scoring.status not in ENDED:
                continue  # being scored
            with write_transaction(engine) as conn:
                if scoring is None:  # a crash between the last case and its scoring job
                    enqueue_scoring(conn, evaluation_id)
                else:
                    conn.execute(update(EvaluationRow)
                                 .where(EvaluationRow.id == evaluation_id, EvaluationRow.status == "running")
                                 .values(status="failed", error=f"scoring failed: {scoring.error}"[:2000],
                                         finished_at=utcnow()))  # fmt: skip
        return bool(stuck) or None in scorings.values()


class BenchmarkScoring:
    """The metrics of an evaluation whose cases all ended (:func:`ai_plugins.benchmarks.evaluation.score`)."""

    kinds: tuple[str, ...] = (SCORE_KIND,)

    def __init__(self, archive: Archive) -> None:
        self.archive = archive

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        evaluation_id = int(job.payload["evaluation"])
        try:
            view = score(self.archive.engine, evaluation_id, n_boot=self.archive.settings.benchmark_bootstrap)
        except NotFound:
            return Done({"evaluation": evaluation_id, "status": "gone"})
        return Done({"evaluation": evaluation_id, "status": view.status},
                    note=f"evaluation {evaluation_id} of {view.plugin} on {view.benchmark_name}: {view.status} "
                         f"{view.main_metric} = {view.main_value}")  # fmt: skip

    def housekeep(self) -> bool:
        return False
