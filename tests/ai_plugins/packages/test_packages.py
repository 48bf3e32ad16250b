"""Algorithm packages end to end, on SQLite and PostgreSQL: a vendor uploads one over HTTP, an admin
admits it with ``cloudfilm plugins admit``, a benchmark evaluation runs it sandboxed on the hidden
test split and scores exactly what the same code scores run in-process; the report and every SR
name the package's SHA-256; unadmitted packages never run; hostile packages are dead-lettered with
the reason and the archive is unharmed."""

from __future__ import annotations

import contextlib
import importlib
import io
import os
import socket
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from ai_plugins.benchmarks.datasets import get_benchmark, list_cases
from ai_plugins.benchmarks.evaluation import KINDS, compute_metrics, normalise
from ai_plugins.benchmarks.service import BenchmarkService
from ai_plugins.packages.service import PackageService, env_dir
from ai_plugins.runner.models import PluginResult
from ai_plugins.runner.registry import PluginRegistry
from ai_plugins.runner.routing import JOB_KIND, Router
from ai_plugins.runner.source import ArchiveSource
from ai_plugins.runner.worker import Worker
from ai_plugins.sandbox.run import cgroups_of
from ai_plugins.sdk import StudyInput
from pacs.access import AccessScope
from pacs.accounts.api_keys import create_api_key
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.jobs import JobQueue, JobStatus
from pacs.retrieve import find_instances, find_instances_by_sop, open_instance
from tests.ai_plugins.benchmarks.conftest import bench_settings, split_benchmark, store_cases
from tests.ai_plugins.packages import builder
from tests.cli import run_cli
from tests.factories import CtCase
from tests.pg import temporary_database
from viewer_api.app import create_app

REPO = Path(__file__).resolve().parents[3]
SECRET = "benchmark-test-secret-0123456789"


@pytest.fixture(params=["sqlite", "postgres"])
def site(request: pytest.FixtureRequest, tmp_path: Path, small_cases: list[CtCase]) -> Iterator[Archive]:
    with contextlib.ExitStack() as stack:
        overrides: dict[str, object] = {"job_max_attempts": 1, "benchmark_evals_per_day": 5}
        if request.param == "postgres":
            overrides["database_url"] = stack.enter_context(temporary_database())
        archive = stack.enter_context(Archive.open(bench_settings(tmp_path, **overrides)))
        store_cases(archive, small_cases)
        create_user(archive.engine, "acme", "vendor password 1", "vendor")
        create_user(archive.engine, "other", "vendor password 2", "vendor")
        create_user(archive.engine, "boss", "admin password 12", "admin")
        create_user(archive.engine, "doc", "doctor password 1", "physician")
        yield archive


