"""Benchmarks over HTTP (issue 7): ``/api/benchmarks…`` (JSON) and the ``/viewer/benchmarks…`` pages.

Admins define benchmarks (studies, labels, split); admins and vendors (their own plugins) request
evaluations; staff and vendors read leaderboards, reports and curves. A vendor gets the dev split
(de-identified copies' UIDs and labels) and aggregate test metrics, never a test case, test label
or per-case output; patients get none of it. Each handler parses, calls one service method and
maps the result.
"""

from __future__ import annotations

import json
import re
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Query, Request, Response
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel, Field

from ai_plugins.benchmarks.datasets import BenchmarkInfo, VersionInfo
from ai_plugins.benchmarks.errors import InvalidBenchmarkData, RateLimited
from ai_plugins.benchmarks.evaluation import EvaluationView
from ai_plugins.benchmarks.labels import LabelSchema
from ai_plugins.benchmarks.report import LeaderboardRow, curve_png
from ai_plugins.benchmarks.service import BenchmarkService
from pacs.access import DEFAULT_PARTITION
from pacs.accounts.principal import Principal
from viewer_api.auth.access import Admin, AiReader, VendorOrAdmin
from viewer_api.auth.dependencies import audit, optional_principal
from viewer_api.auth.routing import DeclaredRoute
from viewer_api.context import archive_of
from viewer_api.errors import STATUS_OF
from viewer_api.i18n import Translator, translator_for
from viewer_api.pages import render

router = APIRouter(tags=["benchmarks"], route_class=DeclaredRoute)
MAX_LABEL_BYTES = 64 * 1024 * 1024


def benchmark_service(request: Request) -> BenchmarkService:
    """The app's benchmark service (tests may put one with extra plugins in ``app.state.benchmark_service``),
    over the caller's partition."""
    service: BenchmarkService | None = getattr(request.app.state, "benchmark_service", None)
    if service is None:
        service = BenchmarkService(archive_of(request))
        request.app.state.benchmark_service = service
    principal = optional_principal(request)
    return service.in_partition(principal.home_partition if principal is not None else DEFAULT_PARTITION)


# --- models --------------------------------------------------------------------------------------


class VersionOut(BaseModel):
    number: int
    digest: str
    change: str
    n_cases: int
    n_labelled: int
    n_dev: int
    n_test: int
    split_seed: int | None
    test_fraction: float | None
    created_by: str
    created_at: datetime


class BenchmarkOut(BaseModel):
    id: int
    name: str
    task: str
    description: str
    label_schema: dict[str, Any]
    metrics: list[str]
    main_metric: str
    created_by: str
    created_at: datetime
    current_version: VersionOut | None
    versions: list[VersionOut] | None = None


class BenchmarkIn(BaseModel):
    name: str = Field(min_length=1, max_length=64)
    task: str
    description: str = Field(default="", max_length=4000)
    label_schema: LabelSchema | None = None
    metrics: list[str] = Field(default_factory=list)


class StudiesIn(BaseModel):
    study_uids: list[str] = Field(default_factory=list, max_length=100_000)
    query: dict[str, str] | None = Field(default=None, description="QIDO-RS study-level matching keys")


class AddOut(BaseModel):
    version: VersionOut
    added: int
    already_present: int


class SplitIn(BaseModel):
    seed: int = Field(ge=0, le=2**62)
    test_fraction: float = Field(default=0.5, gt=0, lt=1)


class SplitOut(BaseModel):
    version: VersionOut
    dev_published: int
    not_published: list[str]


class EvaluationIn(BaseModel):
    plugin: str = Field(min_length=1, max_length=64)
    version: str | None = Field(default=None, description="plugin version (default: the newest)")
    dataset_version: int | None = Field(default=None, description="benchmark version (default: the newest)")
    threshold: float = Field(default=0.5, ge=0, le=1, description="operating point for the binary metrics")
    force: bool = Field(default=False, description="admins only: past the daily limit")


