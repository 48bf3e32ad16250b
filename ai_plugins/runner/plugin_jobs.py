"""Clinical plugin jobs (``kind = "plugin"``): run the plugin on a stable study, store what it
produced through the archive's ingest path, and record the objects with the job's completion.

Housekeeping is the stable-study detector: it routes each stable study to plugin jobs in the
transition's transaction (:mod:`ai_plugins.runner.routing`).

Each object a job stores is recorded in ``plugin_results`` before it is stored, in a transaction
of its own: an object enters the study already known as plugin output, so no stable transition,
whenever it comes (during the attempt, after a failed one, after the worker died), takes it for
input. A retried attempt stores the same objects (their UIDs derive from the job's key) under
the same records. The job's completion also records an ``ai.result`` event for the change feed
(:mod:`pacs.events`), so the event exists exactly when the job succeeded.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, Engine, and_, not_, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from ai_plugins.benchmarks.visibility import benchmark_material
from ai_plugins.runner.handler import Done, JobCancelled, JobFailed, Lease
from ai_plugins.runner.invoke import PluginAnswer, invoke_plugin
from ai_plugins.runner.models import PluginResult
from ai_plugins.runner.registry import PluginRegistry, PluginView
from ai_plugins.runner.results import ResultUids, kind_of
from ai_plugins.runner.routing import JOB_KIND, Router
from ai_plugins.sdk import Findings
from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.archive import Archive
from pacs.errors import NotFound
from pacs.events import EVENT_AI_RESULT, record_event
from pacs.index.db import utcnow
from pacs.jobs import ClaimedJob, Job, write_transaction
from pacs.retrieve import find_instances_by_sop
from pacs.stability import StabilityDetector


@dataclass(frozen=True, slots=True)
class StoredResult:
    kind: str
    sop_uid: str
    series_uid: str
    sop_class_uid: str


class PluginJobs:
    """The handler of clinical plugin jobs; its housekeeping turns stable studies into them."""

    kinds: tuple[str, ...] = (JOB_KIND,)

    def __init__(self, archive: Archive, registry: PluginRegistry) -> None:
        self.archive = archive
        self.registry = registry
        self.router = Router(registry, max_attempts=archive.settings.job_max_attempts)
        self.detector = StabilityDetector(archive.engine, archive.settings.stable_age, self.router.on_stable)

    def housekeep(self) -> bool:
        return bool(self.detector.poll())

    def execute(self, job: ClaimedJob, lease: Lease) -> Done:
        try:
            plugin = self.registry.get(job.target, job.target_version, partition=job.partition)
        except NotFound:
            raise JobFailed(f"plugin {job.target}@{job.target_version} is no longer registered", retry=False) from None
        if not plugin.enabled:
            raise JobCancelled(f"{plugin.key} was disabled")
        answer = invoke_plugin(self.archive, self.registry, plugin, lease, study_uid=job.study_uid,
                               series_uids=[str(s) for s in job.payload.get("series", [])],
                               uids=ResultUids.for_job(job.dedupe_key))  # fmt: skip
        lease.progress(0.85, "storing results")
        return self.finish(job, plugin, answer)

    def finish(self, job: ClaimedJob, plugin: PluginView, answer: PluginAnswer) -> Done:
        """Store what ``answer`` holds (or check what a hosted plugin stored itself) as ``job``'s output;
        the :class:`Done` that completes the job. An edge worker's findings end here too."""
        stored = self._vendor_stored(job, answer.stored_instances) if answer.findings is None else \
            self._store(job, plugin, answer)
        summary = summarise(answer.findings)
        result = {"objects": [{"kind": s.kind, "sop_instance_uid": s.sop_uid, "series_instance_uid": s.series_uid}
                              for s in stored], **summary}  # fmt: skip
        # Recorded again (idempotent) with the completion: objects a vendor stored itself are first known here.
        return Done(result, also=lambda conn: _completed(conn, job, plugin, stored, summary),
                    note=f"{plugin.key} on study {job.study_uid} stored "
                         + (", ".join(f"{s.kind} {s.sop_uid}" for s in stored) or "nothing"))  # fmt: skip

    def _vendor_stored(self, job: ClaimedJob, sop_uids: tuple[str, ...]) -> list[StoredResult]:
        found = find_instances_by_sop(self.archive.engine, AccessScope.studies(job.study_uid, partition=job.partition),
                                      list(sop_uids))  # fmt: skip
        missing = sorted(set(sop_uids) - {i.sop_uid for i in found})
        if missing:
            raise JobFailed(f"the vendor reported {len(missing)} stored instance(s) that are not in the study")
        return [StoredResult(kind_of(i.sop_class_uid), i.sop_uid, i.series_uid, i.sop_class_uid) for i in found]

    def _store(self, job: ClaimedJob, plugin: PluginView, answer: PluginAnswer) -> list[StoredResult]:
        """Record the objects as this job's output, then store them through the ingest path."""
        stored = [StoredResult(obj.kind, obj.sop_uid, obj.series_uid, obj.sop_class_uid) for obj in answer.objects]
        with write_transaction(self.archive.engine) as conn:
            record_results(conn, job, plugin, stored, summarise(answer.findings))
        partition = self.archive.partitions.by_id(job.partition)
        if partition is None:
            raise JobFailed(f"partition {job.partition} is no longer configured", retry=False)
        for obj in answer.objects:  # into the study's own partition
            result = self.archive.ingest.store_bytes(obj.data, label=f"{plugin.key} {obj.kind}", partition=partition)
            if not result.ok:
                raise JobFailed(f"the archive refused the {obj.kind}: {result.reason}")
        return stored


