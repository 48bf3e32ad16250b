"""The AI plugin and job API over HTTP with real accounts: who may list, register, switch, re-run,
see jobs; and what a plugin job token may do on DICOMweb (its study only, STOW into it only)."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import select

from ai_plugins.runner.models import PluginResult
from ai_plugins.runner.results import ResultUids, build_result_objects
from ai_plugins.runner.routing import JOB_KIND, study_contents
from ai_plugins.runner.service import PluginService
from ai_plugins.runner.tokens import issue_job_token
from ai_plugins.runner.worker import Worker
from ai_plugins.sdk import StudyInput
from pacs.accounts.api_keys import create_api_key
from pacs.accounts.keys import secret_key
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.jobs import JobSpec
from pacs.settings import Settings
from tests.ai_plugins.sample_plugins import EchoPlugin, report
from tests.factories import make_ct_study, to_bytes
from viewer_api.app import create_app

BOUNDARY = "ai-api-test"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'
MINE = "1.2.826.0.1.3680043.10.701"
OTHER = "1.2.826.0.1.3680043.10.702"


@dataclass
class Site:
    archive: Archive
    client: TestClient
    keys: dict[str, str]
    service: PluginService

    def as_(self, who: str) -> dict[str, str]:
        return {} if who == "anonymous" else {"Authorization": f"Bearer {self.keys[who]}"}


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    settings = Settings(
        data_dir=tmp_path / "data", http_port=0, dicom_port=0, secret_key=SecretStr("ai-api-test-secret-0123")
    )
    with Archive.open(settings) as archive:
        keys = {}
        for username, role in (("ada", "admin"), ("phil", "physician"), ("acme", "vendor"), ("globex", "vendor"),
                               ("pat", "patient")):  # fmt: skip
            create_user(archive.engine, username, "correct horse battery", role)
            keys[username] = create_api_key(archive.engine, username, "test")[1]
        for uid, seed in ((MINE, 701), (OTHER, 702)):
            for ds in make_ct_study(n_slices=4, rows=16, cols=16, seed=seed, study_uid=uid):
                assert archive.ingest.store_bytes(to_bytes(ds)).ok
        app = create_app(archive)
        service = PluginService(archive, extra_plugins=[EchoPlugin], use_entry_points=False)
        app.state.plugin_service = service
        with TestClient(app) as client:
            yield Site(archive, client, keys, service)


MANIFEST = {
    "name": "acme-cad",
    "version": "1.0",
    "vendor": "Acme",
    "endpoint_url": "https://acme.invalid/jobs",
    "timeout_s": 120,
    "input_filter": {"modalities": ["CT"]},
}


def test_plugins_are_listed_registered_and_switched_by_the_right_accounts(site: Site) -> None:
    c = site.client
    assert c.get("/api/plugins").status_code == 401
    assert c.get("/api/plugins", headers=site.as_("pat")).status_code == 403
    assert c.post("/api/plugins", json=MANIFEST, headers=site.as_("phil")).status_code == 403

    created = c.post("/api/plugins", json=MANIFEST, headers=site.as_("acme"))
    assert created.status_code == 201, created.text
    body = created.json()
    assert (body["source"], body["enabled"], body["registered_by"]) == ("remote", False, "acme")
    assert c.post("/api/plugins", json=MANIFEST, headers=site.as_("acme")).status_code == 200  # idempotent
    changed = dict(MANIFEST, endpoint_url="https://acme.invalid/v2")
    assert c.post("/api/plugins", json=changed, headers=site.as_("acme")).status_code == 409
    assert c.post("/api/plugins", json=dict(MANIFEST, version="2"), headers=site.as_("globex")).status_code == 409
    bad = c.post("/api/plugins", json=dict(MANIFEST, endpoint_url="file:///etc/passwd"), headers=site.as_("acme"))
    assert bad.status_code == 400 and "endpoint_url" in bad.text

    names = {p["name"] for p in c.get("/api/plugins", headers=site.as_("phil")).json()}
    assert names == {"acme-cad", "test-echo"}
    assert [p["name"] for p in c.get("/api/plugins", headers=site.as_("acme")).json()] == ["acme-cad"]
    assert c.get("/api/plugins", headers=site.as_("globex")).json() == []

    path = "/api/plugins/acme-cad/1.0"
    assert c.patch(path, json={"enabled": True}, headers=site.as_("acme")).status_code == 403
    enabled = c.patch(path, json={"enabled": True}, headers=site.as_("ada"))
    assert enabled.status_code == 200 and enabled.json()["enabled"] is True
    assert c.patch("/api/plugins/acme-cad/9", json={"enabled": True}, headers=site.as_("ada")).status_code == 404


def test_reruns_and_jobs_over_http(site: Site) -> None:
    c = site.client
    run = f"/api/studies/{MINE}/plugins/test-echo/run"
    assert c.post(run, headers=site.as_("pat")).status_code == 403
    assert c.post(run, headers=site.as_("acme")).status_code == 403
    first = c.post(run, headers=site.as_("phil"))
    assert first.status_code == 202, first.text
    job = first.json()
    assert (job["plugin"], job["study_uid"], job["status"], job["requested_by"]) == (
        "test-echo",
        MINE,
        "queued",
        "phil",
    )
    again = c.post(run, headers=site.as_("ada"))
    assert again.status_code == 200 and again.json()["id"] == job["id"]  # already waiting
    assert c.post("/api/studies/1.2.3.999/plugins/test-echo/run", headers=site.as_("phil")).status_code == 404
    assert c.post(f"/api/studies/{MINE}/plugins/nothing/run", headers=site.as_("phil")).status_code == 404

    listed = c.get("/api/jobs", params={"study": MINE, "status": "queued"}, headers=site.as_("ada")).json()
    assert [j["id"] for j in listed] == [job["id"]]
    assert c.get("/api/jobs", params={"status": "running"}, headers=site.as_("ada")).json() == []
    assert c.get("/api/jobs", params={"status": "nonsense"}, headers=site.as_("ada")).status_code == 400
    assert c.get(f"/api/jobs/{job['id']}", headers=site.as_("phil")).json()["id"] == job["id"]
    assert c.get("/api/jobs", headers=site.as_("acme")).json() == []  # not its plugin
    assert c.get(f"/api/jobs/{job['id']}", headers=site.as_("acme")).status_code == 404
    assert c.get("/api/jobs", headers=site.as_("pat")).status_code == 403

    # Run it: the job's progress, timings and result show up.
    [claimed] = site.service.queue.claim("test", ["plugin"])
    Worker(site.archive, extra_plugins=[EchoPlugin], use_entry_points=False).execute(claimed)
    done = c.get(f"/api/jobs/{job['id']}", headers=site.as_("phil")).json()
    assert done["status"] == "succeeded" and done["progress"] == 1.0 and done["error"] is None
    assert done["run_s"] is not None and done["result"]["objects"][0]["kind"] == "SR"

    disabled = c.patch("/api/plugins/test-echo/1.0", json={"enabled": False}, headers=site.as_("ada"))
    assert disabled.status_code == 200
    refused = c.post(run, headers=site.as_("phil"))
    assert refused.status_code == 409 and "disabled" in refused.text


def _stow(datasets: list[bytes]) -> bytes:
    out = bytearray()
    for data in datasets:
        out += f"--{BOUNDARY}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
    return bytes(out + f"--{BOUNDARY}--\r\n".encode())


def test_a_job_token_reads_only_its_study_and_stores_only_into_it(site: Site) -> None:
    c = site.client
    token, _ = issue_job_token(secret_key(site.archive.settings), study_uid=MINE, job_id=7, plugin="acme-cad@1.0",
                               lifetime=timedelta(minutes=5))  # fmt: skip
    auth = {"Authorization": f"Bearer {token}"}
    assert c.get(f"/dicomweb/studies/{MINE}/series", headers=auth).status_code == 200
    assert c.get(f"/dicomweb/studies/{MINE}/metadata", headers=auth).status_code == 200
    for path in (f"/dicomweb/studies/{OTHER}/series", f"/dicomweb/studies/{OTHER}/metadata", "/dicomweb/studies",
                 "/api/plugins", "/api/jobs", f"/api/studies/{MINE}/shares"):  # fmt: skip
        assert c.get(path, headers=auth).status_code in (403, 404), path

    mine = StudyInput.from_datasets(make_ct_study(n_slices=4, rows=16, cols=16, seed=701, study_uid=MINE))
    sr, _seg = build_result_objects(report(mine, EchoPlugin.input_filter), mine, EchoPlugin.info(), ResultUids("v"))
    foreign = to_bytes(make_ct_study(n_slices=1, rows=16, cols=16, seed=703, study_uid=OTHER)[0])
    headers = auth | {"Content-Type": STOW_TYPE, "Accept": "application/dicom+json"}
    assert c.post(f"/dicomweb/studies/{OTHER}", content=_stow([foreign]), headers=headers).status_code == 403
    assert c.post("/dicomweb/studies", content=_stow([foreign]), headers=headers).status_code == 403
    assert c.delete(f"/dicomweb/studies/{MINE}", headers=auth).status_code == 403
    smuggled = c.post(f"/dicomweb/studies/{MINE}", content=_stow([foreign]), headers=headers)
    assert smuggled.status_code == 409  # an instance of another study, sent to its own study's URL
    stored = c.post(f"/dicomweb/studies/{MINE}", content=_stow([sr.data]), headers=headers)
    assert stored.status_code == 200, stored.text
    assert c.get(f"/dicomweb/studies/{MINE}/series", params={"Modality": "SR"}, headers=site.as_("phil")).json()
    # Job 7 is no plugin run, so nothing records the SR as a vendor's result: like any result object
    # that is not its vendor's, the token does not see it (issue 13).
    assert c.get(f"/dicomweb/studies/{MINE}/series", params={"Modality": "SR"}, headers=auth).json() == []
    expired, _ = issue_job_token(secret_key(site.archive.settings), study_uid=MINE, job_id=7, plugin="acme-cad@1.0",
                                 lifetime=timedelta(seconds=-5))  # fmt: skip
    assert c.get(f"/dicomweb/studies/{MINE}/series", headers={"Authorization": f"Bearer {expired}"}).status_code == 401


def test_what_a_hosted_plugin_stows_with_its_job_token_is_recorded_as_its_output_at_once(site: Site) -> None:
    """Recorded before the job completes: a stable transition between the vendor's STOW and its answer
    must not take the vendor's SR for new input (a plugin whose filter names SR would run on it)."""
    queue = site.service.queue
    job_id = queue.enqueue(JobSpec(kind=JOB_KIND, dedupe_key="hosted-stow", target="acme-cad", target_version="1.0",
                                   study_uid=MINE, generation=1))  # fmt: skip
    other_kind = queue.enqueue(JobSpec(kind="benchmark-case", dedupe_key="case-stow", study_uid=MINE))
    assert job_id is not None and other_kind is not None
    mine = StudyInput.from_datasets(make_ct_study(n_slices=4, rows=16, cols=16, seed=701, study_uid=MINE))
    sr, seg = build_result_objects(report(mine, EchoPlugin.input_filter), mine, EchoPlugin.info(), ResultUids("h"))
    unrecorded, _ = build_result_objects(report(mine, EchoPlugin.input_filter), mine, EchoPlugin.info(),
                                         ResultUids("case"))  # fmt: skip

    def stow(job: int, data: list[bytes]) -> None:
        token, _ = issue_job_token(secret_key(site.archive.settings), study_uid=MINE, job_id=job,
                                   plugin="acme-cad@1.0", lifetime=timedelta(minutes=5))  # fmt: skip
        headers = {"Authorization": f"Bearer {token}", "Content-Type": STOW_TYPE, "Accept": "application/dicom+json"}
        rsp = site.client.post(f"/dicomweb/studies/{MINE}", content=_stow(data), headers=headers)
        assert rsp.status_code == 200, rsp.text

    stow(job_id, [sr.data, seg.data])
    stow(other_kind, [unrecorded.data])  # a benchmark case's upload is not a clinical plugin result
    token, _ = issue_job_token(secret_key(site.archive.settings), study_uid=MINE, job_id=job_id,
                               plugin="acme-cad@1.0", lifetime=timedelta(minutes=5))  # fmt: skip
    seen = site.client.get(f"/dicomweb/studies/{MINE}/instances", headers={"Authorization": f"Bearer {token}"})
    sops = {i["00080018"]["Value"][0] for i in seen.json()}
    assert {sr.sop_uid, seg.sop_uid} <= sops and unrecorded.sop_uid not in sops  # its own results, read back
    with site.archive.engine.connect() as conn:
        rows = conn.execute(select(PluginResult.job_id, PluginResult.kind, PluginResult.sop_uid,
                                   PluginResult.plugin_name, PluginResult.plugin_version)).all()  # fmt: skip
        contents = study_contents(conn, MINE)
    assert sorted(rows) == sorted([(job_id, "SR", sr.sop_uid, "acme-cad", "1.0"),
                                   (job_id, "SEG", seg.sop_uid, "acme-cad", "1.0")])  # fmt: skip
    assert sr.series_uid not in {s.series_uid for s in contents.series}  # never input to a plugin again
    assert unrecorded.series_uid in {s.series_uid for s in contents.series}
