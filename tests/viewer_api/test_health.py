"""Liveness, readiness and metrics of the HTTP app."""

from __future__ import annotations

import shutil
import warnings

from fastapi.testclient import TestClient

from pacs.archive import Archive
from pacs.index.db import make_engine
from tests.factories import make_ct_study, to_bytes
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
