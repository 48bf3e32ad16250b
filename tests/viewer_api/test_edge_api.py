"""The edge job API (issue 15) in process: who may call it, what a lease hands over, and why a result
posted twice, late or in another worker's name never makes a second SR.

The edge worker's side here is plain HTTP with the findings computed in the test (the end-to-end
test, ``tests/e2e/test_edge_worker.py``, runs the real ``cloudfilm worker --archive`` process)."""

from __future__ import annotations

import io
import json
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydicom
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import insert, select

from ai_plugins.benchmarks.evaluation import CASE_KIND
from ai_plugins.benchmarks.models import BenchmarkCaseRow, BenchmarkRow, BenchmarkVersionRow
from ai_plugins.edge.source import split_multipart
from ai_plugins.runner.models import PluginResult
from ai_plugins.runner.results import ResultUids
from ai_plugins.runner.routing import JOB_KIND
from ai_plugins.runner.service import PluginService
from ai_plugins.runner.worker import Worker
from ai_plugins.sdk import StudyInput
from pacs.accounts.api_keys import create_api_key
from pacs.accounts.edge_workers import add_edge_worker, revoke_edge_worker
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.jobs import JobQueue, JobSpec, JobStatus, dedupe_key
from pacs.settings import Settings
from tests.ai_plugins.sample_plugins import CT_FILTER, EchoPlugin, report
from tests.factories import PATIENTS, make_ct_study, to_bytes
from viewer_api.app import create_app

ECHO = [{"name": "test-echo", "version": "1.0"}]
SR_PREFIX = "1.2.840.10008.5.1.4.1.1.88."


@dataclass
class Site:
    archive: Archive
    client: TestClient
    edge: dict[str, str]  # name -> token
    admin_key: str
    studies: list[list[pydicom.Dataset]]

    def as_edge(self, name: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.edge[name]}"}

    def enqueue(self, study: int, target: str = "test-echo", kind: str = JOB_KIND) -> int:
        uid = str(self.studies[study][0].StudyInstanceUID)
        job_id = JobQueue(self.archive.engine).enqueue(JobSpec(
            kind=kind, dedupe_key=dedupe_key(kind, target, uid), target=target, target_version="1.0",
            study_uid=uid, max_attempts=3, timeout_s=60))  # fmt: skip
        assert job_id is not None
        return job_id

    def lease(self, name: str, worker: str = "t:1:0") -> dict[str, Any] | None:
        response = self.client.post("/api/edge/jobs/lease", headers=self.as_edge(name),
                                    json={"worker_id": worker, "plugins": ECHO})  # fmt: skip
        assert response.status_code == 200, response.text
        job: dict[str, Any] | None = response.json()["job"]
        return job

    def findings(self, study: int) -> dict[str, Any]:
        found = report(StudyInput.from_datasets(self.studies[study]), CT_FILTER)
        return dict(json.loads(found.to_json()))

    def srs(self, study: int) -> list[str]:
        uid = self.studies[study][0].StudyInstanceUID
        response = self.client.get(f"/dicomweb/studies/{uid}/instances", params={"includefield": "00080016"},
                                   headers={"Authorization": f"Bearer {self.admin_key}"})  # fmt: skip
        assert response.status_code == 200, response.text
        return [i["00080018"]["Value"][0] for i in response.json()
                if i["00080016"]["Value"][0].startswith(SR_PREFIX)]  # fmt: skip


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    settings = Settings(data_dir=tmp_path / "data", http_port=0, dicom_port=0, job_lease=1.0,
                        edge_plugins=["test-echo"], secret_key=SecretStr("edge-api-test-secret-0123"))  # fmt: skip
    with Archive.open(settings) as archive:
        create_user(archive.engine, "ada", "correct horse battery", "admin")
        admin_key = create_api_key(archive.engine, "ada", "test")[1]
        edge = {name: add_edge_worker(archive.engine, name, created_by="ada")[1] for name in ("ward-a", "ward-b")}
        studies = [make_ct_study(PATIENTS[i], n_slices=4, rows=32, cols=32, seed=8200 + i) for i in range(3)]
        for datasets in studies:
            for ds in datasets:
                assert archive.ingest.store_bytes(to_bytes(ds)).ok
        app = create_app(archive)
        service = PluginService(archive, extra_plugins=[EchoPlugin], use_entry_points=False)
        service.registry.sync()
        app.state.plugin_service = service
        with TestClient(app) as client:
            yield Site(archive, client, edge, admin_key, studies)


