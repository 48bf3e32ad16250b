"""Routing: which plugin jobs a stable study gets, decided in the stable transition's transaction.

For each enabled plugin whose input filter matches a series of the study, one job is enqueued,
keyed by the plugin version and a fingerprint of the instances it would read (:func:`input_key`).
So the same instances never produce a second automatic run (one result per study, plugin version
and input), new data in a matching series runs the plugin again (a new SR; the older one is kept),
and objects that plugins stored (their SR/SEG series, recorded in ``plugin_results`` before they
are stored) never count as input: a plugin's own output does not trigger it again. Derived objects
(SR, SEG, KO, PR …) are input only to a plugin whose filter names their modality.

A re-run the user asks for always runs once. The first run of a plugin version on an input takes
that input's key whoever asked for it, so a re-run on input no automatic job has seen yet (the
study is not stable yet, or the plugin was off when it became stable) counts as the run the
next stable transition would have queued; later re-runs of the same input get keys of their own.
"""

from __future__ import annotations

import hashlib
import logging
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Engine, func, select
from sqlalchemy.engine import Connection

from ai_plugins.benchmarks.visibility import HOSTED_REFUSAL, withheld_from_vendors
from ai_plugins.runner.models import PluginResult
from ai_plugins.runner.registry import PluginRegistry, PluginSource, PluginView
from ai_plugins.sdk import InputFilter, SeriesInfo, StudySummary
from pacs.access import DEFAULT_PARTITION
from pacs.errors import Conflict, NotFound
from pacs.index.models import Instance, Series, Study
from pacs.jobs import JobQueue, JobSpec, JobView, active_job, dedupe_key, enqueue, write_transaction
from pacs.stability import StableStudy, StudyStability

log = logging.getLogger(__name__)

JOB_KIND = "plugin"
DERIVED_MODALITIES = frozenset({"SR", "SEG", "KO", "PR", "RTSTRUCT", "REG", "AU", "DOC"})


@dataclass(frozen=True)
class StudyContents:
    """A study as the router sees it: series summaries and, per series, its instances' identities."""

    study_uid: str
    series: tuple[SeriesInfo, ...]
    instances: dict[str, list[tuple[str, str]]] = field(default_factory=dict)  # series -> [(sop uid, sha256)]

    def summary(self) -> StudySummary:
        return StudySummary(study_uid=self.study_uid, series=self.series)


def study_contents(conn: Connection, study_uid: str, partition: int = DEFAULT_PARTITION) -> StudyContents:
    """Series of ``partition``'s study from the index, without those that plugins produced."""
    study_id = conn.execute(select(Study.id).where(
        Study.study_uid == study_uid, Study.partition_fk == partition)).scalar_one_or_none()
    if study_id is None:
        raise NotFound("no such study")
    produced = set(
        conn.execute(select(PluginResult.series_uid).where(PluginResult.study_uid == study_uid,
                                                           PluginResult.partition_fk == partition)
                     .distinct()).scalars()  # fmt: skip
    )
    rows = conn.execute(
        select(
            Series.series_uid,
            Series.modality,
            Series.series_number,
            Series.series_description,
            Series.body_part,
            Instance.sop_uid,
            Instance.sha256,
            Instance.sop_class_uid,
            Instance.number_of_frames,
        )  # fmt: skip
        .join(Series, Series.id == Instance.series_fk)
        .where(Instance.study_fk == study_id)
        .order_by(Series.id, Instance.id)
    ).all()
    grouped: dict[str, list[Any]] = {}
    for row in rows:
        if row.series_uid not in produced:
            grouped.setdefault(row.series_uid, []).append(row)
    series: list[SeriesInfo] = []
    instances: dict[str, list[tuple[str, str]]] = {}
    for uid, members in grouped.items():
        first = members[0]
        frames = [int(m.number_of_frames or 1) for m in members]
        series.append(
            SeriesInfo(
                series_uid=uid,
                modality=first.modality or "",
                n_instances=len(members),
                series_number=first.series_number,
                description=first.series_description or "",
                body_part=first.body_part or "",
                sop_class_uids=frozenset(m.sop_class_uid for m in members),
                n_frames=sum(frames) if any(f > 1 for f in frames) else None,
            )
        )
        instances[uid] = sorted((m.sop_uid, m.sha256) for m in members)
    return StudyContents(study_uid, tuple(series), instances)


def input_series(input_filter: InputFilter, contents: StudyContents) -> list[SeriesInfo]:
    """The series a plugin with ``input_filter`` would read (derived objects only when asked for)."""
    return accepted_series(input_filter, contents.series)


def accepted_series(input_filter: InputFilter, series: Sequence[SeriesInfo]) -> list[SeriesInfo]:
    """Those of ``series`` a plugin with ``input_filter`` reads (derived objects only when asked for)."""
    return [
        s
        for s in series
        if input_filter.accepts_series(s)
        and (s.modality.upper() not in DERIVED_MODALITIES or s.modality.upper() in input_filter.modalities)
    ]


def fingerprint(series: Sequence[SeriesInfo], contents: StudyContents) -> str:
    """Identity of a plugin's input: every instance (and its bytes' digest) of the chosen series."""
    digest = hashlib.sha256()
    for s in sorted(series, key=lambda s: s.series_uid):
        digest.update(s.series_uid.encode() + b"\x1e")
        for sop_uid, sha in contents.instances.get(s.series_uid, []):
            digest.update(f"{sop_uid}:{sha}\x1f".encode())
    return digest.hexdigest()


