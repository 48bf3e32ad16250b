"""The plugin and job services the HTTP API and the CLI call (one function per request)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import and_, select

from ai_plugins.benchmarks.gate import check_gate
from ai_plugins.runner.handler import job_queue
from ai_plugins.runner.models import PluginResult
from ai_plugins.runner.registry import PluginRegistry, PluginSource, PluginView, RemoteManifest
from ai_plugins.runner.routing import JOB_KIND, Router
from ai_plugins.sdk import Plugin
from pacs.access import DEFAULT_PARTITION, AccessScope
from pacs.archive import Archive
from pacs.errors import Conflict, NotFound
from pacs.index.models import Instance
from pacs.jobs import JobQueue, JobStatus, JobView
from pacs.query import Level, QueryRequest, run_query

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class ResultView:
    """One object a plugin job stored."""

    job_id: int
    plugin_name: str
    plugin_version: str
    generation: int
    kind: str
    series_uid: str
    sop_uid: str


class PluginService:
    """Plugins, their state, their jobs and re-runs, for one archive."""

    def __init__(self, archive: Archive, *, extra_plugins: Sequence[type[Plugin]] = (),
                 use_entry_points: bool = True) -> None:  # fmt: skip
        self.archive = archive
        self.registry = PluginRegistry(
            archive.engine,
            extra=extra_plugins,
            default_timeout_s=archive.settings.job_timeout,
            use_entry_points=use_entry_points,
            gated=bool(archive.settings.plugins_gate_benchmark),
        )
        self.queue: JobQueue = job_queue(archive)
        self.router = Router(self.registry, max_attempts=archive.settings.job_max_attempts)
        self._synced = False

    def _sync(self) -> None:
        if not self._synced:
            self.registry.sync()
            self._synced = True

    # --- plugins ---------------------------------------------------------------------------------

    def plugins(self, *, registered_by: str | None = None, partition: int = DEFAULT_PARTITION) -> list[PluginView]:
        """Every plugin version with its state in ``partition`` (only one vendor's, when ``registered_by``
        is given)."""
        self._sync()
        plugins = self.registry.list_all(partition=partition)
        if registered_by is not None:
            plugins = [p for p in plugins if p.registered_by == registered_by]
        return plugins

    def register(self, manifest: RemoteManifest, *, registered_by: str) -> tuple[PluginView, bool]:
        self._sync()
        return self.registry.register_remote(manifest, registered_by=registered_by)

    def set_enabled(self, name: str, version: str, enabled: bool, *, partition: int = DEFAULT_PARTITION,
                    by: str = "") -> PluginView:  # fmt: skip
        """Enable or disable one version in ``partition``; disabling cancels its waiting jobs there (running
        ones finish).

        Under a deployment gate, enabling a version without a passing evaluation raises
        :class:`~ai_plugins.benchmarks.gate.GateRefused` with the reason. A plugin its vendor hosts runs in
        the default partition only (its job token and DICOMweb base are that partition's)."""
        self._sync()
        if enabled:
            plugin = self.registry.get(name, version)
            if plugin.source is PluginSource.REMOTE and partition != DEFAULT_PARTITION:
                raise Conflict(f"{plugin.key} is hosted by its vendor: it runs in the default partition only")
            passed = check_gate(self.archive.engine, self.archive.settings, plugin)
            if passed is not None:
                log.info("deployment gate: %s", passed.reason)
        plugin = self.registry.set_enabled(name, version, enabled, partition=partition, by=by)
        if not enabled:
            n = self.queue.cancel_pending(kind=JOB_KIND, target=name, target_version=version,
                                          reason=f"{plugin.key} was disabled", partition=partition)  # fmt: skip
            log.info("%s disabled; %d waiting job(s) cancelled", plugin.key, n)
        return plugin

    # --- jobs ------------------------------------------------------------------------------------

    def jobs(self, *, statuses: Sequence[JobStatus] = (), study_uid: str | None = None, plugin: str | None = None,
             plugins: Sequence[str] | None = None, hidden_studies: frozenset[str] = frozenset(), limit: int = 100,
             offset: int = 0, partition: int = DEFAULT_PARTITION) -> list[JobView]:  # fmt: skip
        """Plugin jobs, newest first; ``plugins`` restricts to those names (a vendor's own), and jobs on
        ``hidden_studies`` (benchmark test cases, for a vendor) are left out: their results are
        per-case outputs of hidden test cases."""
        if plugins is not None and plugin is None and not plugins:
            return []
        filtered = plugins is not None or bool(hidden_studies)
        found = self.queue.list_jobs(statuses=statuses, study_uid=study_uid, target=plugin, kind=JOB_KIND,
                                     limit=1000 if filtered else limit, offset=offset,
                                     partition=partition)  # fmt: skip
        if filtered:
            found = [j for j in found if (plugins is None or j.target in plugins)
                     and j.study_uid not in hidden_studies][:limit]  # fmt: skip
        return found

    def job(self, job_id: int, partition: int = DEFAULT_PARTITION) -> JobView:
        """One plugin job of ``partition`` (another partition's does not exist for the caller)."""
        view = self.queue.get(job_id)
        if view.kind != JOB_KIND or view.partition != partition:
            raise NotFound("no such job")
        return view

    def rerun(self, study_uid: str, name: str, *, version: str | None, requested_by: str,
              scope: AccessScope) -> tuple[JobView, bool]:  # fmt: skip
        """Queue a run of ``name`` on a study the caller can see; ``(job, created)``."""
        self._sync()
        visible = list(run_query(self.archive.engine, QueryRequest(Level.STUDY, {"StudyInstanceUID": study_uid},
                                                                   scope=scope, limit=1)))  # fmt: skip
        if not visible:
            raise NotFound("no such study")
        return self.router.rerun(self.archive.engine, self.queue, study_uid, name, version=version,
                                 requested_by=requested_by, partition=scope.partition)  # fmt: skip

    def results(self, study_uid: str, partition: int = DEFAULT_PARTITION) -> list[ResultView]:
        """What plugin jobs stored in a study, oldest first (records of objects not stored, because
        the attempt that meant to store them failed, are left out)."""
        with self.archive.engine.connect() as conn:
            rows = conn.execute(
                select(PluginResult)
                .join(Instance, and_(Instance.sop_uid == PluginResult.sop_uid,
                                     Instance.partition_fk == PluginResult.partition_fk))
                .where(PluginResult.study_uid == study_uid, PluginResult.partition_fk == partition)
                .order_by(PluginResult.id)
            ).all()
        return [ResultView(r.job_id, r.plugin_name, r.plugin_version, r.generation, r.kind, r.series_uid, r.sop_uid)
                for r in rows]  # fmt: skip
