"""A vendor-hosted plugin evaluated on the hidden test split: it reads de-identified copies of the test
cases over DICOMweb with a token scoped to each copy, never a test study, and gets no curves back."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from dicomweb_client.api import DICOMwebClient

from ai_plugins.benchmarks.evaluation import KINDS
from ai_plugins.benchmarks.service import BenchmarkService
from ai_plugins.builtin.lesion_detector import LesionDetector
from ai_plugins.runner.registry import PluginRegistry, RemoteManifest
from ai_plugins.runner.worker import Worker
from ai_plugins.sdk import StudyInput
from pacs.accounts.api_keys import create_api_key
from pacs.accounts.users import create_user
from pacs.archive import Archive
from tests.ai_plugins.benchmarks.conftest import bench_settings, lesion_csv, store_cases
from tests.factories import PATIENTS, CtCase
from tests.net import JsonStubHandler, free_port
from viewer_api.app import create_app


class Vendor(JsonStubHandler):
    """Reads its case with the job token, probes what else the token opens, answers the detector's findings."""

    jobs: list[dict[str, Any]] = []
    seen: list[dict[str, str]] = []
    probes: dict[str, int] = {}
    forbidden_study = ""

    def do_POST(self) -> None:  # noqa: N802
        job = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        type(self).jobs.append(job)
        base, study = job["dicomweb_url"], job["study_instance_uid"]
        auth = {"Authorization": f"Bearer {job['access_token']}"}
        client = DICOMwebClient(base, headers=auth)
        datasets = [client.retrieve_instance(study, series, i["00080018"]["Value"][0])
                    for series in job["series_instance_uids"] for i in client.search_for_instances(study, series)]
        type(self).seen.extend({"name": str(ds.PatientName), "id": str(ds.PatientID),
                                "removed": str(ds.PatientIdentityRemoved)} for ds in datasets)  # fmt: skip
        original = type(self).forbidden_study
        type(self).probes = {
            "original study": httpx.get(f"{base}/studies/{original}/metadata", headers=auth).status_code,
            "all studies": httpx.get(f"{base}/studies", headers=auth).status_code,
        }  # fmt: skip
        data = LesionDetector().run(StudyInput.from_datasets(datasets)).to_json().encode()
        self.reply_json(data)


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


def test_a_hosted_plugin_reads_only_de_identified_copies(site: tuple[Archive, str], small_cases: list[CtCase]) -> None:
    archive, url = site
    vendor = ThreadingHTTPServer(("127.0.0.1", 0), Vendor)
    threading.Thread(target=vendor.serve_forever, daemon=True).start()
    service = BenchmarkService(archive)
    bench = service.create(name="lesions", task="detection", created_by="admin")
    service.add_studies(bench.id, study_uids=[c.study_uid for c in small_cases], created_by="admin")
    service.import_labels(bench.id, lesion_csv(small_cases), fmt="csv", created_by="admin")
    service.split(bench.id, seed=3, test_fraction=0.5, created_by="admin")
    _, cases = service.cases(bench.id)
    test_uids = {c.study_uid for c in cases if c.split == "test"}
    Vendor.forbidden_study = sorted(test_uids)[0]
    create_user(archive.engine, "acme", "vendor password 1", "vendor")
    key = {"Authorization": f"Bearer {create_api_key(archive.engine, 'acme', 'cad')[1]}"}
    registry = PluginRegistry(archive.engine)
    registry.register_remote(RemoteManifest(name="acme-cad", version="1.0", vendor="Acme", timeout_s=120,
                                            endpoint_url=f"http://127.0.0.1:{vendor.server_address[1]}/jobs",
                                            input_filter={"modalities": ["CT"]}),  # type: ignore[arg-type]
                             registered_by="acme")  # fmt: skip
    registry.set_enabled("acme-cad", "1.0", True)
    request = httpx.post(f"{url}/api/benchmarks/{bench.id}/evaluations", json={"plugin": "acme-cad"}, headers=key)
    assert request.status_code == 202, request.text
    remote_id = request.json()["id"]
    local_id = service.evaluate(bench.id, "lesion-detector", requested_by="admin", requester_role="admin").id
    worker = Worker(archive, concurrency=2, kinds=KINDS)
    worker.start()
    try:
        deadline = time.monotonic() + 240
        while not (service.evaluation(remote_id).finished and service.evaluation(local_id).finished):
            assert time.monotonic() < deadline
            time.sleep(0.2)
    finally:
        worker.stop()
        vendor.shutdown()
    remote, local = service.evaluation(remote_id), service.evaluation(local_id)
    assert remote.status == "done" and remote.n_failed == 0, service.case_outputs(remote_id)
    # the same detector on the de-identified copies scores exactly what it scores on the originals
    assert remote.metrics == local.metrics and remote.main_value == local.main_value
    sent = {j["study_instance_uid"] for j in Vendor.jobs}
    originals = {c.study_uid for c in small_cases}
    assert len(sent) == 6 and not sent & originals
    assert {s["removed"] for s in Vendor.seen} == {"YES"}
    assert not {s["name"] for s in Vendor.seen} & {p.name for p in PATIENTS}
    assert not {s["id"] for s in Vendor.seen} & {p.patient_id for p in PATIENTS}
    assert Vendor.probes == {"original study": 403, "all studies": 403}
    # with its own key the vendor sees the dev copies, neither the test cases nor the copies it was sent
    listed = {s["0020000D"]["Value"][0] for s in httpx.get(f"{url}/dicomweb/studies", headers=key).json()}
    _, dev = service.dev_split(bench.id)
    assert listed == {d.study_uid for d in dev}
    for uid in [*sent, *test_uids]:
        assert httpx.get(f"{url}/dicomweb/studies/{uid}/metadata", headers=key).status_code == 404
    # aggregate numbers only: no curves for the vendor of a hosted plugin, no per-case outputs
    report = httpx.get(f"{url}/api/benchmarks/evaluations/{remote_id}/report.json", headers=key).json()
    assert report["curves_included"] is False and "curve" not in report["metrics"]["froc"]
    assert report["main_metric"]["value"] == remote.main_value
    assert httpx.get(f"{url}/api/benchmarks/evaluations/{remote_id}/curves.png", headers=key).status_code == 403
    assert httpx.get(f"{url}/api/benchmarks/evaluations/{remote_id}/cases", headers=key).status_code == 403
    assert httpx.get(f"{url}/api/benchmarks/evaluations/{local_id}/curves.png",
                     headers=key).headers["content-type"] == "image/png"  # fmt: skip
