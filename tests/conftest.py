"""Shared pytest fixtures. Each area keeps its fixtures in its own section below."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import inspect
from sqlalchemy.engine import Engine

from pacs.archive import Archive
from pacs.index import db
from pacs.index.db import make_engine, upgrade
from pacs.settings import Settings
from pacs.storage.base import ObjectStore
from pacs.storage.filesystem import FilesystemStore
from pacs.storage.s3 import S3Store
from tests.pg import temporary_database
from tests.s3server import S3Server, run_s3_server

# ---------------------------------------------------------------------------------------------
# Object stores (pacs.storage): a real SeaweedFS S3 server per session, a fresh bucket per test.
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS with an S3 gateway on free loopback ports, shared by the whole session."""
    with run_s3_server(tmp_path_factory.mktemp("s3server")) as server:
        yield server


def _drop_bucket(store: S3Store) -> None:
    """Best effort: empty and remove a test bucket so SeaweedFS frees its volume."""
    client = store._client
    with contextlib.suppress(Exception):
        for obj in client.list_objects(store.bucket, recursive=True):
            if obj.object_name:
                client.remove_object(store.bucket, obj.object_name)
        client.remove_bucket(store.bucket)


@pytest.fixture
def s3_store(s3_server: S3Server) -> Iterator[S3Store]:
    """An :class:`S3Store` on a new, uniquely named bucket (created on first use)."""
    store = S3Store(
        endpoint=s3_server.endpoint,
        bucket=f"test-{uuid.uuid4().hex[:24]}",
        access_key=s3_server.access_key,
        secret_key=s3_server.secret_key,
        secure=False,
        region=None,
    )
    yield store
    _drop_bucket(store)
    store.close()


@pytest.fixture
def fs_store(tmp_path: Path) -> FilesystemStore:
    """A :class:`FilesystemStore` rooted at ``tmp_path / "objects"``."""
    return FilesystemStore(tmp_path / "objects")


@pytest.fixture(params=["fs", pytest.param("s3", marks=pytest.mark.s3)])
def object_store(request: pytest.FixtureRequest) -> ObjectStore:
    """Each object store backend in turn: the same tests run against both."""
    store: ObjectStore = request.getfixturevalue(f"{request.param}_store")
    return store


# ---------------------------------------------------------------------------------------------
# (other areas append their fixtures below, each in its own section)
# ---------------------------------------------------------------------------------------------


# ---------------------------------------------------------------------------------------------
# Archive core: an open Archive on SQLite + filesystem, and on PostgreSQL + SeaweedFS S3.
# ---------------------------------------------------------------------------------------------

ARCHIVE_BACKENDS = ["sqlite-fs", pytest.param("postgres-s3", marks=[pytest.mark.postgres, pytest.mark.s3])]


def archive_settings(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """Settings for a fresh, empty archive on ``backend`` (a new PG database and S3 bucket each time)."""
    if backend == "sqlite-fs":
        yield Settings(data_dir=tmp_path / "data", http_port=0, dicom_port=0)
        return
    server: S3Server = request.getfixturevalue("s3_server")
    template: str = request.getfixturevalue("pg_template")
    bucket = f"archive-{uuid.uuid4().hex[:20]}"
    with temporary_database(template=template) as url:
        yield Settings(
            data_dir=tmp_path / "data", http_port=0, dicom_port=0, database_url=url, storage_url=f"s3://{bucket}",
            s3_endpoint=server.endpoint, s3_access_key=server.access_key, s3_secret_key=server.secret_key,
        )


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test's database is copied from (fast)."""
    with temporary_database("cloudfilm_template") as url:
        engine = make_engine(url)
        upgrade(engine)
        engine.dispose()
        yield url.rsplit("/", 1)[1]


@pytest.fixture(scope="session", autouse=True)
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A new SQLite index starts as a copy of one migrated once per test process, as a new PostgreSQL
    one starts from ``pg_template``: running the migrations costs about 0.3 s of CPU per archive, and
    the suite opens well over a thousand. Only the upgrade to head of an index without a table is
    served from the copy (then upgraded as usual, which finds nothing to do); the migrations themselves
    run from empty in ``tests/pacs/test_migrations.py`` and wherever a revision is named."""
    path = tmp_path_factory.mktemp("sqlite-template") / "index.sqlite3"
    engine = make_engine(f"sqlite:///{path}")
    upgrade(engine)
    engine.dispose()
    migrate = db.upgrade

    def upgrade_from_template(engine: Engine, revision: str = "head") -> None:
        if revision == "head" and engine.dialect.name == "sqlite" and not inspect(engine).get_table_names():
            raw = engine.raw_connection()
            try:
                raw.commit()  # no transaction open: the backup replaces the whole database
                with contextlib.closing(sqlite3.connect(path)) as template:
                    template.backup(raw.driver_connection)  # type: ignore[arg-type]
            finally:
                raw.close()
        migrate(engine, revision)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(db, "upgrade", upgrade_from_template)
        yield path


@pytest.fixture(params=ARCHIVE_BACKENDS)
def archive_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
def settings(archive_backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Settings]:
    yield from archive_settings(archive_backend, tmp_path, request)


@pytest.fixture
def archive(settings: Settings) -> Iterator[Archive]:
    """An open, migrated, empty archive on each backend in turn."""
    with Archive.open(settings) as opened:
        yield opened


@pytest.fixture(scope="module", params=ARCHIVE_BACKENDS)
def module_archive(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Archive]:
    """One archive per test module and backend, for read-only tests that share loaded data."""
    for settings in archive_settings(str(request.param), tmp_path_factory.mktemp("archive"), request):
        with Archive.open(settings) as opened:
            yield opened


@pytest.fixture
def local_archive(tmp_path: Path) -> Iterator[Archive]:
    """An archive on the embedded default only (SQLite + filesystem), for tests of one backend."""
    with Archive.open(Settings(data_dir=tmp_path / "data", http_port=0, dicom_port=0)) as opened:
        yield opened


# ---------------------------------------------------------------------------------------------
# Order: whole modules, longest first (tests/schedule.py), so the two xdist workers finish together.
# ---------------------------------------------------------------------------------------------


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    from tests.schedule import load_durations, longest_first

    longest_first(items, load_durations())