class EvaluationOut(BaseModel):
    id: int
    benchmark_id: int
    benchmark: str
    dataset_version: int
    dataset_digest: str
    plugin: str
    plugin_name: str
    plugin_version: str
    plugin_source: str
    plugin_sha256: str | None  # an algorithm package's digest
    cloudfilm_version: str
    status: str
    n_cases: int
    n_done: int
    n_failed: int
    main_metric: str
    main_value: float | None
    ci_low: float | None
    ci_high: float | None
    threshold: float
    requested_by: str
    created_at: datetime
    finished_at: datetime | None
    error: str | None
    report_url: str
    page_url: str


class LeaderboardRowOut(BaseModel):
    rank: int
    plugin: str
    metric: str
    value: float | None
    ci_low: float | None
    ci_high: float | None
    n_cases: int
    n_failed: int
    date: datetime | None
    evaluation_id: int
    cloudfilm_version: str


class LeaderboardOut(BaseModel):
    benchmark: str
    benchmark_id: int
    dataset_version: int
    dataset_digest: str
    metric: str
    rows: list[LeaderboardRowOut]


def version_out(v: VersionInfo) -> VersionOut:
    return VersionOut(number=v.number, digest=v.digest, change=v.change, n_cases=v.n_cases, n_labelled=v.n_labelled,
                      n_dev=v.n_dev, n_test=v.n_test, split_seed=v.split_seed, test_fraction=v.test_fraction,
                      created_by=v.created_by, created_at=v.created_at)  # fmt: skip


def benchmark_out(b: BenchmarkInfo, versions: list[VersionInfo] | None = None) -> BenchmarkOut:
    return BenchmarkOut(id=b.id, name=b.name, task=b.task.value, description=b.description,
                        label_schema=b.schema.model_dump(mode="json"), metrics=list(b.metrics),
                        main_metric=b.main_metric, created_by=b.created_by, created_at=b.created_at,
                        current_version=version_out(b.current) if b.current else None,
                        versions=[version_out(v) for v in versions] if versions is not None else None)  # fmt: skip


def evaluation_out(v: EvaluationView) -> EvaluationOut:
    return EvaluationOut(
        id=v.id, benchmark_id=v.benchmark_id, benchmark=v.benchmark_name, dataset_version=v.version_number,
        dataset_digest=v.version_digest, plugin=v.plugin, plugin_name=v.plugin_name, plugin_version=v.plugin_version,
        plugin_source=v.plugin_source, plugin_sha256=v.plugin_digest or None, cloudfilm_version=v.cloudfilm_version,
        status=v.status, n_cases=v.n_cases,
        n_done=v.n_done, n_failed=v.n_failed, main_metric=v.main_metric, main_value=v.main_value, ci_low=v.ci_low,
        ci_high=v.ci_high, threshold=v.threshold, requested_by=v.requested_by, created_at=v.created_at,
        finished_at=v.finished_at, error=v.error or None,
        report_url=f"/api/benchmarks/evaluations/{v.id}/report.json",
        page_url=f"/viewer/benchmarks/evaluations/{v.id}")  # fmt: skip


def leaderboard_out(bench: BenchmarkInfo, version: VersionInfo, rows: list[LeaderboardRow]) -> LeaderboardOut:
    return LeaderboardOut(benchmark=bench.name, benchmark_id=bench.id, dataset_version=version.number,
                          dataset_digest=version.digest, metric=bench.main_metric,
                          rows=[LeaderboardRowOut(rank=r.rank, plugin=r.plugin, metric=r.metric, value=r.value,
                                                  ci_low=r.ci_low, ci_high=r.ci_high, n_cases=r.n_cases,
                                                  n_failed=r.n_failed, date=r.date, evaluation_id=r.evaluation_id,
                                                  cloudfilm_version=r.cloudfilm_version) for r in rows])  # fmt: skip


def _who(principal: Principal) -> str:
    return principal.username or principal.label


# --- benchmarks and datasets ---------------------------------------------------------------------


