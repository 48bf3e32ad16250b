"""Evaluations: plugin@version on a dataset version, run through the job queue, scored when done.

Requesting one checks who may ask (an admin, or the vendor for its own plugin) and the rate limit
(``BENCHMARK_EVALS_PER_DAY`` per plugin per benchmark, over the last 24 hours), then writes the
evaluation, a pending prediction and a ``benchmark-case`` job per test case in one transaction.
Workers (:mod:`ai_plugins.benchmarks.runner`) fill the predictions; when none is pending a
``benchmark-score`` job computes the metrics. The bootstrap seed is derived from the dataset
version's digest, so the same plugin version on the same dataset version scores the same numbers.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import numpy as np
from sqlalchemy import Engine, func, insert, select, update
from sqlalchemy.engine import Connection

from ai_plugins.benchmarks import metrics as m
from ai_plugins.benchmarks.datasets import BenchmarkInfo, get_benchmark, get_version, list_cases, version_by_id
from ai_plugins.benchmarks.errors import InvalidBenchmarkData, RateLimited
from ai_plugins.benchmarks.labels import LabelSchema, Task, decode_mask, encode_mask, is_positive
from ai_plugins.benchmarks.models import (
    BenchmarkCaseRow,
    BenchmarkRow,
    BenchmarkVersionRow,
    EvaluationRow,
    PredictionRow,
)
from ai_plugins.benchmarks.visibility import HOSTED_REFUSAL
from ai_plugins.runner.registry import PluginRegistry, PluginSource, PluginView
from ai_plugins.sdk import Findings, Point3D
from pacs import __version__
from pacs.accounts.errors import Forbidden
from pacs.errors import Conflict, NotFound
from pacs.index.db import utcnow
from pacs.jobs import JobSpec, aware, dedupe_key, enqueue, write_transaction

CASE_KIND = "benchmark-case"
SCORE_KIND = "benchmark-score"
KINDS = (CASE_KIND, SCORE_KIND)
RATE_WINDOW = timedelta(hours=24)


@dataclass(frozen=True)
class EvaluationView:
    id: int
    benchmark_id: int
    benchmark_name: str
    task: Task
    version_id: int
    version_number: int
    version_digest: str
    plugin_name: str
    plugin_version: str
    plugin_source: str
    plugin_digest: str  # an algorithm package's SHA-256 ("" for other plugins)
    cloudfilm_version: str
    threshold: float
    seed: int
    requested_by: str
    status: str
    n_cases: int
    n_done: int
    n_failed: int
    main_metric: str
    main_value: float | None
    ci_low: float | None
    ci_high: float | None
    metrics: dict[str, Any]
    error: str
    created_at: datetime
    finished_at: datetime | None

    @property
    def plugin(self) -> str:
        return f"{self.plugin_name}@{self.plugin_version}"

    @property
    def finished(self) -> bool:
        return self.status in ("done", "failed")


def _select() -> Any:
    return (select(EvaluationRow, BenchmarkRow.name, BenchmarkRow.task, BenchmarkVersionRow.number,
                   BenchmarkVersionRow.digest)
            .join(BenchmarkRow, BenchmarkRow.id == EvaluationRow.benchmark_fk)
            .join(BenchmarkVersionRow, BenchmarkVersionRow.id == EvaluationRow.version_fk))  # fmt: skip


def _views(conn: Connection, stmt: Any) -> list[EvaluationView]:
    rows = conn.execute(stmt).all()
    ids = [r.id for r in rows]
    counts: dict[tuple[int, str], int] = {}
    if ids:
        for eid, status, n in conn.execute(select(PredictionRow.evaluation_fk, PredictionRow.status, func.count())
                                           .where(PredictionRow.evaluation_fk.in_(ids))
                                           .group_by(PredictionRow.evaluation_fk, PredictionRow.status)):
            counts[(eid, status)] = int(n)
    out = []
    for row in rows:  # the evaluation's columns, then the benchmark's name and task, the version's number and digest
        name, task, number, digest = row.name, row.task, row.number, row.digest
        ok, failed = counts.get((row.id, "ok"), 0), counts.get((row.id, "failed"), 0)
        out.append(EvaluationView(
            row.id, row.benchmark_fk, name, Task(task), row.version_fk, number, digest, row.plugin_name,
            row.plugin_version, row.plugin_source, row.plugin_digest or "", row.cloudfilm_version, row.threshold,
            row.seed, row.requested_by,
            row.status, row.n_cases, ok + failed, failed, row.main_metric, row.main_value, row.ci_low, row.ci_high,
            json.loads(row.metrics_json or "{}"), row.error, aware(row.created_at),
            None if row.finished_at is None else aware(row.finished_at)))  # fmt: skip
    return out


def get_evaluation(engine: Engine, evaluation_id: int) -> EvaluationView:
    with engine.connect() as conn:
        found = _views(conn, _select().where(EvaluationRow.id == evaluation_id))
    if not found:
        raise NotFound("no such evaluation")
    return found[0]


def list_evaluations(engine: Engine, benchmark_id: int, *, version_id: int | None = None) -> list[EvaluationView]:
    stmt = _select().where(EvaluationRow.benchmark_fk == benchmark_id)
    if version_id is not None:
        stmt = stmt.where(EvaluationRow.version_fk == version_id)
    with engine.connect() as conn:
        return _views(conn, stmt.order_by(EvaluationRow.id.desc()))


# --- requesting ----------------------------------------------------------------------------------


def _plugin(registry: PluginRegistry, name: str, version: str | None) -> PluginView:
    return registry.get(name, version) if version else registry.latest(name, enabled_only=False)


def request_evaluation(engine: Engine, registry: PluginRegistry, *, benchmark_id: int, plugin_name: str,
                       plugin_version: str | None = None, version_number: int | None = None,
                       threshold: float = 0.5, requested_by: str, requester_role: str | None,
                       per_day: int, max_attempts: int = 3, force: bool = False) -> EvaluationView:  # fmt: skip
    """Queue plugin@version on every test case of the dataset version (default: the newest)."""
    bench = get_benchmark(engine, benchmark_id)
    version = get_version(engine, bench.id, version_number)
    if not version.is_split:
        raise InvalidBenchmarkData(f"version {version.number} of {bench.name} has no test split; split it first")
    if not 0.0 <= threshold <= 1.0:
        raise InvalidBenchmarkData("threshold must be between 0 and 1")
    plugin = _plugin(registry, plugin_name, plugin_version)
    if requester_role == "vendor" and plugin.registered_by != requested_by:
        raise Forbidden("a vendor may evaluate only the plugins it registered")
    if requester_role not in ("admin", "vendor"):
        raise Forbidden("evaluations are requested by admins or by the vendor of the plugin")
    if not plugin.installed:
        raise Conflict(f"{plugin.key} is not installed here")
    if plugin.source is PluginSource.REMOTE:
        raise Conflict(f"{plugin.key} is hosted by its vendor: {HOSTED_REFUSAL}")
    cases = list_cases(engine, version.id, split="test")
    now = utcnow()
    with write_transaction(engine) as conn:
        recent = list(conn.execute(select(EvaluationRow.created_at).where(
            EvaluationRow.benchmark_fk == bench.id, EvaluationRow.plugin_name == plugin.name,
            EvaluationRow.created_at > now - RATE_WINDOW).order_by(EvaluationRow.created_at)).scalars())  # fmt: skip
        if len(recent) >= per_day and not (force and requester_role == "admin"):
            again = aware(recent[len(recent) - per_day]) + RATE_WINDOW
            raise RateLimited(f"{plugin.name} has been evaluated {len(recent)} times on {bench.name} in the last "
                              f"24 hours (at most {per_day}); the next evaluation is possible after "
                              f"{again:%Y-%m-%d %H:%M} UTC")  # fmt: skip
        evaluation_id = conn.execute(insert(EvaluationRow).values(
            benchmark_fk=bench.id, version_fk=version.id, plugin_name=plugin.name, plugin_version=plugin.version,
            plugin_source=plugin.source.value, plugin_digest=plugin.digest, cloudfilm_version=__version__,
            threshold=threshold,
            seed=int(version.digest[:12], 16), requested_by=requested_by[:64], status="running",
            n_cases=len(cases), n_failed=0, main_metric=bench.main_metric, metrics_json="{}", error="",
            created_at=now).returning(EvaluationRow.id)).scalar_one()  # fmt: skip
        for case in cases:
            prediction_id = conn.execute(insert(PredictionRow).values(
                evaluation_fk=evaluation_id, case_fk=case.id, status="pending", output_json="{}", error="",
                updated_at=now).returning(PredictionRow.id)).scalar_one()  # fmt: skip
            job_id = enqueue(conn, JobSpec(
                kind=CASE_KIND, dedupe_key=dedupe_key(CASE_KIND, evaluation_id, case.id), target=plugin.name,
                target_version=plugin.version, payload={"evaluation": evaluation_id, "case": case.id,
                                                        "prediction": prediction_id},
                requested_by=requested_by[:64], max_attempts=max_attempts, timeout_s=plugin.timeout_s,
                partition=bench.partition), now=now)  # the plugin reads the case in the benchmark's partition
            conn.execute(update(PredictionRow).where(PredictionRow.id == prediction_id).values(job_id=job_id))
    return get_evaluation(engine, evaluation_id)


# --- the plugin's answer, normalised -------------------------------------------------------------


def study_score(schema: LabelSchema, findings: Findings) -> float:
    """The study-level probability: the schema's classification (default: the first one), else the
    most probable finding, else 0."""
    chosen = [c for c in findings.classifications
              if schema.code is None or (c.code.value, c.code.scheme) == (schema.code.value, schema.code.scheme)]
    if chosen and chosen[0].probability is not None:
        return float(chosen[0].probability)
    probabilities = [f.probability for f in findings.findings if f.probability is not None]
    return float(max(probabilities)) if probabilities else 0.0


def normalise(task: Task, schema: LabelSchema, findings: Findings, *, label: dict[str, Any] | None) -> dict[str, Any]:
    """What is scored of ``findings``: the study score, 3D points, or the union of the masks."""
    out: dict[str, Any] = {"score": round(study_score(schema, findings), 6)}
    if task is Task.DETECTION:
        out["points"] = [[round(f.region.x, 3), round(f.region.y, 3), round(f.region.z, 3),
                          round(f.probability if f.probability is not None else 1.0, 6)]
                         for f in findings.findings if isinstance(f.region, Point3D)]  # fmt: skip
    elif task is Task.SEGMENTATION:
        wanted = str((label or {}).get("series_uid", ""))
        chosen = [s for s in findings.segmentations if s.series_uid == wanted]
        chosen = chosen or findings.segmentations[:1]
        if chosen:
            union = np.zeros(chosen[0].segments[0].mask.shape, dtype=bool)
            for segment in chosen[0].segments:
                union |= segment.mask
            out["mask"] = encode_mask(union)
    return out


# --- scoring ------------------------------------------------------------------------------------


def _main_value(task: Task, metric: str, result: dict[str, Any]) -> dict[str, float | None]:
    if task is Task.CLASSIFICATION:
        return dict(result["classification"]["metrics"][metric])
    if task is Task.DETECTION:
        froc = result["froc"]
        if metric == "froc_mean_sensitivity":
            return dict(froc["mean_sensitivity"])
        if metric == "study_auc":
            return dict(result["study_level"]["metrics"]["auc"])
        return dict(froc["sensitivity_at_fp_per_scan"][metric.removeprefix("sensitivity_at_")])
    return dict(result["segmentation"]["metrics"][metric])


def compute_metrics(bench: BenchmarkInfo, rows: list[tuple[dict[str, Any], dict[str, Any], dict[str, str]]], *,
                    threshold: float, seed: int, n_boot: int) -> dict[str, Any]:  # fmt: skip
    """Metrics of (label, normalised output, case attributes) rows; failed cases have an empty output.

    ``ppv`` (classification and detection) is the positive predictive value at ``threshold`` with its
    Wilson interval: of the findings called (detection) or the studies called positive (classification),
    the share that is right; the deployment watch compares physicians' acceptance rate with its lower bound.
    """
    task, schema = bench.task, bench.schema
    y = [is_positive(task, schema, label) for label, _, _ in rows]
    scores = [float(out.get("score", 0.0)) for _, out, _ in rows]
    groups = {k: [attrs[k] for _, _, attrs in rows] for k in ("sex", "age_band", "manufacturer")}
    result: dict[str, Any] = {"task": task.value}
    if task is Task.CLASSIFICATION:
        result["classification"] = m.classification(y, scores, threshold, n_boot=n_boot, seed=seed,
                                                    subgroups=groups).to_json()  # fmt: skip
        c = m.confusion(y, scores, threshold)
        result["ppv"] = m.Proportion("study", c.tp, c.tp + c.fp).to_json()
    elif task is Task.DETECTION:
        cases = [m.DetectionCase(
            tuple(m.Lesion((float(c[0]), float(c[1]), float(c[2])), float(les["radius_mm"]))
                  for les in label["lesions"] for c in [les["center_mm"]]),
            tuple((float(p[0]), float(p[1]), float(p[2]), float(p[3])) for p in out.get("points", [])))
            for label, out, _ in rows]  # fmt: skip
        result["froc"] = m.froc(cases, n_boot=n_boot, seed=seed).to_json()
        result["study_level"] = m.classification(y, scores, threshold, n_boot=n_boot, seed=seed,
                                                 subgroups=groups).to_json()  # fmt: skip
        result["ppv"] = m.finding_ppv(cases, threshold).to_json()
    else:
        dices: list[float] = []
        hds: list[float | None] = []
        penalties: list[float] = []
        for label, out, _ in rows:
            truth = decode_mask(label["mask"])
            spacing = [float(v) for v in label["spacing_mm"]]
            pred = decode_mask(out["mask"]) if out.get("mask") else np.zeros_like(truth)
            penalties.append(float(np.sqrt(sum((n * s) ** 2 for n, s in zip(truth.shape, spacing, strict=True)))))
            if pred.shape != truth.shape:
                dices.append(0.0)
                hds.append(None)
                continue
            dices.append(m.dice(pred, truth))
            hds.append(m.hd95(pred, truth, spacing))
        result["segmentation"] = m.segmentation(dices, hds, penalties, n_boot=n_boot, seed=seed,
                                                strata=[bool(label.get("voxels")) for label, _, _ in rows]).to_json()
    result["summary"] = {metric: _main_value(task, metric, result) for metric in bench.metrics}
    return result


def score(engine: Engine, evaluation_id: int, *, n_boot: int) -> EvaluationView:
    """Compute and store the metrics of a finished evaluation (idempotent: same inputs, same numbers)."""
    view = get_evaluation(engine, evaluation_id)
    bench = get_benchmark(engine, view.benchmark_id)
    version = version_by_id(engine, view.version_id)
    cases = {c.id: c for c in list_cases(engine, version.id, split="test")}
    with engine.connect() as conn:
        predictions = conn.execute(select(PredictionRow.case_fk, PredictionRow.status, PredictionRow.output_json)
                                   .where(PredictionRow.evaluation_fk == evaluation_id)).all()  # fmt: skip
    rows = []
    failed = 0
    for case_fk, status, output in sorted(predictions, key=lambda p: cases[p[0]].study_uid):
        case = cases[case_fk]
        ok = status == "ok"
        failed += not ok
        attrs = {"sex": case.sex, "age_band": case.age_band, "manufacturer": case.manufacturer}
        rows.append((case.label or {}, json.loads(output) if ok else {}, attrs))
    try:
        result = compute_metrics(bench, rows, threshold=view.threshold, seed=view.seed, n_boot=n_boot)
        main = result["summary"][view.main_metric] if view.main_metric in result["summary"] else \
            _main_value(bench.task, view.main_metric, result)
        result["n_failed"] = failed
        values: dict[str, Any] = {"status": "done", "metrics_json": json.dumps(result, sort_keys=True),
                                  "main_value": main["value"], "ci_low": main["ci_low"], "ci_high": main["ci_high"],
                                  "n_failed": failed, "error": ""}  # fmt: skip
    except Exception as exc:  # a bug or bad data must still end the evaluation with a reason
        values = {"status": "failed", "error": f"scoring failed: {type(exc).__name__}: {exc}"[:2000],
                  "n_failed": failed}
    with write_transaction(engine) as conn:
        conn.execute(update(EvaluationRow).where(EvaluationRow.id == evaluation_id)
                     .values(finished_at=utcnow(), **values))  # fmt: skip
    return get_evaluation(engine, evaluation_id)


def pending_count(conn: Connection, evaluation_id: int) -> int:
    return int(conn.execute(select(func.count()).select_from(PredictionRow).where(
        PredictionRow.evaluation_fk == evaluation_id, PredictionRow.status == "pending")).scalar_one())  # fmt: skip


def enqueue_scoring(conn: Connection, evaluation_id: int) -> None:
    """In the caller's transaction: once no prediction is pending, queue the scoring (once)."""
    stmt = select(EvaluationRow.status).where(EvaluationRow.id == evaluation_id)
    if conn.dialect.name == "postgresql":
        stmt = stmt.with_for_update()  # two last cases finishing at once: the second sees the first
    if conn.execute(stmt).scalar_one_or_none() != "running" or pending_count(conn, evaluation_id):
        return
    enqueue(conn, JobSpec(kind=SCORE_KIND, dedupe_key=dedupe_key(SCORE_KIND, evaluation_id),
                          payload={"evaluation": evaluation_id}, requested_by="benchmark", max_attempts=3))


def case_context(engine: Engine, case_id: int) -> tuple[str, dict[str, Any] | None]:
    """(study UID, label) of a case."""
    with engine.connect() as conn:
        row = conn.execute(select(BenchmarkCaseRow.study_uid, BenchmarkCaseRow.label_json)
                           .where(BenchmarkCaseRow.id == case_id)).first()  # fmt: skip
    if row is None:
        raise NotFound("the case is gone")
    return row[0], None if row[1] is None else json.loads(row[1])