def test_a_lease_hands_over_the_study_and_the_findings_become_one_sr(site: Site) -> None:
    assert site.lease("ward-a") is None  # nothing queued
    job_id = site.enqueue(0)
    grant = site.lease("ward-a")
    assert grant is not None and grant["job_id"] == job_id and grant["attempt"] == 1
    assert grant["plugin"] == "test-echo" and grant["lease_s"] == 1.0
    [series] = grant["series"]
    assert series["modality"] == "CT" and series["n_instances"] == 4
    assert site.lease("ward-b") is None  # held

    # the job token reads its study over WADO-RS, and nothing else
    token = {"Authorization": f"Bearer {grant['token']}"}
    retrieved = site.client.get(f"/dicomweb/studies/{grant['study_uid']}/series/{series['series_uid']}",
                                headers={**token, "Accept": 'multipart/related; type="application/dicom"'})
    assert retrieved.status_code == 200
    parts = split_multipart(retrieved.headers["content-type"], retrieved.content)
    assert sorted(pydicom.dcmread(io.BytesIO(p)).SOPInstanceUID for p in parts) == \
        sorted(ds.SOPInstanceUID for ds in site.studies[0])
    other = site.studies[1][0].StudyInstanceUID
    assert site.client.get(f"/dicomweb/studies/{other}", headers=token).status_code == 403

    held = {"worker_id": "t:1:0", "attempt": 1}
    beat = site.client.post(f"/api/edge/jobs/{job_id}/heartbeat", headers=site.as_edge("ward-a"),
                            json={**held, "progress": 0.5, "message": "halfway"})  # fmt: skip
    assert beat.status_code == 204
    # another edge worker cannot beat, finish or fail it: the lease names its credential
    for action, extra in (("heartbeat", {}), ("complete", {"findings": site.findings(0)}), ("fail", {"error": "x"})):
        stolen = site.client.post(f"/api/edge/jobs/{job_id}/{action}", headers=site.as_edge("ward-b"),
                                  json={**held, **extra})  # fmt: skip
        assert stolen.status_code == 409, (action, stolen.text)

    done = site.client.post(f"/api/edge/jobs/{job_id}/complete", headers=site.as_edge("ward-a"),
                            json={**held, "findings": site.findings(0)})  # fmt: skip
    assert done.status_code == 200, done.text
    objects = done.json()["objects"]
    uids = ResultUids.for_job(dedupe_key(JOB_KIND, "test-echo", site.studies[0][0].StudyInstanceUID))
    assert {o["kind"] for o in objects} == {"SR", "SEG"}
    assert [o["sop_instance_uid"] for o in objects if o["kind"] == "SR"] == [uids.sr_instance] == site.srs(0)
    assert JobQueue(site.archive.engine).get(job_id).status is JobStatus.SUCCEEDED

    # posted again (a retry after a lost answer): refused, nothing new
    again = site.client.post(f"/api/edge/jobs/{job_id}/complete", headers=site.as_edge("ward-a"),
                             json={**held, "findings": site.findings(0)})  # fmt: skip
    assert again.status_code == 409
    assert site.srs(0) == [uids.sr_instance]
    with site.archive.engine.connect() as conn:
        assert len(conn.execute(select(PluginResult.sop_uid).where(PluginResult.job_id == job_id)).all()) == 2


def test_an_expired_lease_goes_to_the_next_worker_and_the_late_result_is_refused(site: Site) -> None:
    job_id = site.enqueue(1)
    first = site.lease("ward-a", "a:1:0")
    assert first is not None
    time.sleep(1.3)  # ward-a stalls past its 1 s lease
    second = site.lease("ward-b", "b:1:0")
    assert second is not None and second["job_id"] == job_id and second["attempt"] == 2
    late = {"worker_id": "a:1:0", "attempt": 1}
    assert site.client.post(f"/api/edge/jobs/{job_id}/heartbeat", headers=site.as_edge("ward-a"),
                            json=late).status_code == 409  # fmt: skip
    refused = site.client.post(f"/api/edge/jobs/{job_id}/complete", headers=site.as_edge("ward-a"),
                               json={**late, "findings": site.findings(1)})  # fmt: skip
    assert refused.status_code == 409
    assert site.srs(1) == []  # the late result wrote nothing
    done = site.client.post(f"/api/edge/jobs/{job_id}/complete", headers=site.as_edge("ward-b"),
                            json={"worker_id": "b:1:0", "attempt": 2, "findings": site.findings(1)})  # fmt: skip
    assert done.status_code == 200, done.text
    assert len(site.srs(1)) == 1
    view = JobQueue(site.archive.engine).get(job_id)
    assert view.status is JobStatus.SUCCEEDED and view.attempts == 2


