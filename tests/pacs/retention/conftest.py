"""An archive with retention tiers on each backend: a directory beside the archive's (SQLite +
filesystem), and on PostgreSQL + SeaweedFS another bucket with a colder storage class and a
storage class in the archive's own bucket."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from pacs.archive import Archive
from pacs.retention.rules import RetentionRule, Tier
from pacs.settings import Settings
from tests.conftest import archive_settings
from tests.factories import to_bytes
from viewer_api.app import create_app

COLD_CLASS = "STANDARD_IA"

OpenArchive = Callable[..., Archive]


def tiers_for(settings: Settings, tmp_path: Path) -> dict[str, Tier]:
    if settings.resolved_storage_url.startswith("file://"):
        return {"cold": Tier(url=f"file://{tmp_path / 'cold'}")}
    return {"cold": Tier(url=f"s3://cold-{uuid.uuid4().hex[:20]}", storage_class=COLD_CLASS),
            "ia": Tier(storage_class=COLD_CLASS)}  # fmt: skip


@pytest.fixture
def open_archive(archive_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[OpenArchive]:
    """Open the test's archive (one index, store and tiers) with the given rules; each call a new Archive."""
    opened: list[Archive] = []
    for base in archive_settings(archive_backend, tmp_path, request):
        yield _opener(base, tiers_for(base, tmp_path), opened)
        for archive in opened:
            archive.close()


def _opener(base: Settings, tiers: dict[str, Tier], opened: list[Archive]) -> OpenArchive:
    values = {name: getattr(base, name) for name in base.model_fields_set}

    def open_with(rules: list[RetentionRule] | None = None, run_at: str = "02:00") -> Archive:
        settings = Settings(**values, auth_disabled=True, retention_tiers=tiers, retention_rules=rules or [],
                            retention_run_at=run_at)  # fmt: skip
        archive = Archive.open(settings)
        opened.append(archive)
        return archive

    return open_with


def store(archive: Archive, datasets: list) -> None:
    for ds in datasets:
        assert archive.ingest.store_bytes(to_bytes(ds)).ok


@pytest.fixture
def client_of() -> Iterator[Callable[[Archive], TestClient]]:
    clients: list[TestClient] = []

    def make(archive: Archive) -> TestClient:
        client = TestClient(create_app(archive))
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
