"""Evaluations through the job queue: scoring, reproducibility, failures, rate limits, every task."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import pytest
from fastapi.testclient import TestClient
from sklearn.metrics import confusion_matrix, f1_score, roc_auc_score
from sqlalchemy import update

from ai_plugins.benchmarks.errors import RateLimited
from ai_plugins.benchmarks.evaluation import CASE_KIND, KINDS, EvaluationView
from ai_plugins.benchmarks.service import BenchmarkService
from ai_plugins.packages.service import PackageService
from ai_plugins.runner.registry import PluginRegistry, RemoteManifest
from ai_plugins.runner.worker import Worker
from ai_plugins.sdk import StudyInput
from pacs.accounts.errors import Forbidden
from pacs.archive import Archive
from pacs.errors import Conflict
from pacs.jobs import Job, JobQueue, JobStatus
from tests.ai_plugins.benchmarks.conftest import bench_settings, split_benchmark, store_cases
from tests.ai_plugins.benchmarks.plugins import FailingPlugin, RandomPlugin
from tests.ai_plugins.packages.builder import package
from tests.factories import CtCase
from tests.pg import temporary_database
from viewer_api.app import create_app

EXTRA = (RandomPlugin, FailingPlugin)


@pytest.fixture
def lesions(request: pytest.FixtureRequest, tmp_path: Path,
            small_cases: list[CtCase]) -> Iterator[tuple[Archive, BenchmarkService, int]]:  # fmt: skip
    """A detection benchmark of the twelve studies, labelled and split (6 dev, 6 test); SQLite unless
    the test asks for PostgreSQL (``indirect`` parameter)."""
    backend = getattr(request, "param", "sqlite")
    with contextlib.ExitStack() as stack:
        overrides: dict[str, object] = {"benchmark_evals_per_day": 3, "job_max_attempts": 1}
        if backend == "postgres":
            overrides["database_url"] = stack.enter_context(temporary_database())
        archive = stack.enter_context(Archive.open(bench_settings(tmp_path, **overrides)))
        store_cases(archive, small_cases)
        service = BenchmarkService(archive, extra_plugins=EXTRA)
        yield archive, service, split_benchmark(service, small_cases, seed=3)


def run_all(archive: Archive, service: BenchmarkService, ids: Sequence[int],
            timeout: float = 180) -> list[EvaluationView]:
    worker = Worker(archive, concurrency=2, kinds=KINDS, extra_plugins=EXTRA)
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while not all(service.evaluation(i).finished for i in ids):
            assert time.monotonic() < deadline, [service.evaluation(i) for i in ids]
            time.sleep(0.2)
    finally:
        worker.stop()
    return [service.evaluation(i) for i in ids]


@pytest.mark.parametrize("lesions", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True)
def test_evaluations_score_the_test_split_and_reproduce_exactly(lesions: tuple[Archive, BenchmarkService, int]) -> None:
    archive, service, bench = lesions
    first = service.evaluate(bench, "lesion-detector", requested_by="admin", requester_role="admin")
    random = service.evaluate(bench, "test-random", requested_by="admin", requester_role="admin")
    again = service.evaluate(bench, "lesion-detector", requested_by="admin", requester_role="admin")
    assert first.n_cases == 6 and first.status == "running" and first.cloudfilm_version
    first, random, again = run_all(archive, service, [first.id, random.id, again.id])
    assert [v.status for v in (first, random, again)] == ["done"] * 3, [v.error for v in (first, random, again)]
    assert first.n_failed == 0 and first.main_metric == "froc_mean_sensitivity"
    assert first.main_value is not None and random.main_value is not None
    assert first.main_value > 0.8 > random.main_value
    assert again.metrics == first.metrics and (again.main_value, again.ci_low, again.ci_high) == (
        first.main_value, first.ci_low, first.ci_high)  # the same numbers, to the last digit
    assert first.seed == again.seed and first.version_digest == again.version_digest
    _, _, rows = service.leaderboard(bench)
    assert [r.plugin for r in rows] == ["lesion-detector@1.0.0", "test-random@1.0"]
    assert rows[0].evaluation_id == again.id  # the newest evaluation of each plugin version
    # jobs went through the queue, without naming the test studies
    jobs = JobQueue(archive.engine).list_jobs(kind=CASE_KIND, limit=100)
    assert len(jobs) == 18 and {j.status for j in jobs} == {JobStatus.SUCCEEDED} and {j.study_uid for j in jobs} == {""}
    # the stored metrics are scikit-learn's on the same per-case inputs
    cases = service.case_outputs(first.id)
    y = np.array([bool(c.label and c.label["lesions"]) for c in cases])
    s = np.array([c.output["score"] for c in cases])
    level = first.metrics["study_level"]
    if 0 < y.sum() < y.size:
        assert level["metrics"]["auc"]["value"] == pytest.approx(roc_auc_score(y, s), abs=1e-6)
    tn, fp, fn, tp = confusion_matrix(y, s >= 0.5, labels=[False, True]).ravel()
    assert level["confusion"] == {"tp": tp, "fp": fp, "tn": tn, "fn": fn}
    assert level["metrics"]["f1"]["value"] == pytest.approx(f1_score(y, s >= 0.5), abs=1e-6)
    assert first.metrics["froc"]["n_lesions"] == int(y.sum())


def test_failed_cases_count_as_missed_and_the_evaluation_still_ends(lesions: tuple[Archive, BenchmarkService, int]
                                                                     ) -> None:  # fmt: skip
    archive, service, bench = lesions
    failing = service.evaluate(bench, "test-fails", requested_by="admin", requester_role="admin")
    random = service.evaluate(bench, "test-random", requested_by="admin", requester_role="admin")
    with archive.engine.begin() as conn:  # one case's job was dead-lettered by a lease reaper
        conn.execute(update(Job).where(Job.id == min(j.id for j in JobQueue(archive.engine).list_jobs(
            kind=CASE_KIND, limit=100) if j.payload["evaluation"] == random.id)).values(
            status=JobStatus.FAILED.value, error="the worker stopped during attempt 1 (lease expired)"))  # fmt: skip
    failing, random = run_all(archive, service, [failing.id, random.id])
    assert failing.status == "done" and failing.n_failed == 6 and failing.main_value == 0.0
    assert random.status == "done" and random.n_failed == 1
    errors = {c.error for c in service.case_outputs(failing.id)}
    assert errors == {"RuntimeError: synthetic failure on a benchmark case"}


def test_who_may_evaluate_and_how_often(lesions: tuple[Archive, BenchmarkService, int]) -> None:
    archive, service, bench = lesions
    for _ in range(3):
        service.evaluate(bench, "test-random", requested_by="admin", requester_role="admin")
    with pytest.raises(RateLimited, match=r"evaluated 3 times on lesions in the last 24 hours \(at most 3\)"):
        service.evaluate(bench, "test-random", requested_by="admin", requester_role="admin")
    forced = service.evaluate(bench, "test-random", requested_by="admin", requester_role="admin", force=True)
    assert forced.status == "running"
    with pytest.raises(Forbidden, match="only the plugins it registered"):
        service.evaluate(bench, "lesion-detector", requested_by="acme", requester_role="vendor")
    with pytest.raises(Forbidden):
        service.evaluate(bench, "lesion-detector", requested_by="pat", requester_role="patient")
    manifest = RemoteManifest(name="acme-cad", version="2.0", vendor="Acme", endpoint_url="http://127.0.0.1:9/jobs",
                              input_filter={"modalities": ["CT"]})  # type: ignore[arg-type]
    registry = PluginRegistry(archive.engine, extra=EXTRA)
    registry.register_remote(manifest, registered_by="acme")
    for enabled in (False, True):  # enabled for clinical studies or not, a hosted plugin never sees a test case
        registry.set_enabled("acme-cad", "2.0", enabled)
        for who, role in (("acme", "vendor"), ("admin", "admin")):
            with pytest.raises(Conflict, match="hidden test cases never leave the archive"):
                service.evaluate(bench, "acme-cad", requested_by=who, requester_role=role, force=True)
    assert {e.plugin for e in service.evaluations(bench)} == {"test-random@1.0"}
    # an algorithm package the vendor uploaded (admitted here, run in the sandbox) is its own to evaluate
    packages = PackageService(archive)
    for version in ("2.0", "2.1"):
        packages.upload(package("acme-detector", version), filename="p.zip", uploaded_by="acme")
        packages.admit("acme-detector", version, admitted_by="admin")
    own = service.evaluate(bench, "acme-detector", plugin_version="2.0", requested_by="acme", requester_role="vendor")
    assert own.plugin == "acme-detector@2.0" and own.plugin_source == "package" and own.n_cases == 6
    assert own.plugin_digest == packages.get("acme-detector", "2.0").digest
    for _ in range(2):  # another version of the package shares its limit
        service.evaluate(bench, "acme-detector", plugin_version="2.1", requested_by="acme", requester_role="vendor")
    with pytest.raises(RateLimited):  # and a vendor cannot force its way past it
        service.evaluate(bench, "acme-detector", requested_by="acme", requester_role="vendor", force=True)
    with pytest.raises(Forbidden, match="only the plugins it registered"):  # nor evaluate another vendor's
        service.evaluate(bench, "acme-detector", requested_by="other", requester_role="vendor")


def _sphere_mask(case: CtCase) -> tuple[str, np.ndarray]:
    series = StudyInput.from_datasets(case.datasets).series[0]
    volume = series.volume
    if case.lesion is None:
        return series.series_uid, np.zeros(volume.shape, dtype=bool)
    points = volume.index_to_patient(np.moveaxis(np.indices(volume.shape), 0, -1))
    distance = np.linalg.norm(points - np.asarray(case.lesion.center_mm), axis=-1)
    return series.series_uid, distance <= case.lesion.radius_mm


def test_classification_and_segmentation_benchmarks(tmp_path: Path, small_cases: list[CtCase]) -> None:
    from ai_plugins.benchmarks.labels import encode_mask

    with Archive.open(bench_settings(tmp_path, auth_disabled=True)) as archive:
        store_cases(archive, small_cases)
        service = BenchmarkService(archive, extra_plugins=EXTRA)
        uids = [c.study_uid for c in small_cases]
        cls = service.create(name="lesion present", task="classification", created_by="admin")
        service.add_studies(cls.id, study_uids=uids, created_by="admin")
        labels = [{"study_uid": c.study_uid, "label": "positive" if c.lesion else "negative"} for c in small_cases]
        service.import_labels(cls.id, json.dumps(labels), fmt="json", created_by="admin")
        service.split(cls.id, seed=5, test_fraction=0.5, created_by="admin")
        seg = service.create(name="lesion masks", task="segmentation", created_by="admin")
        service.add_studies(seg.id, study_uids=uids, created_by="admin")
        masks = []
        for case in small_cases:
            series_uid, mask = _sphere_mask(case)
            masks.append({"study_uid": case.study_uid, "series_uid": series_uid, "mask": encode_mask(mask)})
        version = service.import_labels(seg.id, json.dumps(masks), fmt="json", created_by="admin")
        _, cases = service.cases(seg.id, version.number)
        assert all(c.label and len(c.label["spacing_mm"]) == 3 for c in cases)  # taken from the series' headers
        service.split(seg.id, seed=5, test_fraction=0.5, created_by="admin")
        ids = [service.evaluate(b, "lesion-detector", requested_by="admin", requester_role="admin").id
               for b in (cls.id, seg.id)]  # fmt: skip
        classified, segmented = run_all(archive, service, ids)
        app = create_app(archive)
        app.state.benchmark_service = service
        with TestClient(app) as client:  # the pages and figures of every task render
            assert "lesion masks" in client.get("/viewer/benchmarks").text
            for path in (f"/viewer/benchmarks/{cls.id}", f"/viewer/benchmarks/{seg.id}",
                         *(f"/viewer/benchmarks/evaluations/{i}" for i in ids)):  # fmt: skip
                page = client.get(path)
                assert page.status_code == 200 and "lesion-detector@1.0.0" in page.text, path
            for i in ids:
                png = client.get(f"/api/benchmarks/evaluations/{i}/curves.png")
                assert png.status_code == 200 and png.content.startswith(b"\x89PNG")
            board = client.get(f"/api/benchmarks/{cls.id}/leaderboard").json()
            assert board["rows"][0]["plugin"] == "lesion-detector@1.0.0" and board["metric"] == "auc"
    assert classified.status == "done" and classified.main_metric == "auc"
    assert classified.main_value is not None and classified.main_value >= 0.8
    assert set(classified.metrics["classification"]["subgroups"]) == {"sex", "age_band", "manufacturer"}
    assert segmented.status == "done" and segmented.main_metric == "dice", segmented.error
    dice = segmented.metrics["segmentation"]["metrics"]["dice"]
    assert dice["value"] is not None and dice["value"] > 0.5 and dice["ci_low"] <= dice["value"] <= dice["ci_high"]
    assert segmented.metrics["summary"]["hd95"]["value"] is not None