@router.get("/api/benchmarks", response_model=list[BenchmarkOut], summary="Benchmarks")
def list_benchmarks(_p: AiReader,
                    service: BenchmarkService = Depends(benchmark_service)) -> list[BenchmarkOut]:  # fmt: skip
    return [benchmark_out(b) for b in service.benchmarks()]


@router.post("/api/benchmarks", response_model=BenchmarkOut, status_code=201, summary="Create a benchmark")
def create_benchmark(principal: Admin, body: BenchmarkIn, request: Request,
                     service: BenchmarkService = Depends(benchmark_service)) -> BenchmarkOut:  # fmt: skip
    bench = service.create(name=body.name, task=body.task, description=body.description, schema=body.label_schema,
                           metrics=body.metrics, created_by=_who(principal))  # fmt: skip
    audit(request, "benchmark-create", detail=f"benchmark {bench.id} {bench.name} ({bench.task.value})")
    return benchmark_out(bench, [])


@router.get("/api/benchmarks/evaluations/{evaluation_id}", response_model=EvaluationOut, summary="One evaluation")
def read_evaluation(_p: AiReader, evaluation_id: int,
                    service: BenchmarkService = Depends(benchmark_service)) -> EvaluationOut:  # fmt: skip
    return evaluation_out(service.evaluation(evaluation_id))


@router.get("/api/benchmarks/evaluations/{evaluation_id}/report.json", summary="The evaluation's JSON report")
def evaluation_report(principal: AiReader, evaluation_id: int,
                      service: BenchmarkService = Depends(benchmark_service)) -> Response:  # fmt: skip
    body = json.dumps(service.report(evaluation_id, role=principal.role), indent=2, sort_keys=True)
    return Response(body, media_type="application/json", headers={
        "Content-Disposition": f'attachment; filename="evaluation-{evaluation_id}.json"', "Cache-Control": "no-store"})


@router.get("/api/benchmarks/evaluations/{evaluation_id}/curves.png", summary="ROC/FROC curves (PNG)")
async def evaluation_curves(principal: AiReader, evaluation_id: int,
                            service: BenchmarkService = Depends(benchmark_service)) -> Response:  # fmt: skip
    view = await run_in_threadpool(service.evaluation, evaluation_id)
    if view.status != "done":
        raise HTTPException(409, "the evaluation has not finished")
    if not service.curves_visible(view, principal.role):
        raise HTTPException(403, "curves of vendor-hosted plugins are shown to the hospital's staff only")
    png = await run_in_threadpool(curve_png, view)
    return Response(png, media_type="image/png", headers={"Cache-Control": "private, max-age=300"})


@router.get("/api/benchmarks/evaluations/{evaluation_id}/cases", summary="Per-case outputs (admins)")
def evaluation_cases(_p: Admin, evaluation_id: int,
                     service: BenchmarkService = Depends(benchmark_service)) -> list[dict[str, Any]]:  # fmt: skip
    return [{"study_uid": c.study_uid, "label": c.label, "status": c.status, "output": c.output,
             "error": c.error or None} for c in service.case_outputs(evaluation_id)]  # fmt: skip


@router.get("/api/benchmarks/{ref}", response_model=BenchmarkOut, summary="One benchmark and its versions")
def read_benchmark(_p: AiReader, ref: str,
                   service: BenchmarkService = Depends(benchmark_service)) -> BenchmarkOut:  # fmt: skip
    return benchmark_out(service.benchmark(ref), service.versions(ref))


@router.post("/api/benchmarks/{ref}/studies", response_model=AddOut, summary="Add studies (UIDs or a query)")
def add_studies(principal: Admin, ref: str, body: StudiesIn, request: Request,
                service: BenchmarkService = Depends(benchmark_service)) -> AddOut:  # fmt: skip
    result = service.add_studies(ref, study_uids=body.study_uids, query=body.query, created_by=_who(principal))
    audit(request, "benchmark-studies", detail=f"benchmark {ref}: {result.added} added, "
          f"version {result.version.number}")  # fmt: skip
    return AddOut(version=version_out(result.version), added=result.added, already_present=result.already)


