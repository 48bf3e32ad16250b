"""Hidden test cases never leave: a vendor-hosted plugin is refused for a test-split evaluation (API
409, CLI error, the same sentence), and a recording stub endpoint (a real HTTP server) proves that no
path sends it a test case — not a request, not a re-run, not a stable transition, not a case job of
an evaluation queued before the rule — while the same plugin does run on a clinical study outside
the benchmark. Its job token opens no test case and no test copy."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from datetime import timedelta
from http.server import ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
import uvicorn
from sqlalchemy import select, update

from ai_plugins.benchmarks.copies import ensure_copy
from ai_plugins.benchmarks.evaluation import CASE_KIND, KINDS
from ai_plugins.benchmarks.models import EvaluationRow
from ai_plugins.benchmarks.service import BenchmarkService
from ai_plugins.benchmarks.visibility import HOSTED_REFUSAL
from ai_plugins.runner.registry import PluginRegistry, RemoteManifest
from ai_plugins.runner.routing import JOB_KIND, Router
from ai_plugins.runner.tokens import issue_job_token
from ai_plugins.runner.worker import Worker
from ai_plugins.sdk import Classification, Findings, codes
from pacs.accounts.api_keys import create_api_key
from pacs.accounts.keys import secret_key
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.index.models import Study
from pacs.jobs import Job, JobQueue, JobSpec, JobStatus, dedupe_key, enqueue, write_transaction
from pacs.stability import StableStudy
from tests.ai_plugins.benchmarks.conftest import bench_settings, split_benchmark, store_cases
from tests.ai_plugins.benchmarks.plugins import RandomPlugin
from tests.cli import run_cli
from tests.factories import CtCase
from tests.net import JsonStubHandler, free_port
from viewer_api.app import create_app

REPO = Path(__file__).resolve().parents[3]


class Recorder(JsonStubHandler):
    """The vendor's endpoint: records every request it gets (path, headers, body) and answers empty findings."""

    requests: list[dict[str, str]] = []

    def _record(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length).decode("utf-8", "replace") if length else ""
        type(self).requests.append({"path": self.path, "headers": str(self.headers), "body": body})

    def do_POST(self) -> None:  # noqa: N802
        self._record()
        answer = Findings(classifications=[Classification(code=codes.HIGH_DENSITY_LESION, probability=0.25)],
                          summary="stub")  # fmt: skip
        self.reply_json(answer.to_json().encode())

    def do_GET(self) -> None:  # noqa: N802
        self._record()
        self.reply_json(b"{}")


@pytest.fixture
def site(tmp_path: Path, small_cases: list[CtCase]) -> Iterator[tuple[Archive, str]]:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with Archive.open(bench_settings(tmp_path, public_url=url, job_max_attempts=1)) as archive:
        store_cases(archive, small_cases)
        server = uvicorn.Server(uvicorn.Config(create_app(archive), host="127.0.0.1", port=port, log_level="warning"))
        thread = threading.Thread(target=server.run, daemon=True)
        thread.start()
        while not server.started:
            time.sleep(0.02)
        try:
            yield archive, url
        finally:
            server.should_exit = True
            thread.join(10)


