"""Fixtures for the accounts services: a migrated index on SQLite and on PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import Engine

from pacs.index import db
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.pg import temporary_database

KEY = b"k" * 32


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """A freshly migrated index database on each backend."""
    if request.param == "sqlite":
        eng = db.make_engine(f"sqlite:///{tmp_path / 'index.sqlite3'}")
        db.upgrade(eng)
        yield eng
        eng.dispose()
        return
    with temporary_database() as url:
        eng = db.make_engine(url, pool_size=2)
        db.upgrade(eng)
        yield eng
        eng.dispose()


@pytest.fixture
def study_uid(engine: Engine, tmp_path: Path) -> str:
    """One small CT study of ``PATIENTS[1]`` (with an issuer) in the index."""
    from pacs.ingest import IngestService
    from pacs.storage.filesystem import FilesystemStore

    datasets = make_ct_study(PATIENTS[1], n_slices=2, rows=16, cols=16)
    ingest = IngestService(engine, FilesystemStore(tmp_path / "objects"))
    for ds in datasets:
        assert ingest.store_bytes(to_bytes(ds)).ok
    return str(datasets[0].StudyInstanceUID)