@router.post("/api/benchmarks/{ref}/labels", response_model=VersionOut, summary="Upload labels (CSV or JSON)")
async def upload_labels(principal: Admin, ref: str, request: Request,
                        format: str | None = Query(None, pattern="^(csv|json)$"),
                        service: BenchmarkService = Depends(benchmark_service)) -> VersionOut:  # fmt: skip
    body = await request.body()
    if len(body) > MAX_LABEL_BYTES:
        raise HTTPException(413, "a label file may have at most 64 MiB")
    kind = format or ("csv" if "csv" in request.headers.get("content-type", "") else "json")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise HTTPException(400, "the labels must be UTF-8 text") from None
    version = await run_in_threadpool(service.import_labels, ref, text, fmt=kind, created_by=_who(principal))
    await run_in_threadpool(audit, request, "benchmark-labels", detail=f"benchmark {ref}: version {version.number}")
    return version_out(version)


@router.post("/api/benchmarks/{ref}/split", response_model=SplitOut, summary="Split into dev and test")
def split(principal: Admin, ref: str, body: SplitIn, request: Request,
          service: BenchmarkService = Depends(benchmark_service)) -> SplitOut:  # fmt: skip
    result = service.split(ref, seed=body.seed, test_fraction=body.test_fraction, created_by=_who(principal))
    audit(request, "benchmark-split", detail=f"benchmark {ref}: version {result.version.number}, seed {body.seed}")
    return SplitOut(version=version_out(result.version), dev_published=result.published,
                    not_published=result.not_published)  # fmt: skip


@router.get("/api/benchmarks/{ref}/cases", summary="Every case with its label and split (admins)")
def read_cases(_p: Admin, ref: str, version: int | None = Query(None),
               service: BenchmarkService = Depends(benchmark_service)) -> dict[str, Any]:  # fmt: skip
    found, cases = service.cases(ref, version)
    return {"dataset_version": found.number, "dataset_digest": found.digest,
            "cases": [{"study_uid": c.study_uid, "split": c.split or None, "label": c.label, "sex": c.sex,
                       "age_band": c.age_band, "manufacturer": c.manufacturer} for c in cases]}  # fmt: skip


@router.get("/api/benchmarks/{ref}/dev", summary="The dev split, de-identified, with labels")
def read_dev(_p: AiReader, ref: str, version: int | None = Query(None),
             service: BenchmarkService = Depends(benchmark_service)) -> dict[str, Any]:  # fmt: skip
    found, cases = service.dev_split(ref, version)
    return {"dataset_version": found.number, "dataset_digest": found.digest, "dicomweb": "/dicomweb",
            "cases": [{"study_uid": c.study_uid, "label": c.label} for c in cases]}  # fmt: skip


@router.get("/api/benchmarks/{ref}/leaderboard", response_model=LeaderboardOut, summary="Leaderboard")
def read_leaderboard(_p: AiReader, ref: str,
                     version: int | None = Query(None, description="dataset version (default: newest)"),
                     service: BenchmarkService = Depends(benchmark_service)) -> LeaderboardOut:  # fmt: skip
    return leaderboard_out(*service.leaderboard(ref, version))


@router.get("/api/benchmarks/{ref}/evaluations", response_model=list[EvaluationOut], summary="Evaluations")
def list_evaluations(_p: AiReader, ref: str, version: int | None = Query(None),
                     service: BenchmarkService = Depends(benchmark_service)) -> list[EvaluationOut]:  # fmt: skip
    return [evaluation_out(v) for v in service.evaluations(ref, version)]


@router.post("/api/benchmarks/{ref}/evaluations", response_model=EvaluationOut, status_code=202,
             summary="Evaluate plugin@version on the test split")  # fmt: skip