def _wait(what: str, done: Callable[[], bool], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while not done():
        assert time.monotonic() < deadline, what
        time.sleep(0.1)


def test_a_hosted_plugin_never_receives_a_test_case(site: tuple[Archive, str], small_cases: list[CtCase]) -> None:
    archive, url = site
    Recorder.requests = []
    vendor = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=vendor.serve_forever, daemon=True).start()
    service = BenchmarkService(archive, extra_plugins=(RandomPlugin,))
    benchmarked, clinical = small_cases[:-1], small_cases[-1]  # one clinical study stays outside the benchmark
    bench_id = split_benchmark(service, benchmarked, seed=3)
    _, cases = service.cases(bench_id)
    test_uids = sorted(c.study_uid for c in cases if c.split == "test")
    assert len(test_uids) >= 5
    create_user(archive.engine, "acme", "vendor password 1", "vendor")
    key = {"Authorization": f"Bearer {create_api_key(archive.engine, 'acme', 'cad')[1]}"}
    create_user(archive.engine, "boss", "admin password 12", "admin")
    admin = {"Authorization": f"Bearer {create_api_key(archive.engine, 'boss', 'ops')[1]}"}
    registry = PluginRegistry(archive.engine, extra=(RandomPlugin,))
    registry.register_remote(RemoteManifest(name="acme-cad", version="1.0", vendor="Acme", timeout_s=60,
                                            endpoint_url=f"http://127.0.0.1:{vendor.server_address[1]}/jobs",
                                            input_filter={"modalities": ["CT"]}),  # type: ignore[arg-type]
                             registered_by="acme")  # fmt: skip
    registry.set_enabled("acme-cad", "1.0", True)  # the hospital enabled it for clinical studies

    # 1. asked for: refused with one sentence, by the vendor's key and by an admin alike; nothing queued
    for who in (key, admin):
        answer = httpx.post(f"{url}/api/benchmarks/{bench_id}/evaluations", json={"plugin": "acme-cad"}, headers=who)
        assert answer.status_code == 409, answer.text
        assert answer.text.strip() == f"acme-cad@1.0 is hosted by its vendor: {HOSTED_REFUSAL}."
    env = {"CLOUDFILM_DATA_DIR": str(archive.settings.data_dir), "PYTHONPATH": str(REPO),
           "CLOUDFILM_SECRET_KEY": "benchmark-test-secret-0123456789"}  # fmt: skip
    cli = run_cli("benchmark", "evaluate", "lesions", "acme-cad", env=env)
    assert cli.returncode == 1 and HOSTED_REFUSAL in " ".join(cli.stderr.split()), cli.stderr
    assert service.evaluations(bench_id) == []

    # 2. a re-run on a test case: refused; the same on the clinical study: queued
    rerun = httpx.post(f"{url}/api/studies/{test_uids[0]}/plugins/acme-cad/run", headers=admin)
    assert rerun.status_code == 409 and HOSTED_REFUSAL in rerun.text
    assert httpx.post(f"{url}/api/studies/{clinical.study_uid}/plugins/acme-cad/run",
                      headers=admin).status_code == 202  # fmt: skip

    # 3. a test case becoming stable again (a late instance): routed to installed plugins, not to the vendor
    router = Router(registry, max_attempts=1)
    with write_transaction(archive.engine) as conn:
        study_id = conn.execute(select(Study.id).where(Study.study_uid == test_uids[1])).scalar_one()
        now = utcnow()
        router.on_stable(conn, StableStudy(test_uids[1], study_id, 7, now, now))
    routed = {j.target for j in JobQueue(archive.engine).list_jobs(kind=JOB_KIND, limit=100)
              if j.study_uid == test_uids[1]}  # fmt: skip
    assert routed and "acme-cad" not in routed

    # 4. jobs written before the rule (an old evaluation, a clinical job on a test case): stopped at the last gate
    legacy = service.evaluate(bench_id, "test-random", requested_by="admin", requester_role="admin")
    with write_transaction(archive.engine) as conn:
        conn.execute(update(EvaluationRow).where(EvaluationRow.id == legacy.id)
                     .values(plugin_name="acme-cad", plugin_version="1.0", plugin_source="remote"))  # fmt: skip
        conn.execute(update(Job).where(Job.kind == CASE_KIND).values(target="acme-cad", target_version="1.0"))
        enqueue(conn, JobSpec(kind=JOB_KIND, dedupe_key=dedupe_key(JOB_KIND, "legacy", test_uids[2]),
                              target="acme-cad", target_version="1.0", study_uid=test_uids[2], generation=1,
                              payload={"series": []}, requested_by="old version", max_attempts=1))  # fmt: skip
    worker = Worker(archive, concurrency=2, kinds=(*KINDS, JOB_KIND), extra_plugins=(RandomPlugin,))
    worker.start()
    try:
        _wait("the legacy evaluation to end", lambda: service.evaluation(legacy.id).finished)
        jobs = JobQueue(archive.engine)
        _wait("every plugin job to end", lambda: all(j.status in (JobStatus.SUCCEEDED, JobStatus.FAILED)
                                                     for j in jobs.list_jobs(kind=JOB_KIND, limit=100)))  # fmt: skip
    finally:
        worker.stop()
        vendor.shutdown()
    outputs = service.case_outputs(legacy.id)
    assert {c.status for c in outputs} == {"failed"}
    assert {c.error for c in outputs} == {f"acme-cad@1.0 is hosted by its vendor: {HOSTED_REFUSAL}"}
    by_study = {j.study_uid: j for j in JobQueue(archive.engine).list_jobs(kind=JOB_KIND, limit=100)
                if j.target == "acme-cad"}  # fmt: skip
    assert by_study[test_uids[2]].status is JobStatus.FAILED and HOSTED_REFUSAL in by_study[test_uids[2]].error
    assert by_study[clinical.study_uid].status is JobStatus.SUCCEEDED  # the positive control: the stub does answer

    # what the vendor received: the one clinical job, and nothing of any test case
    assert [json.loads(r["body"])["study_instance_uid"] for r in Recorder.requests] == [clinical.study_uid]
    forbidden = set(test_uids)
    for case in benchmarked:
        if case.study_uid in forbidden:
            forbidden |= {str(ds.SeriesInstanceUID) for ds in case.datasets} | {str(case.datasets[0].PatientID)}
    received = "\n".join(r["path"] + r["headers"] + r["body"] for r in Recorder.requests)
    assert [s for s in forbidden if s in received] == []


def test_a_job_token_opens_no_test_case_nor_test_copy(site: tuple[Archive, str], small_cases: list[CtCase]) -> None:
    """The hidden-label matrix, job-token row: even a token signed for a test case or for a test copy
    (made by an earlier version for hosted evaluations) reads nothing of it; a dev copy's token does."""
    archive, url = site
    service = BenchmarkService(archive, use_entry_points=False)
    bench_id = split_benchmark(service, small_cases, seed=3)
    _, cases = service.cases(bench_id)
    test_uid = sorted(c.study_uid for c in cases if c.split == "test")[0]
    test_copy = ensure_copy(archive, bench_id, "eval", test_uid).copy_study_uid
    _, dev = service.dev_split(bench_id)
    key = secret_key(archive.settings)
    for study, expected in ((test_uid, 404), (test_copy, 404), (dev[0].study_uid, 200)):
        token, _ = issue_job_token(key, study_uid=study, job_id=1, plugin="acme-cad@1.0",
                                   lifetime=timedelta(minutes=5))  # fmt: skip
        auth = {"Authorization": f"Bearer {token}"}
        metadata = httpx.get(f"{url}/dicomweb/studies/{study}/metadata", headers=auth)
        assert metadata.status_code == expected, (study, metadata.status_code)
        series = httpx.get(f"{url}/dicomweb/studies/{study}/series", headers=auth)
        assert (study in series.text) is (expected == 200), (study, series.status_code)
        assert httpx.get(f"{url}/dicomweb/studies", headers=auth).status_code == 403  # never a listing
