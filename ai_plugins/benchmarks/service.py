"""The benchmark services the HTTP API and the CLI call: one method per request or command."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from sqlalchemy import select

from ai_plugins.benchmarks import copies, datasets, evaluation, report
from ai_plugins.benchmarks.datasets import AddResult, BenchmarkInfo, CaseInfo, VersionInfo
from ai_plugins.benchmarks.evaluation import EvaluationView
from ai_plugins.benchmarks.labels import LabelSchema, Task
from ai_plugins.benchmarks.models import PredictionRow
from ai_plugins.runner.registry import PluginRegistry, PluginSource
from ai_plugins.sdk import Plugin
from pacs.access import DEFAULT_PARTITION
from pacs.archive import Archive


@dataclass(frozen=True, slots=True)
class SplitResult:
    version: VersionInfo
    published: int
    not_published: list[str]


@dataclass(frozen=True, slots=True)
class DevCase:
    """A dev case as vendors get it: the de-identified copy's StudyInstanceUID and the label."""

    study_uid: str
    label: dict[str, Any]


@dataclass(frozen=True, slots=True)
class CaseOutput:
    """One test case of an evaluation with the plugin's normalised answer (admins only)."""

    study_uid: str
    label: dict[str, Any] | None
    status: str
    output: dict[str, Any]
    error: str