def request_evaluation(principal: VendorOrAdmin, ref: str, body: EvaluationIn, request: Request,
                       service: BenchmarkService = Depends(benchmark_service)) -> EvaluationOut:  # fmt: skip
    view = service.evaluate(ref, body.plugin, plugin_version=body.version, version_number=body.dataset_version,
                            threshold=body.threshold, requested_by=_who(principal), requester_role=principal.role,
                            force=body.force)  # fmt: skip
    audit(request, "benchmark-evaluate", detail=f"evaluation {view.id}: {view.plugin} on {view.benchmark_name} "
          f"v{view.version_number}")  # fmt: skip
    return evaluation_out(view)


# --- pages ---------------------------------------------------------------------------------------


@router.get("/viewer/benchmarks", include_in_schema=False)
def benchmarks_page(_p: AiReader, request: Request,
                    service: BenchmarkService = Depends(benchmark_service)) -> Response:  # fmt: skip
    return render(request, "benchmarks.html", benchmarks=service.benchmarks())


@router.get("/viewer/benchmarks/evaluations/{evaluation_id}", include_in_schema=False)
def evaluation_page(principal: AiReader, request: Request, evaluation_id: int,
                    service: BenchmarkService = Depends(benchmark_service)) -> Response:  # fmt: skip
    view = service.evaluation(evaluation_id)
    curves = view.status == "done" and service.curves_visible(view, principal.role)
    summary = view.metrics.get("summary", {})
    return render(request, "evaluation.html", view=view, summary=summary, curves=curves,
                  details=_detail_rows(view.metrics))  # fmt: skip


@router.get("/viewer/benchmarks/{ref}", include_in_schema=False)
def benchmark_page(_p: AiReader, request: Request, ref: str, version: int | None = Query(None),
                   service: BenchmarkService = Depends(benchmark_service)) -> Response:  # fmt: skip
    bench = service.benchmark(ref)
    rows: list[LeaderboardRow] = []
    shown: VersionInfo | None = None
    if bench.current is not None:
        _, shown, rows = service.leaderboard(bench.id, version)
    evaluations = service.evaluations(bench.id, shown.number if shown else None)[:50] if shown else []
    versions = service.versions(bench.id)
    tr = translator_for(request)
    return render(request, "benchmark.html", bench=bench, version=shown, rows=rows, versions=versions,
                  changes={v.number: _change_words(tr, v.change) for v in versions},
                  evaluations=evaluations)  # fmt: skip


_CHANGES = (re.compile(r"added (?P<count>\d+) studies"), re.compile(r"labels for (?P<count>\d+) studies"),
            re.compile(r"split \(seed (?P<seed>-?\d+), test fraction (?P<fraction>[\d.e+-]+)\)"))


def _change_words(tr: Translator, change: str) -> str:
    """A dataset version's change (written in English by ai_plugins.benchmarks.datasets) in ``tr``'s language;
    any other text as it is."""
    added, labels, split = (pattern.fullmatch(change) for pattern in _CHANGES)
    if added:
        return tr.t("bench.change.added", **added.groupdict())
    if labels:
        return tr.t("bench.change.labels", **labels.groupdict())
    if split:
        return tr.t("bench.change.split", **split.groupdict())
    return change


def _detail_rows(metrics: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(section, metric, {value, ci_low, ci_high}) of every aggregate metric, for the report page (FROC rows:
    the false-positive rate or ``mean``, worded by the page's catalogue)."""
    out: list[tuple[str, str, dict[str, Any]]] = []
    for section in ("classification", "study_level", "segmentation"):
        for name, est in (metrics.get(section, {}).get("metrics", {}) or {}).items():
            out.append((section.replace("_", "-"), name, est))
    froc = metrics.get("froc", {})
    for rate, est in (froc.get("sensitivity_at_fp_per_scan", {}) or {}).items():
        out.append(("froc", str(rate), est))  # the page words it: "sensitivity at {rate} FP/scan"
    if froc.get("mean_sensitivity"):
        out.append(("froc", "mean", froc["mean_sensitivity"]))
    return out


def install(app: FastAPI) -> None:
    """Add the benchmark API and pages to ``app`` and map the benchmark errors to HTTP statuses."""
    STATUS_OF.update({InvalidBenchmarkData: 400, RateLimited: 429})
    app.include_router(router)
