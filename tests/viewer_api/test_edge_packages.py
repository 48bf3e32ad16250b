"""Admitted algorithm packages at the edge (issue 15), in process: which package files an edge
worker's token may fetch (admitted and enabled for clinical studies only, audited, ETag = SHA-256),
what a lease of a package's job hands over, and the edge worker's package cache, which installs a
file only if it hashes to the digest it was asked for (the end-to-end run is in
``tests/e2e/test_edge_worker.py``)."""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import SecretStr
from sqlalchemy import insert

from ai_plugins.benchmarks.models import BenchmarkCaseRow, BenchmarkRow, BenchmarkVersionRow
from ai_plugins.edge.client import ArchiveClient, ArchiveRefused
from ai_plugins.edge.package_cache import PackageCache, default_cache_dir
from ai_plugins.packages.environment import DigestMismatch
from ai_plugins.packages.service import PackageService
from ai_plugins.runner.registry import PluginRegistry
from ai_plugins.runner.routing import JOB_KIND
from ai_plugins.runner.service import PluginService
from pacs.accounts.api_keys import create_api_key
from pacs.accounts.audit import Action, AuditQuery, Outcome, query
from pacs.accounts.edge_workers import add_edge_worker
from pacs.accounts.users import create_user
from pacs.archive import Archive
from pacs.index.db import utcnow
from pacs.jobs import JobQueue, JobSpec, dedupe_key
from pacs.settings import Settings
from pacs.storage.references import package_key
from tests.ai_plugins.packages import builder
from tests.factories import PATIENTS, make_ct_study, to_bytes
from viewer_api.app import create_app

NAME = "acme-detector"


