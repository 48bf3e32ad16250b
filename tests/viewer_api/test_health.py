"""Liveness, readiness and metrics of the HTTP app."""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from pacs.archive import Archive
from pacs.index.db import make_engine
from pacs.settings import Settings
from pacs.storage.filesystem import MIN_FREE_BYTES, FilesystemStore
from pacs.storage.s3 import S3Store
from tests.factories import make_ct_study, to_bytes
from tests.s3server import S3Server
from tests.viewer_api.conftest import STOW_TYPE, stow_body
from viewer_api.app import create_app


def test_health_ready_metrics_and_docs(archive: Archive) -> None:
    assert TestClient(create_app(archive)).get("/metrics").status_code == 401  # a principal is needed
    open_settings = archive.settings.model_copy(update={"auth_disabled": True})
    client = TestClient(create_app(Archive(open_settings, archive.engine, archive.store, archive.ingest)))
    assert client.get("/healthz").json() == {"status": "ok"}
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.json()["database"] == "ok" and ready.json()["storage"] == "ok"
    archive.ingest.store_bytes(to_bytes(make_ct_study(n_slices=1, seed=60)[0]))
    archive.ingest.store_bytes(b"junk" * 100)
    text = client.get("/metrics").text
    assert "cloudfilm_instances_stored_total" in text
    assert 'cloudfilm_ingest_rejects_total{reason="not-dicom"}' in text
    assert "cloudfilm_ingest_seconds_bucket" in text
    with warnings.catch_warnings():
        warnings.simplefilter("error", UserWarning)  # FastAPI warns of duplicate operation IDs
        schema = client.get("/openapi.json").json()
    assert schema["info"]["title"] == "cloudfilm"
    operation_ids = [op["operationId"] for path in schema["paths"].values() for op in path.values()]
    assert len(operation_ids) == len(set(operation_ids))


def test_readyz_reports_what_is_unreachable(local_archive: Archive) -> None:
    dead_db = make_engine("postgresql+psycopg2://nobody@127.0.0.1:1/none")
    broken = Archive(local_archive.settings, dead_db, local_archive.store, local_archive.ingest)
    shutil.rmtree(local_archive.settings.data_dir / "objects" / ".tmp")
    body = TestClient(create_app(broken)).get("/readyz")
    assert body.status_code == 503
    assert body.json()["status"] == "unavailable"
    assert body.json()["database"] == "the index database is unreachable"
    assert "not writable" in body.json()["storage"]
    assert TestClient(create_app(broken)).get("/healthz").status_code == 200


def _ready(app: FastAPI) -> tuple[int, str]:
    response = TestClient(app).get("/readyz")
    return response.status_code, str(response.json()["storage"])


def test_readyz_fails_below_the_free_space_floor(local_archive: Archive) -> None:
    store = local_archive.store
    assert isinstance(store, FilesystemStore)
    app = create_app(local_archive)
    assert _ready(app) == (200, "ok")
    store.min_free_bytes = shutil.disk_usage(store.root).free + 2**30  # a disk with less free than the floor
    status, reason = _ready(app)
    assert status == 503 and "is full" in reason and "MiB needed" in reason
    store.min_free_bytes = MIN_FREE_BYTES
    (store.root / ".tmp").rmdir()
    (store.root / ".tmp").write_bytes(b"")  # the temp directory is gone: nothing can be written
    assert _ready(app)[0] == 503


@contextmanager
def tmpfs(path: Path, size_mib: int) -> Iterator[Path]:
    """A small RAM filesystem at ``path`` (root may mount one; elsewhere the test is skipped)."""
    path.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m", "tmpfs", str(path)],
                             capture_output=True, text=True)  # fmt: skip
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)


def test_readyz_follows_a_real_volume_filling_up_and_turning_read_only(tmp_path: Path) -> None:
    with tmpfs(tmp_path / "volume", 80) as volume, Archive.open(Settings(
            data_dir=tmp_path / "data", http_port=0, dicom_port=0, auth_disabled=True,
            storage_url=f"file://{volume}/objects")) as archive:  # fmt: skip
        app = create_app(archive)
        assert _ready(app) == (200, "ok")
        filler = volume / "filler"
        with open(filler, "wb") as out:
            out.write(b"\0" * (20 * 2**20))
        status, reason = _ready(app)
        assert status == 503 and "is full" in reason  # 60 MiB left: under the 64 MiB floor
        with open(filler, "ab") as out, contextlib.suppress(OSError):
            while True:
                out.write(b"\0" * 2**20)
        body = stow_body([make_ct_study(n_slices=1, rows=16, cols=16, seed=61)[0]])
        stow = TestClient(app).post("/dicomweb/studies", content=body, headers={"Content-Type": STOW_TYPE})
        assert stow.status_code == 503 and stow.headers["retry-after"] == "30"  # what /readyz foretold
        filler.unlink()
        assert _ready(app) == (200, "ok")
        subprocess.run(["mount", "-o", "remount,ro", str(volume)], check=True)
        status, reason = _ready(app)
        assert status == 503 and "not writable" in reason  # access(2) answers EROFS


@pytest.mark.s3
def test_readyz_fails_when_the_bucket_refuses_writes(tmp_path: Path, s3_server: S3Server) -> None:
    from tests.viewer_api.portal.test_outages import deny_objects

    settings = Settings(data_dir=tmp_path / "data", http_port=0, dicom_port=0, auth_disabled=True,
                        storage_url=f"s3://ready-{uuid.uuid4().hex[:16]}", s3_endpoint=s3_server.endpoint,
                        s3_access_key=s3_server.access_key, s3_secret_key=s3_server.secret_key)  # fmt: skip
    with Archive.open(settings) as archive:
        store = archive.store
        assert isinstance(store, S3Store)
        app = create_app(archive)
        assert _ready(app) == (200, "ok")
        store.put_bytes("kept/object", b"readable")
        deny_objects(store, ("s3:PutObject",))
        status, reason = _ready(app)
        assert status == 503 and "AccessDenied" in reason
        assert store.get_bytes("kept/object") == b"readable"  # reads and listings still work: only a write tells
        store.ping()


@pytest.mark.s3
def test_readyz_fails_while_the_s3_server_is_stopped(tmp_path: Path) -> None:
    """A load balancer takes a node out when its object store is down, not only when it refuses writes."""
    from tests.s3server import run_s3_server

    with run_s3_server(tmp_path) as server:
        settings = Settings(data_dir=tmp_path / "data", http_port=0, dicom_port=0, auth_disabled=True,
                            storage_url="s3://ready-down", s3_endpoint=server.endpoint,
                            s3_access_key=server.access_key, s3_secret_key=server.secret_key)  # fmt: skip
        archive = Archive.open(settings)
        app = create_app(archive)
        assert _ready(app) == (200, "ok")
    try:  # the server is gone: its port refuses connections
        status, reason = _ready(app)
        assert status == 503 and reason != "ok", reason
        body = TestClient(app).get("/readyz").json()
        assert body["database"] == "ok" and body["status"] == "unavailable"
    finally:
        archive.close()