class BenchmarkService:
    """Benchmarks, dataset versions, evaluations and leaderboards of one partition of an archive (the
    default one unless told): another partition's benchmarks and evaluations do not exist for it."""

    def __init__(self, archive: Archive, *, extra_plugins: Sequence[type[Plugin]] = (),
                 use_entry_points: bool = True, partition: int = DEFAULT_PARTITION) -> None:  # fmt: skip
        self.archive = archive
        self.partition = partition
        self.engine = archive.engine
        self.extra_plugins = tuple(extra_plugins)
        self.use_entry_points = use_entry_points
        self.registry = PluginRegistry(archive.engine, extra=extra_plugins,
                                       default_timeout_s=archive.settings.job_timeout,
                                       use_entry_points=use_entry_points,
                                       gated=bool(archive.settings.plugins_gate_benchmark))  # fmt: skip
        self._synced = False

    def _sync(self) -> None:
        if not self._synced:
            self.registry.sync()
            self._synced = True

    def in_partition(self, partition: int) -> BenchmarkService:
        """This service (its registry shared) over ``partition``'s benchmarks."""
        if partition == self.partition:
            return self
        other = copy.copy(self)
        other.partition = partition
        return other

    # --- datasets --------------------------------------------------------------------------------

    def benchmarks(self) -> list[BenchmarkInfo]:
        return datasets.list_benchmarks(self.engine, self.partition)

    def benchmark(self, ref: int | str) -> BenchmarkInfo:
        return datasets.get_benchmark(self.engine, ref, self.partition)

    def versions(self, ref: int | str) -> list[VersionInfo]:
        return datasets.list_versions(self.engine, self.benchmark(ref).id)

    def create(self, *, name: str, task: str, description: str = "", schema: LabelSchema | None = None,
               metrics: Sequence[str] = (), created_by: str) -> BenchmarkInfo:  # fmt: skip
        return datasets.create_benchmark(self.engine, name=name, task=task, description=description, schema=schema,
                                         metrics=metrics, created_by=created_by, partition=self.partition)  # fmt: skip

    def add_studies(self, ref: int | str, *, study_uids: Sequence[str] = (), query: Mapping[str, str] | None = None,
                    created_by: str) -> AddResult:  # fmt: skip
        return datasets.add_studies(self.engine, self.benchmark(ref).id, study_uids=study_uids, query=query,
                                    created_by=created_by)  # fmt: skip

    def import_labels(self, ref: int | str, content: str, *, fmt: str, created_by: str) -> VersionInfo:
        return datasets.import_labels(self.engine, self.benchmark(ref).id, content, fmt=fmt, created_by=created_by)

    def split(self, ref: int | str, *, seed: int, test_fraction: float, created_by: str,
              progress: Callable[[int, int], None] | None = None) -> SplitResult:  # fmt: skip
        """Split into dev and test (a new version), then publish the dev split de-identified."""
        bench = self.benchmark(ref)
        version = datasets.assign_split(self.engine, bench.id, seed=seed, test_fraction=test_fraction,
                                        created_by=created_by)  # fmt: skip
        dev = [c.study_uid for c in datasets.list_cases(self.engine, version.id, split="dev")]
        done, failed = copies.publish(self.archive, bench.id, dev, progress, bench.partition)
        return SplitResult(version, len(done), failed)

    def cases(self, ref: int | str, version_number: int | None = None) -> tuple[VersionInfo, list[CaseInfo]]:
        bench = self.benchmark(ref)
        version = datasets.get_version(self.engine, bench.id, version_number)
        return version, datasets.list_cases(self.engine, version.id)

    def dev_split(self, ref: int | str, version_number: int | None = None) -> tuple[VersionInfo, list[DevCase]]:
        """The published dev cases: copies' UIDs and labels (segmentation labels name the copy's series)."""
        bench = self.benchmark(ref)
        version = datasets.get_version(self.engine, bench.id, version_number)
        published = copies.existing_copies(self.engine, bench.id, "dev")
        deid = copies.deidentifier(self.archive, bench.id, "dev")
        out = []
        for case in datasets.list_cases(self.engine, version.id, split="dev"):
            if case.study_uid not in published or case.label is None:
                continue
            label = dict(case.label)
            if bench.task is Task.SEGMENTATION:
                label["series_uid"] = deid.uid(str(label["series_uid"]))
            out.append(DevCase(published[case.study_uid], label))
        return version, sorted(out, key=lambda c: c.study_uid)

    # --- evaluations -----------------------------------------------------------------------------

    def evaluate(self, ref: int | str, plugin: str, *, plugin_version: str | None = None,
                 version_number: int | None = None, threshold: float = 0.5, requested_by: str,
                 requester_role: str | None, force: bool = False) -> EvaluationView:  # fmt: skip
        self._sync()
        settings = self.archive.settings
        return evaluation.request_evaluation(
            self.engine, self.registry, benchmark_id=self.benchmark(ref).id, plugin_name=plugin,
            plugin_version=plugin_version, version_number=version_number, threshold=threshold,
            requested_by=requested_by, requester_role=requester_role, per_day=settings.benchmark_evals_per_day,
            max_attempts=settings.job_max_attempts, force=force)  # fmt: skip

    def evaluation(self, evaluation_id: int) -> EvaluationView:
        view = evaluation.get_evaluation(self.engine, evaluation_id)
        self.benchmark(view.benchmark_id)  # NotFound for another partition's
        return view

    def evaluations(self, ref: int | str, version_number: int | None = None) -> list[EvaluationView]:
        bench = self.benchmark(ref)
        version = datasets.get_version(self.engine, bench.id, version_number) if version_number else None
        return evaluation.list_evaluations(self.engine, bench.id, version_id=version.id if version else None)

    def leaderboard(self, ref: int | str, version_number: int | None = None
                    ) -> tuple[BenchmarkInfo, VersionInfo, list[report.LeaderboardRow]]:  # fmt: skip
        return report.leaderboard(self.engine, self.benchmark(ref).id, version_number)

    def curves_visible(self, view: EvaluationView, role: str | None) -> bool:
        """Staff see every curve; vendors only those of plugins that run inside the archive."""
        return role in ("admin", "physician") or view.plugin_source != PluginSource.REMOTE.value

    def report(self, evaluation_id: int, *, role: str | None) -> dict[str, Any]:
        view = self.evaluation(evaluation_id)
        return report.report(view, curves=self.curves_visible(view, role))

    def case_outputs(self, evaluation_id: int) -> list[CaseOutput]:
        """Per-case answers of an evaluation: for admins, never for vendors."""
        view = self.evaluation(evaluation_id)
        cases = {c.id: c for c in datasets.list_cases(self.engine, view.version_id, split="test")}
        with self.engine.connect() as conn:
            rows = conn.execute(select(PredictionRow.case_fk, PredictionRow.status, PredictionRow.output_json,
                                       PredictionRow.error).where(PredictionRow.evaluation_fk == view.id)).all()
        out = [CaseOutput(cases[c].study_uid, cases[c].label, s, json.loads(o or "{}"), e) for c, s, o, e in rows]
        return sorted(out, key=lambda c: c.study_uid)