@dataclass
class Site:
    archive: Archive
    client: TestClient
    edge_token: str
    admin_key: str
    digest: str  # admitted, enabled
    file: bytes
    studies: list[str]

    @property
    def as_edge(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.edge_token}"}

    def enqueue(self, study: int) -> int:
        uid = self.studies[study]
        job_id = JobQueue(self.archive.engine).enqueue(JobSpec(
            kind=JOB_KIND, dedupe_key=dedupe_key(JOB_KIND, NAME, uid), target=NAME, target_version="1.0",
            study_uid=uid, max_attempts=3, timeout_s=60))  # fmt: skip
        assert job_id is not None
        return job_id

    def lease(self, *, packages: bool) -> dict[str, Any] | None:
        response = self.client.post("/api/edge/jobs/lease", headers=self.as_edge,
                                    json={"worker_id": "t:1:0", "plugins": [], "packages": packages})  # fmt: skip
        assert response.status_code == 200, response.text
        job: dict[str, Any] | None = response.json()["job"]
        return job

    def archive_client(self, tamper: bool = False) -> tuple[ArchiveClient, list[str]]:
        """An edge worker's client of this archive through a proxy that forwards every request (and,
        with ``tamper``, flips one byte of every answer on the way), and the paths it forwarded."""
        seen: list[str] = []

        def forward(request: httpx.Request) -> httpx.Response:
            seen.append(request.url.path)
            answer = self.client.request(request.method, request.url.path, headers=dict(request.headers),
                                         content=request.content)  # fmt: skip
            body = bytearray(answer.content)
            if tamper and body:
                body[len(body) // 2] ^= 0x01
            return httpx.Response(answer.status_code, headers=answer.headers, content=bytes(body))

        return ArchiveClient("http://archive.test", self.edge_token, transport=httpx.MockTransport(forward)), seen


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    settings = Settings(data_dir=tmp_path / "data", http_port=0, dicom_port=0,
                        secret_key=SecretStr("edge-packages-test-secret-01"))  # fmt: skip
    with Archive.open(settings) as archive:
        create_user(archive.engine, "ada", "correct horse battery", "admin")
        create_user(archive.engine, "acme", "vendor password 1", "vendor")
        admin_key = create_api_key(archive.engine, "ada", "test")[1]
        edge_token = add_edge_worker(archive.engine, "ward-a", created_by="ada")[1]
        studies = [make_ct_study(PATIENTS[i], n_slices=4, rows=32, cols=32, seed=8300 + i) for i in range(2)]
        for datasets in studies:
            for ds in datasets:
                assert archive.ingest.store_bytes(to_bytes(ds)).ok
        packages = PackageService(archive)
        data = builder.package(NAME, "1.0")
        admitted, _ = packages.upload(data, filename="acme-detector-1.0.zip", uploaded_by="acme")
        packages.admit(NAME, "1.0", admitted_by="ada")
        PluginRegistry(archive.engine).set_enabled(NAME, "1.0", True)
        app = create_app(archive)
        service = PluginService(archive, use_entry_points=False)
        service.registry.sync()
        app.state.plugin_service = service
        with TestClient(app) as client:
            yield Site(archive, client, edge_token, admin_key, admitted.digest, data,
                       [str(s[0].StudyInstanceUID) for s in studies])


def test_an_edge_worker_fetches_an_admitted_enabled_package_by_its_digest(site: Site) -> None:
    path = f"/api/edge/packages/{site.digest}"
    got = site.client.get(path, headers=site.as_edge)
    assert got.status_code == 200, got.text
    assert got.content == site.file and hashlib.sha256(got.content).hexdigest() == site.digest
    assert got.headers["etag"] == f'"{site.digest}"'
    assert got.headers["repr-digest"] == f"sha-256=:{base64.b64encode(hashlib.sha256(site.file).digest()).decode()}:"
    assert got.headers["content-type"] == "application/octet-stream"
    assert int(got.headers["content-length"]) == len(site.file)
    again = site.client.get(path, headers={**site.as_edge, "If-None-Match": f'W/"x", "{site.digest}"'})
    assert again.status_code == 304 and again.content == b"" and again.headers["etag"] == f'"{site.digest}"'

    # nobody else: not an admin, not a vendor, not anonymous
    assert site.client.get(path, headers={"Authorization": f"Bearer {site.admin_key}"}).status_code == 403
    assert site.client.get(path).status_code == 401

    trail = query(site.archive.engine, AuditQuery(action=Action.PACKAGE_DOWNLOAD, newest_first=False))
    assert [(e.username, e.outcome) for e in trail] == [
        ("edge:ward-a", Outcome.SUCCESS), ("edge:ward-a", Outcome.SUCCESS), ("ada", Outcome.DENIED),
        ("", Outcome.DENIED)]  # fmt: skip
    assert all(site.digest in e.detail for e in trail)


def test_no_other_file_is_handed_out(site: Site) -> None:
    packages = PackageService(site.archive)
    uploaded, _ = packages.upload(builder.package(NAME, "2.0"), filename="acme-detector-2.0.zip", uploaded_by="acme")
    assert uploaded.status == "uploaded"
    refusals = {
        "uploaded, not admitted": uploaded.digest,
        "no such package": hashlib.sha256(b"nothing").hexdigest(),
        "an object of the store that is no package": hashlib.sha256(b"x").hexdigest(),
    }
    site.archive.store.put_bytes(package_key(refusals["an object of the store that is no package"]), b"x")
    for why, digest in refusals.items():
        refused = site.client.get(f"/api/edge/packages/{digest}", headers=site.as_edge)
        assert refused.status_code == 404, why
        assert "no admitted package enabled for clinical studies" in refused.text, why
    for malformed in ("../../secret", site.digest.upper(), site.digest[:-1], f"{site.digest}0"):
        assert site.client.get(f"/api/edge/packages/{malformed}", headers=site.as_edge).status_code in (400, 403, 404)

    # admitted but disabled for clinical studies: refused too
    PluginRegistry(site.archive.engine).set_enabled(NAME, "1.0", False)
    assert site.client.get(f"/api/edge/packages/{site.digest}", headers=site.as_edge).status_code == 404
    trail = query(site.archive.engine, AuditQuery(action=Action.PACKAGE_DOWNLOAD))
    assert {e.outcome for e in trail} == {Outcome.FAILURE}  # every refusal is on the record


def test_a_package_job_is_leased_only_to_a_worker_that_runs_packages_and_never_on_a_test_case(site: Site) -> None:
    job_id = site.enqueue(0)
    assert site.lease(packages=False) is None
    grant = site.lease(packages=True)
    assert grant is not None and grant["job_id"] == job_id and grant["plugin"] == NAME
    package = grant["package"]
    assert package["sha256"] == site.digest and package["size"] == len(site.file)
    assert package["limits"]["memory_mb"] == 2048 and package["limits"]["cpu_s"] == 120  # the manifest's, capped
    assert site.client.post(f"/api/edge/jobs/{job_id}/release", headers=site.as_edge,
                            json={"worker_id": "t:1:0", "attempt": 1}).status_code == 200  # fmt: skip

    # a benchmark case's study: its clinical run of the package is never leased to an edge worker
    test_case = site.studies[1]
    now = utcnow()
    with site.archive.engine.begin() as conn:
        bench = conn.execute(insert(BenchmarkRow).values(name="b", task="classification", created_at=now,
                                                         updated_at=now).returning(BenchmarkRow.id)).scalar_one()
        version = conn.execute(insert(BenchmarkVersionRow).values(
            benchmark_fk=bench, number=1, digest="d", created_at=now).returning(BenchmarkVersionRow.id)).scalar_one()
        conn.execute(insert(BenchmarkCaseRow).values(version_fk=version, study_uid=test_case, split="test",
                                                     label_json="{}"))  # fmt: skip
    site.enqueue(1)
    again = site.lease(packages=True)
    assert again is not None and again["job_id"] == job_id  # the released one; not the test case's
    assert site.lease(packages=True) is None


def test_the_cache_installs_a_package_once_and_only_if_it_matches_its_digest(site: Site, tmp_path: Path) -> None:
    # a man in the middle alters the file: refused, nothing installed
    client, _ = site.archive_client(tamper=True)
    cache = PackageCache(tmp_path / "edge-cache", client)
    with pytest.raises(DigestMismatch):
        cache.environment(site.digest)
    assert not cache.env_dir(site.digest).exists()
    assert not [p for p in (tmp_path / "edge-cache").rglob("*") if p.is_file()]

    # the archive's own stored copy damaged: refused the same way
    site.archive.store.put_bytes(package_key(site.digest), site.file[:-1] + bytes([site.file[-1] ^ 0xFF]))
    client, _ = site.archive_client()
    with pytest.raises(DigestMismatch):
        PackageCache(tmp_path / "edge-cache", client).environment(site.digest)
    assert not cache.env_dir(site.digest).exists()

    # the right file: installed once, with its dependency wheels (offline), then reused without a fetch
    site.archive.store.put_bytes(package_key(site.digest), site.file)
    client, seen = site.archive_client()
    cache = PackageCache(tmp_path / "edge-cache", client)
    env, manifest = cache.environment(site.digest)
    assert (manifest.name, manifest.version, env.plugin_ref) == (NAME, "1.0", "acme_detector:Detector")
    assert env.root == cache.env_dir(site.digest)
    assert (env.root / "acme_detector" / "weights.json").is_file() and (env.root / "acme_util.py").is_file()
    assert not (env.root / "wheels").exists()
    assert cache.environment(site.digest)[0] == env
    assert PackageCache(tmp_path / "edge-cache", client).environment(site.digest)[0] == env  # a restarted worker
    assert seen == [f"/api/edge/packages/{site.digest}"]

    # a digest the archive does not hand out
    with pytest.raises(ArchiveRefused, match="404"):
        cache.environment(hashlib.sha256(b"nothing").hexdigest())


def test_the_cache_lives_in_xdg_cache_home(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert default_cache_dir() == tmp_path / "cloudfilm" / "edge"
    monkeypatch.setenv("XDG_CACHE_HOME", "relative/path")  # not absolute: ignored, as the XDG spec says
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_cache_dir() == tmp_path / "home" / ".cache" / "cloudfilm" / "edge"