def test_findings_off_the_schema_fail_the_attempt_without_a_retry(site: Site) -> None:
    job_id = site.enqueue(0)
    assert site.lease("ward-a") is not None
    bad = site.client.post(f"/api/edge/jobs/{job_id}/complete", headers=site.as_edge("ward-a"),
                           json={"worker_id": "t:1:0", "attempt": 1,
                                 "findings": {"classifications": [{"probability": 7}]}})  # fmt: skip
    assert bad.status_code == 422
    assert bad.json()["status"] == "failed" and "cannot be stored" in bad.json()["error"]
    assert JobQueue(site.archive.engine).get(job_id).status is JobStatus.FAILED
    assert site.srs(0) == []


def test_a_failed_attempt_is_retried_and_a_released_one_is_not_counted(site: Site) -> None:
    job_id = site.enqueue(0)
    assert site.lease("ward-a") is not None
    failed = site.client.post(f"/api/edge/jobs/{job_id}/fail", headers=site.as_edge("ward-a"),
                              json={"worker_id": "t:1:0", "attempt": 1, "error": "out of GPU memory"})  # fmt: skip
    assert failed.status_code == 200 and failed.json()["status"] == "retrying"
    view = JobQueue(site.archive.engine).get(job_id)
    assert "ward-a" in view.error and "out of GPU memory" in view.error

    other = site.enqueue(1)
    assert site.lease("ward-a")["job_id"] == other  # type: ignore[index]
    released = site.client.post(f"/api/edge/jobs/{other}/release", headers=site.as_edge("ward-a"),
                                json={"worker_id": "t:1:0", "attempt": 1})  # fmt: skip
    assert released.status_code == 200
    again = site.lease("ward-b")
    assert again is not None and again["job_id"] == other and again["attempt"] == 1


def test_hidden_test_cases_never_leave_for_an_edge_worker(site: Site) -> None:
    """A clinical run on a benchmark test case, and a benchmark case job, are never leased to an edge
    worker; the archive's own worker still runs the clinical one, even with the plugin left to edge workers."""
    test_case = str(site.studies[2][0].StudyInstanceUID)
    now = utcnow()
    with site.archive.engine.begin() as conn:
        bench = conn.execute(insert(BenchmarkRow).values(name="b", task="classification", created_at=now,
                                                         updated_at=now).returning(BenchmarkRow.id)).scalar_one()
        version = conn.execute(insert(BenchmarkVersionRow).values(
            benchmark_fk=bench, number=1, digest="d", created_at=now).returning(BenchmarkVersionRow.id)).scalar_one()
        conn.execute(insert(BenchmarkCaseRow).values(version_fk=version, study_uid=test_case, split="test",
                                                     label_json="{}"))  # fmt: skip
    clinical_on_test_case = site.enqueue(2)
    site.enqueue(2, kind=CASE_KIND)
    assert site.lease("ward-a") is None

    # the archive's own worker (EDGE_PLUGINS names test-echo) takes the test case's run, not the other one
    edge_job = site.enqueue(0)
    own = Worker(site.archive, concurrency=0, kinds=[JOB_KIND], extra_plugins=[EchoPlugin], use_entry_points=False)
    assert [j.id for j in own._claim("local:1:0", [JOB_KIND])] == [clinical_on_test_case]
    assert own._claim("local:1:0", [JOB_KIND]) == []
    leased = site.lease("ward-a")
    assert leased is not None and leased["job_id"] == edge_job


def test_edge_tokens_reach_only_the_edge_routes_and_revocation_is_immediate(site: Site) -> None:
    headers = site.as_edge("ward-a")
    study = site.studies[0][0].StudyInstanceUID
    for path in ("/dicomweb/studies", "/api/jobs", "/api/plugins", f"/dicomweb/studies/{study}"):
        assert site.client.get(path, headers=headers).status_code == 403, path
    admin = {"Authorization": f"Bearer {site.admin_key}"}
    lease = {"worker_id": "x", "plugins": []}
    assert site.client.post("/api/edge/jobs/lease", headers=admin, json=lease).status_code == 403
    revoke_edge_worker(site.archive.engine, "ward-a")
    assert site.client.post("/api/edge/jobs/lease", headers=headers,
                            json={"worker_id": "x", "plugins": ECHO}).status_code == 401  # fmt: skip