def edge_only(plugins: Collection[str]) -> ColumnElement[bool] | None:
    """The claim filter of the archive's own workers: clinical runs of ``plugins`` (``EDGE_PLUGINS``)
    are left to edge workers, whatever is installed here; but not those on benchmark material, which no
    edge worker is given (:func:`~ai_plugins.benchmarks.visibility.benchmark_material`), nor those of a
    partition other than the default one (an edge worker reads the default partition's DICOMweb)."""
    if not plugins:
        return None
    return not_(and_(Job.kind == JOB_KIND, Job.target.in_(sorted(plugins)),
                     Job.study_uid.not_in(benchmark_material()), Job.partition_fk == DEFAULT_PARTITION))  # fmt: skip


def summarise(findings: Findings | None) -> dict[str, Any]:
    """What the job record and each result record say about the findings (empty when there are none).

    ``findings`` counts positive calls only: candidates shown below the plugin's operating point do not
    flag a study on the worklist."""
    if findings is None:
        return {}
    return {
        "findings": sum(not f.below_operating_point for f in findings.findings),
        "below_operating_point": sum(f.below_operating_point for f in findings.findings),
        "classifications": [
            {"code": c.code.value, "scheme": c.code.scheme, "meaning": c.code.meaning, "probability": c.probability}
            for c in findings.classifications
        ],
        "summary": findings.summary or "",
    }


def record_results(conn: Connection, job: ClaimedJob, plugin: PluginView, stored: list[StoredResult],
                   summary: dict[str, Any]) -> None:  # fmt: skip
    """Record objects as ``job``'s output; an object already recorded keeps its first record."""
    _insert_results(conn, job.id, job.study_uid, plugin.name, plugin.version, job.generation, stored, summary,
                    job.partition)  # fmt: skip


def _completed(conn: Connection, job: ClaimedJob, plugin: PluginView, stored: list[StoredResult],
               summary: dict[str, Any]) -> None:  # fmt: skip
    """What a successful job writes with its completion: its results, and their change feed event."""
    record_results(conn, job, plugin, stored, summary)
    head = stored[0] if stored else None
    record_event(conn, EVENT_AI_RESULT, job.study_uid, head.series_uid if head else "", head.sop_uid if head else "",
                 detail={"Plugin": plugin.name, "PluginVersion": plugin.version, "JobId": job.id,
                         "Objects": [{"Kind": s.kind, "SeriesInstanceUid": s.series_uid, "SopInstanceUid": s.sop_uid}
                                     for s in stored], **({"Summary": summary} if summary else {})},
                 partition=job.partition)  # fmt: skip


def record_vendor_upload(engine: Engine, job_id: int, obj: StoredResult) -> None:
    """Record an object a hosted plugin is about to STOW with its job token as that job's output.

    Recorded before the object is stored, as the archive's own results are: the study becomes
    unstable when it arrives, and the transition that follows must not take it for new input.
    Jobs of other kinds (a benchmark case writes into its de-identified copy) record nothing.
    """
    with write_transaction(engine) as conn:
        job = conn.execute(
            select(Job.kind, Job.study_uid, Job.target, Job.target_version, Job.generation, Job.partition_fk)
            .where(Job.id == job_id)
        ).first()
        if job is None or job.kind != JOB_KIND:
            return
        _insert_results(conn, job_id, job.study_uid, job.target, job.target_version, job.generation, [obj], {},
                        job.partition_fk)  # fmt: skip


def _insert_results(conn: Connection, job_id: int, study_uid: str, name: str, version: str, generation: int,
                    stored: list[StoredResult], summary: dict[str, Any], partition: int) -> None:  # fmt: skip
    dialect = postgresql if conn.dialect.name == "postgresql" else sqlite
    now = utcnow()
    for s in stored:
        conn.execute(
            dialect.insert(PluginResult)
            .values(job_id=job_id, partition_fk=partition, study_uid=study_uid, plugin_name=name,
                    plugin_version=version, generation=generation, kind=s.kind, series_uid=s.series_uid,
                    sop_uid=s.sop_uid, sop_class_uid=s.sop_class_uid, summary_json=json.dumps(summary, sort_keys=True),
                    created_at=now)
            .on_conflict_do_nothing(index_elements=["sop_uid"])
        )  # fmt: skip
