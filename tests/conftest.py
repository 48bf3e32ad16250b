"""Shared pytest fixtures. Each area keeps its fixtures in its own section below."""

from __future__ import annotations

import contextlib
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from pacs.storage.base import ObjectStore
from pacs.storage.filesystem import FilesystemStore
from pacs.storage.s3 import S3Store
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
