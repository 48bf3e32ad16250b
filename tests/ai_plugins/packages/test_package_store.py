"""Package files live in the object store, so every node, ``fsck`` and every backup sees them: a
package uploaded through one node is admitted and run by another (each builds its environment from
the stored file, whose digest the index recorded); fsck counts them as indexed and removes only
unnamed ones; a backup holds them and its restore runs them; files kept in a data directory before
move into the store."""

from __future__ import annotations

import contextlib
import hashlib
import shutil
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select

from ai_plugins.packages.service import PackageService, env_dir, legacy_file
from ai_plugins.runner.registry import PluginRegistry
from ai_plugins.runner.routing import JOB_KIND, Router
from ai_plugins.runner.worker import Worker
from pacs.archive import Archive
from pacs.backup.manifest import read_object_list
from pacs.backup.service import OBJECTS_DIR, backup, restore
from pacs.errors import Conflict
from pacs.fsck import fsck
from pacs.index.models import Instance
from pacs.jobs import JobQueue, JobStatus
from pacs.settings import Settings
from pacs.storage.references import package_key
from tests.ai_plugins.benchmarks.conftest import bench_settings, store_cases
from tests.ai_plugins.packages import builder
from tests.conftest import archive_settings
from tests.factories import CtCase
from tests.pg import postgres_available, temporary_database
from tests.s3server import S3Server


def _node(shared: Settings, data_dir: Path, **overrides: object) -> Settings:
    """One node's settings: its own data directory on the shared index and object store."""
    s3_secret = shared.s3_secret_key.get_secret_value() if shared.s3_secret_key else None
    return bench_settings(data_dir, database_url=shared.database_url, storage_url=shared.storage_url,
                          s3_endpoint=shared.s3_endpoint, s3_access_key=shared.s3_access_key,
                          s3_secret_key=s3_secret, job_max_attempts=1, **overrides)  # fmt: skip


def _run(archive: Archive, done: Callable[[], bool], timeout: float = 240) -> None:
    worker = Worker(archive, concurrency=1, kinds=(JOB_KIND,))
    worker.start()
    try:
        deadline = time.monotonic() + timeout
        while not done():
            assert time.monotonic() < deadline, "the worker did not finish in time"
            time.sleep(0.2)
    finally:
        worker.stop()


def _run_on(archive: Archive, study_uid: str) -> JobStatus:
    registry = PluginRegistry(archive.engine, use_entry_points=False)
    registry.set_enabled("acme-detector", "1.0", True)
    queue = JobQueue(archive.engine)
    job, _ = Router(registry).rerun(archive.engine, queue, study_uid, "acme-detector", requested_by="doc")
    _run(archive, lambda: queue.get(job.id).status in (JobStatus.SUCCEEDED, JobStatus.FAILED))
    final = queue.get(job.id)
    assert final.status is JobStatus.SUCCEEDED, final.error
    return final.status


def _instances(archive: Archive) -> int:
    with archive.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(Instance)).scalar_one())


@pytest.fixture
def shared(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Settings]:
    """One PostgreSQL database and S3 bucket that several nodes share."""
    if not postgres_available():
        pytest.skip("PostgreSQL not running")
    yield from archive_settings("postgres-s3", tmp_path / "shared", request)


@pytest.mark.postgres
@pytest.mark.s3
def test_upload_on_one_node_admit_and_run_on_others_then_backup_and_restore(
    shared: Settings, tmp_path: Path, small_cases: list[CtCase], request: pytest.FixtureRequest
) -> None:
    data = builder.package()
    digest = hashlib.sha256(data).hexdigest()
    with contextlib.ExitStack() as stack:
        a = stack.enter_context(Archive.open(_node(shared, tmp_path / "a")))
        b = stack.enter_context(Archive.open(_node(shared, tmp_path / "b")))
        store_cases(a, small_cases[:1])
        # uploaded through A: the file is in the shared store, nothing in A's data directory
        PackageService(a).upload(data, filename="acme.zip", uploaded_by="acme")
        assert a.store.get_bytes(package_key(digest)) == data
        assert not legacy_file(a.settings, digest).exists()
        # admitted through B, which never saw the upload: it reads the file from the store
        PackageService(b).admit("acme-detector", "1.0", admitted_by="boss")
        assert env_dir(b.settings, digest).is_dir() and not env_dir(a.settings, digest).exists()
        # run by A's worker, which builds its own environment from the stored file
        _run_on(a, small_cases[0].study_uid)
        assert env_dir(a.settings, digest).is_dir()

        # a third node whose copy of the file was tampered with refuses to build from it
        a.store.put_bytes(package_key(digest), builder.package(code="# other\n"))
        c = stack.enter_context(Archive.open(_node(shared, tmp_path / "c")))
        with pytest.raises(Conflict, match="no longer matches its digest"):
            PackageService(c).runnable(digest)
        assert not env_dir(c.settings, digest).exists()
        a.store.put_bytes(package_key(digest), data)
        # admitting again on C installs it there and keeps the first admission's record
        assert PackageService(c).admit("acme-detector", "1.0", admitted_by="root").admitted_by == "boss"
        assert env_dir(c.settings, digest).is_dir()

        # fsck: the package object is indexed, not an orphan
        report = fsck(a, deep=True, repair=True, grace_s=0)
        assert report.orphans == [] and report.missing == [] and report.wrong_hash == []
        instances = _instances(a)  # the study and the SR the run wrote
        assert instances == len(small_cases[0].datasets) + 1 and report.checked == instances + 1

        # a PostgreSQL backup (pg_dump snapshot) lists the package; its restore admits nothing
        # anew and runs the package from the restored object
        if shutil.which("pg_dump") is None:
            pytest.skip("pg_dump not installed")
        dest = tmp_path / "backup"
        manifest = backup(a, dest)
        assert package_key(digest) in {e.key for e in read_object_list(dest)}
        assert manifest.instances == instances and manifest.objects == instances + 1
        server: S3Server = request.getfixturevalue("s3_server")
        with temporary_database("cloudfilm_restore") as url:
            target = bench_settings(tmp_path / "restored", database_url=url, storage_url="s3://restored-packages",
                                    s3_endpoint=server.endpoint, s3_access_key=server.access_key,
                                    s3_secret_key=server.secret_key, job_max_attempts=1)  # fmt: skip
            restore(dest, target)
            with Archive.open(target, create=False) as restored:
                assert restored.store.get_bytes(package_key(digest)) == data
                _run_on(restored, small_cases[0].study_uid)
                assert env_dir(restored.settings, digest).is_dir()