def _key(archive: Archive, user: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {create_api_key(archive.engine, user, 'k')[1]}"}


def _cli_env(archive: Archive) -> dict[str, str]:
    return {"CLOUDFILM_DATA_DIR": str(archive.settings.data_dir), "CLOUDFILM_SECRET_KEY": SECRET,
            "CLOUDFILM_DATABASE_URL": archive.settings.resolved_database_url, "PYTHONPATH": str(REPO)}  # fmt: skip


def _run(archive: Archive, done: Callable[[], bool], kinds: tuple[str, ...], timeout: float = 300) -> None:
    worker = Worker(archive, concurrency=2, kinds=kinds)
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the worker did not finish in time"
            time.sleep(0.2)
    finally:
        worker.stop()


def test_upload_admit_evaluate_sandboxed(site: Archive, small_cases: list[CtCase]) -> None:
    archive = site
    benchmarked, clinical = small_cases[:-1], small_cases[-1]
    service = BenchmarkService(archive, use_entry_points=False)
    bench_id = split_benchmark(service, benchmarked, seed=3)
    vendor, doctor = _key(archive, "acme"), _key(archive, "doc")
    data = builder.package()
    with TestClient(create_app(archive)) as client:
        path = "/api/plugins/packages?filename=acme-detector-1.0.zip"
        assert client.post(path, content=data, headers=doctor).status_code == 403
        bad = client.post(path, content=builder.package(with_manifest=False), headers=vendor)
        assert bad.status_code == 400 and "has no cloudfilm-package.toml at its root" in bad.text
        up = client.post(path, content=data, headers=vendor)
        assert up.status_code == 201, up.text
        digest = up.json()["sha256"]
        assert up.json()["status"] == "uploaded" and up.json()["manifest"]["resources"]["memory_mb"] == 2048
        assert client.post(path, content=data, headers=vendor).status_code == 200  # the same file again
        changed = client.post(path, content=builder.package(code="# other\n"), headers=vendor)
        assert changed.status_code == 409 and "upload a new version" in changed.text
        assert client.post(path, content=data, headers=_key(archive, "other")).status_code == 409  # not its name
        # unadmitted: nothing to evaluate, nothing to run
        evaluations = f"/api/benchmarks/{bench_id}/evaluations"
        assert client.post(evaluations, json={"plugin": "acme-detector"}, headers=vendor).status_code == 404
        assert client.post("/api/plugins/packages/acme-detector/1.0/admit", headers=vendor).status_code == 403
    assert not env_dir(archive.settings, digest).exists()
    admitted = run_cli("plugins", "admit", "acme-detector", "1.0", env=_cli_env(archive))
    assert admitted.returncode == 0 and f"sha256 {digest}" in admitted.stdout, admitted.stderr
    with TestClient(create_app(archive)) as client:
        requested = client.post(evaluations, json={"plugin": "acme-detector"}, headers=vendor)
        assert requested.status_code == 202, requested.text
        evaluation_id = requested.json()["id"]
        assert requested.json()["plugin_source"] == "package" and requested.json()["plugin_sha256"] == digest
    _run(archive, lambda: service.evaluation(evaluation_id).finished, KINDS)
    view = service.evaluation(evaluation_id)
    assert view.status == "done" and view.n_failed == 0, service.case_outputs(evaluation_id)
    with TestClient(create_app(archive)) as client:
        report = client.get(f"/api/benchmarks/evaluations/{evaluation_id}/report.json", headers=vendor).json()
        assert report["plugin"] == {"name": "acme-detector", "version": "1.0", "source": "package", "sha256": digest}
        assert client.get(f"/api/benchmarks/evaluations/{evaluation_id}/cases", headers=vendor).status_code == 403

    # the same code, in-process (imported from the admitted environment), scores exactly the same
    sys.path.insert(0, str(env_dir(archive.settings, digest)))
    try:
        detector = importlib.import_module("acme_detector").Detector
        bench = get_benchmark(archive.engine, view.benchmark_id)
        rows = []
        for case in sorted(list_cases(archive.engine, view.version_id, split="test"), key=lambda c: c.study_uid):
            study = StudyInput(case.study_uid, ArchiveSource(archive.engine, archive.store, case.study_uid))
            output = normalise(bench.task, bench.schema, detector().run(study), label=case.label)
            rows.append((case.label or {}, output, {"sex": case.sex, "age_band": case.age_band,
                                                    "manufacturer": case.manufacturer}))  # fmt: skip
        in_process = compute_metrics(bench, rows, threshold=view.threshold, seed=view.seed,
                                     n_boot=archive.settings.benchmark_bootstrap)  # fmt: skip
    finally:
        sys.path.remove(str(env_dir(archive.settings, digest)))
        for name in ("acme_detector", "acme_util"):
            sys.modules.pop(name, None)
    assert {k: v for k, v in view.metrics.items() if k != "n_failed"} == in_process
    assert len({out["score"] for _, out, _ in rows}) == len(rows)  # real, case-specific answers were compared
    assert view.metrics["study_level"]["metrics"]["auc"]["value"] is not None

    # on a clinical study (an admin enabled it): the SR the archive writes names the package's digest
    registry = PluginRegistry(archive.engine, use_entry_points=False)
    registry.set_enabled("acme-detector", "1.0", True)
    queue = JobQueue(archive.engine)
    job, _ = Router(registry).rerun(archive.engine, queue, clinical.study_uid, "acme-detector", requested_by="doc")
    test_uid = sorted(c.study_uid for c in service.cases(bench_id)[1] if c.split == "test")[0]
    on_test, _ = Router(registry).rerun(archive.engine, queue, test_uid, "acme-detector", requested_by="doc")
    _run(archive, lambda: all(queue.get(j).status in (JobStatus.SUCCEEDED, JobStatus.FAILED)
                              for j in (job.id, on_test.id)), (JOB_KIND,))  # fmt: skip
    with TestClient(create_app(archive)) as client:  # the vendor sees its clinical job, not its run on a test case
        listed = {j["id"] for j in client.get("/api/jobs", headers=vendor).json()}
        assert listed == {job.id}
        assert client.get(f"/api/jobs/{on_test.id}", headers=vendor).status_code == 404
        assert test_uid not in client.get("/api/jobs?limit=1000", headers=vendor).text
        assert {j["id"] for j in client.get("/api/jobs", headers=_key(archive, "boss")).json()} == {job.id, on_test.id}
    assert JobQueue(archive.engine).get(job.id).status is JobStatus.SUCCEEDED, JobQueue(archive.engine).get(job.id)
    with archive.engine.connect() as conn:
        sops = list(conn.execute(select(PluginResult.sop_uid).where(PluginResult.job_id == job.id)).scalars())
    [sr] = find_instances_by_sop(archive.engine, AccessScope.studies(clinical.study_uid), sops)
    with open_instance(archive.store, sr) as fh:
        data = fh.read()
    assert pydicom.dcmread(io.BytesIO(data)).Modality == "SR"
    assert f"sha256:{digest}".encode() in data  # TID 4019 Algorithm Parameters of every measurement group


@pytest.mark.parametrize("site", ["sqlite"], indirect=True)
def test_hostile_packages_are_dead_lettered_and_the_archive_is_unharmed(site: Archive,
                                                                         small_cases: list[CtCase]) -> None:
    archive = site
    small = {"memory_mb": 768, "cpu_s": 2, "wall_s": 6, "scratch_mb": 8}
    key_file = archive.settings.data_dir / "secret_key"
    key_file.write_text("the archive's own key material 0123456789")
    hostile = {
        "net-db": ("import socket\nsocket.create_connection(('127.0.0.1', 5432), timeout=3)", ("Connection refused",)),
        "net-out": ("import socket\nsocket.create_connection(('1.1.1.1', 443), timeout=3)", ("unreachable",)),
        "reader": (f"open({str(archive.settings.data_dir / 'index.sqlite3')!r}, 'rb').read()", ("FileNotFoundError",)),
        "key": (f"open({str(key_file)!r}).read()", ("FileNotFoundError",)),
        "shadow": ("open('/etc/shadow').read()", ("FileNotFoundError",)),
        "forker": ("import os\nwhile True:\n    try:\n        os.fork()\n    except OSError:\n        pass",
                   ("stopped", "SIGXCPU", "SIGKILL")),
        "hog": ("hog = bytearray(64 << 30)", ("ran out of memory (limit 768 MiB)",)),
        "spinner": ("while True:\n    pass", ("SIGXCPU (CPU time limit 2 s)",)),
        "filler": ("with open('/scratch/f', 'wb') as fh:\n    for _ in range(10240):\n"
                   "        fh.write(b'x' * (1 << 20))",
                   ("File too large", "No space left")),
    }  # fmt: skip
    packages = PackageService(archive)
    for name, (body, _) in hostile.items():
        packages.upload(builder.hostile(f"evil-{name}", body, small), filename=f"{name}.zip", uploaded_by="acme")
        packages.admit(f"evil-{name}", "1.0", admitted_by="boss")
    registry = PluginRegistry(archive.engine, use_entry_points=False)
    queue = JobQueue(archive.engine)
    study = small_cases[0].study_uid
    jobs = {}
    for name in hostile:
        registry.set_enabled(f"evil-{name}", "1.0", True)
        jobs[name] = Router(registry).rerun(archive.engine, queue, study, f"evil-{name}", requested_by="doc")[0].id
    instances = len(find_instances(archive.engine, AccessScope.studies(study), study_uid=study))
    _run(archive, lambda: all(queue.get(j).status in (JobStatus.SUCCEEDED, JobStatus.FAILED) for j in jobs.values()),
         (JOB_KIND,), timeout=240)  # fmt: skip
    for name, job_id in jobs.items():
        job = queue.get(job_id)
        assert job.status is JobStatus.FAILED and job.attempts == 1, (name, job)  # dead-lettered at once
        assert any(reason in job.error for reason in hostile[name][1]), (name, job.error)
    # the archive is unharmed: its key, its index and studies, its database server; nothing was stored
    assert key_file.read_text() == "the archive's own key material 0123456789"
    assert len(find_instances(archive.engine, AccessScope.studies(study), study_uid=study)) == instances
    with archive.engine.connect() as conn:
        assert conn.execute(select(PluginResult.id)).first() is None
    with socket.create_connection(("127.0.0.1", 5432), timeout=5):
        pass
    assert cgroups_of(os.getpid()) == []  # this process's sandboxes (the other pytest worker may run its own)


@pytest.mark.parametrize("site", ["sqlite"], indirect=True)
def test_package_code_is_never_imported_outside_the_sandbox(site: Archive, monkeypatch: pytest.MonkeyPatch) -> None:
    """The worker warms its fork server with installed plugins' modules, never a package's."""
    packages = PackageService(site)
    packages.upload(builder.package(), filename="p.zip", uploaded_by="acme")
    packages.admit("acme-detector", "1.0", admitted_by="boss")
    warmed: list[str] = []
    monkeypatch.setattr("ai_plugins.runner.worker.preload", warmed.extend)
    Worker(site, concurrency=1, kinds=(JOB_KIND,))._prepare()
    assert warmed and "acme_detector" not in warmed
    assert "acme_detector" not in sys.modules