class Router:
    """Turns stable studies (and re-run requests) into plugin jobs."""

    def __init__(self, registry: PluginRegistry, *, max_attempts: int = 3) -> None:
        self.registry = registry
        self.max_attempts = max_attempts

    def _spec(self, plugin: PluginView, study_uid: str, generation: int, chosen: Sequence[SeriesInfo],
              fp: str, *, key: str, requested_by: str, partition: int) -> JobSpec:  # fmt: skip
        return JobSpec(
            kind=JOB_KIND,
            dedupe_key=key,
            target=plugin.name,
            target_version=plugin.version,
            study_uid=study_uid,
            generation=generation,
            payload={"fingerprint": fp, "series": sorted(s.series_uid for s in chosen), "source": plugin.source.value},
            requested_by=requested_by,
            max_attempts=self.max_attempts,
            timeout_s=plugin.timeout_s,
            partition=partition,
        )

    def on_stable(self, conn: Connection, stable: StableStudy) -> None:
        """Enqueue, in the transition's transaction, a job per plugin enabled in the study's partition
        that wants this study."""
        # Enabled is what counts, not what this process has installed: every detector routes alike.
        plugins = [p for p in self.registry.list_in(conn, partition=stable.partition) if p.enabled]
        if not plugins:
            return
        if any(p.source is PluginSource.REMOTE for p in plugins) and withheld_from_vendors(conn, stable.study_uid):
            plugins = [p for p in plugins if p.source is not PluginSource.REMOTE]  # a test case stays here
        contents = study_contents(conn, stable.study_uid, stable.partition)
        for plugin in plugins:
            chosen = input_series(plugin.input_filter, contents)
            if not chosen:
                continue
            fp = fingerprint(chosen, contents)
            spec = self._spec(plugin, stable.study_uid, stable.generation, chosen, fp,
                              key=input_key(plugin, stable.study_uid, fp, stable.partition),
                              requested_by="stable-study", partition=stable.partition)  # fmt: skip
            if enqueue(conn, spec) is not None:
                log.info("queued %s for study %s (generation %d)", plugin.key, stable.study_uid, stable.generation)

    def rerun(self, engine: Engine, queue: JobQueue, study_uid: str, name: str, *, version: str | None = None,
              requested_by: str, partition: int = DEFAULT_PARTITION) -> tuple[JobView, bool]:  # fmt: skip
        """Queue a run the caller asked for, even on input already processed; ``(job, created)``.

        A job of this plugin version for the study that is still waiting or running is returned
        instead of a second one. The study's row is locked first (PostgreSQL; SQLite's write
        transaction excludes every other writer), so a re-run and a stable transition of the same
        study, or two re-runs, never interleave.
        """
        if version:
            plugin = self.registry.get(name, version, partition=partition)
        else:
            try:
                plugin = self.registry.latest(name, partition=partition)
            except NotFound:  # none enabled: say so about the newest one (or 404 if none at all)
                plugin = self.registry.latest(name, enabled_only=False, partition=partition)
        if not plugin.enabled:
            raise Conflict(f"{plugin.key} is disabled")
        with write_transaction(engine) as conn:
            lock = select(Study.id).where(Study.study_uid == study_uid, Study.partition_fk == partition)
            if conn.dialect.name == "postgresql":
                lock = lock.with_for_update()
            if conn.execute(lock).first() is None:
                raise NotFound("no such study")
            if plugin.source is PluginSource.REMOTE and withheld_from_vendors(conn, study_uid):
                raise Conflict(f"{plugin.key} is hosted by its vendor: {HOSTED_REFUSAL}")
            active = active_job(conn, kind=JOB_KIND, target=plugin.name, target_version=plugin.version,
                                study_uid=study_uid, partition=partition)  # fmt: skip
            if active is not None:
                return active, False
            contents = study_contents(conn, study_uid, partition)
            chosen = input_series(plugin.input_filter, contents)
            if not chosen:
                raise Conflict(f"{plugin.key} accepts no series of this study")
            generation = _generation(conn, study_uid, partition)
            fp = fingerprint(chosen, contents)
            by = requested_by[:64] or "user"
            job_id = enqueue(conn, self._spec(plugin, study_uid, generation, chosen, fp,
                                              key=input_key(plugin, study_uid, fp, partition), requested_by=by,
                                              partition=partition))  # fmt: skip
            if job_id is None:  # this input has had its run: this one is extra, under a key of its own
                key = dedupe_key(JOB_KIND, plugin.name, plugin.version, study_uid, fp, "rerun", uuid.uuid4().hex)
                job_id = enqueue(conn, self._spec(plugin, study_uid, generation, chosen, fp, key=key,
                                                  requested_by=by, partition=partition))  # fmt: skip
        assert job_id is not None  # a fresh random key never collides
        log.info("re-run of %s on study %s requested by %s", plugin.key, study_uid, requested_by)
        return queue.get(job_id), True


def input_key(plugin: PluginView, study_uid: str, fp: str, partition: int = DEFAULT_PARTITION) -> str:
    """The key of a plugin version's first run on one input: at most one job ever holds it. The same
    UIDs in another partition are another input (the default partition's keys are those of before)."""
    if partition == DEFAULT_PARTITION:
        return dedupe_key(JOB_KIND, plugin.name, plugin.version, study_uid, fp)
    return dedupe_key(JOB_KIND, plugin.name, plugin.version, study_uid, fp, "partition", partition)


def _generation(conn: Connection, study_uid: str, partition: int = DEFAULT_PARTITION) -> int:
    value = conn.execute(
        select(func.coalesce(func.max(StudyStability.generation), 0))
        .join(Study, Study.id == StudyStability.study_fk)
        .where(Study.study_uid == study_uid, Study.partition_fk == partition)
    ).scalar_one()
    return int(value)