def test_fsck_backup_restore_and_legacy_files_on_sqlite(tmp_path: Path, small_cases: list[CtCase],
                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    data = builder.package()
    digest = hashlib.sha256(data).hexdigest()
    with Archive.open(bench_settings(tmp_path / "source")) as archive:
        store_cases(archive, small_cases[:1])
        packages = PackageService(archive)
        packages.upload(data, filename="acme.zip", uploaded_by="acme")
        n = len(small_cases[0].datasets)

        # an unnamed object under _packages/ is an orphan (removed once past the grace); a named one is not
        stray = package_key("0" * 64)
        archive.store.put_bytes(stray, b"left by an upload that never committed")
        young = fsck(archive, repair=True)  # default grace: too young to remove
        assert young.orphans == [stray] and young.removed_orphans == 0
        report = fsck(archive, deep=True, repair=True, grace_s=0)
        assert report.orphans == [stray] and report.removed_orphans == 1 and report.checked == n + 1
        assert archive.store.head(stray) is None and archive.store.head(package_key(digest)) is not None
        assert fsck(archive, grace_s=0).problems == 0

        # a package uploaded before the files moved into the store: moved at node start, not before
        archive.store.delete(package_key(digest))
        assert fsck(archive).missing == [package_key(digest)]
        legacy = legacy_file(archive.settings, digest)
        legacy.parent.mkdir(parents=True)
        legacy.write_bytes(data)
        monkeypatch.setattr("ai_plugins.runner.worker.preload", lambda modules: None)  # no fork server here
        Worker(archive, concurrency=1, kinds=(JOB_KIND,))._prepare()
        assert archive.store.get_bytes(package_key(digest)) == data and not legacy.exists()

        # ... or at admission when the node had not started since
        archive.store.delete(package_key(digest))
        legacy.write_bytes(data)
        packages.admit("acme-detector", "1.0", admitted_by="boss")
        assert archive.store.get_bytes(package_key(digest)) == data and not legacy.exists()
        # a package whose file is gone everywhere cannot be installed; the message says what to do
        _remove_env(env_dir(archive.settings, digest))
        archive.store.delete(package_key(digest))
        with pytest.raises(Conflict, match="missing from the object store; upload it again"):
            packages.runnable(digest)
        assert packages.upload(data, filename="acme.zip", uploaded_by="acme")[1] is False  # as the message says
        assert packages.runnable(digest)[0].root == env_dir(archive.settings, digest)

        dest = tmp_path / "backup"
        manifest = backup(archive, dest)
        assert manifest.instances == n and manifest.objects == n + 1
        assert (dest / OBJECTS_DIR / package_key(digest)).read_bytes() == data

    target = bench_settings(tmp_path / "restored", job_max_attempts=1)
    restore(dest, target)
    with Archive.open(target, create=False) as restored:
        assert not env_dir(restored.settings, digest).exists()
        _run_on(restored, small_cases[0].study_uid)  # the environment is rebuilt from the restored object
        assert env_dir(restored.settings, digest).is_dir()
        assert fsck(restored, deep=True, grace_s=0).problems == 0


def _remove_env(env: Path) -> None:
    """What an operator does to drop a node's cached environment (they are read-only: 0555/0444)."""
    for path in [env, *env.rglob("*")]:
        if path.is_dir():
            path.chmod(0o755)
    shutil.rmtree(env)
