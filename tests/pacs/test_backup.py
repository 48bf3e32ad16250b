"""``cloudfilm backup`` and ``cloudfilm restore`` as an operator runs them: against a serving archive
while a modality keeps storing, into an empty archive of the same kind and from SQLite + filesystem
into PostgreSQL + S3; the restored archive passes ``fsck --deep`` and answers QIDO, metadata and
WADO like the original for everything acknowledged before the backup started."""

from __future__ import annotations

import json
import shutil
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from pynetdicom import AE
from pynetdicom.sop_class import CTImageStorage

from pacs.archive import Archive
from pacs.backup.manifest import MANIFEST, OBJECT_LIST, read_object_list
from pacs.settings import Settings
from tests.cli import run_cli, serving, settings_env
from tests.conftest import archive_settings
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.net import free_port
from tests.pg import postgres_available, temporary_database
from tests.s3server import S3Server

pytestmark = pytest.mark.slow


class Modality(threading.Thread):
    """Stores small CT studies over C-STORE, one after another, noting when each was acknowledged."""

    def __init__(self, port: int) -> None:
        super().__init__(name="modality", daemon=True)
        self.port = port
        self.stop = threading.Event()
        self.acknowledged: list[tuple[float, str]] = []  # (time, study UID) once its last instance is stored
        self.error: BaseException | None = None

    def run(self) -> None:
        ae = AE(ae_title="MODALITY")
        ae.add_requested_context(CTImageStorage)
        ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
        try:
            n = 0
            while not self.stop.is_set():
                study = make_ct_study(PATIENTS[n % len(PATIENTS)], n_slices=3, rows=32, cols=32, seed=7000 + n)
                assoc = ae.associate("127.0.0.1", self.port, ae_title="CLOUDFILM")
                assert assoc.is_established, "association refused"
                try:
                    for ds in study:
                        status = assoc.send_c_store(ds)
                        assert status and status.Status == 0, status
                finally:
                    assoc.release()
                self.acknowledged.append((time.time(), str(study[0].StudyInstanceUID)))
                n += 1
        except BaseException as exc:  # reported by the test
            self.error = exc

    def studies_before(self, moment: float) -> list[str]:
        return [uid for at, uid in self.acknowledged if at < moment]

    def wait_for(self, count: int, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while len(self.acknowledged) < count:
            assert self.error is None, self.error
            assert time.monotonic() < deadline, "the modality stored too little"
            time.sleep(0.1)


@contextmanager
def _serving(settings: Settings) -> Iterator[tuple[str, int]]:
    dicom_port = free_port()
    with serving(settings.data_dir, env=settings_env(settings), CLOUDFILM_AUTH_DISABLED="true",
                 CLOUDFILM_WORKER_CONCURRENCY="0", CLOUDFILM_DICOM_PORT=str(dicom_port)) as (url, _log):
        yield url, dicom_port


def _answers(url: str, studies: list[str]) -> dict[str, object]:
    """What a DICOMweb client gets for ``studies``: QIDO rows, metadata and the bytes of every
    instance (WADO-URI), with the server's own address taken out."""
    seen: dict[str, object] = {}
    with httpx.Client(base_url=url, timeout=60) as client:
        for study in studies:
            qido = client.get("/dicomweb/studies", params={"StudyInstanceUID": study})
            metadata = client.get(f"/dicomweb/studies/{study}/metadata")
            assert qido.status_code == 200 and metadata.status_code == 200, (qido.text, metadata.text)
            seen[f"qido {study}"] = json.loads(qido.text.replace(url, "BASE"))
            seen[f"metadata {study}"] = json.loads(metadata.text.replace(url, "BASE"))
            for item in json.loads(metadata.text):
                series, sop = item["0020000E"]["Value"][0], item["00080018"]["Value"][0]
                wado = client.get("/wado", params={"requestType": "WADO", "studyUID": study, "seriesUID": series,
                                                   "objectUID": sop, "contentType": "application/dicom"})
                assert wado.status_code == 200, wado.text
                seen[f"wado {sop}"] = wado.content
    return seen


def _restore_and_compare(backup: Path, target: Settings, studies: list[str], expected: dict[str, object]) -> None:
    restored = run_cli("restore", str(backup), env=settings_env(target))
    assert restored.returncode == 0, restored.stderr
    assert "restored" in restored.stdout
    deep = run_cli("fsck", "--deep", env=settings_env(target))
    assert deep.returncode == 0 and " 0 problems" in deep.stdout, deep.stdout + deep.stderr
    with _serving(target) as (url, _port):
        assert _answers(url, studies) == expected
    again = run_cli("restore", str(backup), env=settings_env(target))
    assert again.returncode == 1 and "already holds" in again.stderr  # never over an archive


def _backup_while_storing(source: Settings, dest: Path) -> tuple[list[str], dict[str, object]]:
    """Two backups into ``dest`` while a modality stores; the studies acknowledged before the first
    started and what the source answers for them."""
    with _serving(source) as (url, dicom_port):
        modality = Modality(dicom_port)
        modality.start()
        try:
            modality.wait_for(3)
            started = time.time()
            first = run_cli("backup", str(dest), env=settings_env(source))
            assert first.returncode == 0, first.stderr
            assert "0 already there" in first.stdout, first.stdout
            objects = len(list(read_object_list(dest)))
            modality.wait_for(len(modality.acknowledged) + 2)
            second = run_cli("backup", str(dest), env=settings_env(source))  # incremental
            assert second.returncode == 0, second.stderr
            copied = int(second.stdout.split(" objects copied")[0].rsplit(" ", 1)[1])
            already = int(second.stdout.split(" already there")[0].rsplit(" ", 1)[1])
            now = len(list(read_object_list(dest)))
            assert already == objects and copied == now - objects > 0, second.stdout  # only the new ones
        finally:
            modality.stop.set()
            modality.join(timeout=60)
        assert modality.error is None, modality.error
        studies = modality.studies_before(started)
        assert len(studies) >= 3
        return studies, _answers(url, studies)


def test_sqlite_backup_restores_into_sqlite_and_into_postgres_s3(tmp_path: Path,
                                                                 request: pytest.FixtureRequest) -> None:
    source = Settings(data_dir=tmp_path / "source")
    dest = tmp_path / "backup"
    studies, expected = _backup_while_storing(source, dest)
    manifest = json.loads((dest / MANIFEST).read_text())
    assert manifest["index_kind"] == "sqlite" and manifest["secret_key"] is False
    assert not (dest / "secret_key").exists()  # only with --with-secret-key
    _restore_and_compare(dest, Settings(data_dir=tmp_path / "restored"), studies, expected)
    if not postgres_available():
        pytest.skip("PostgreSQL not running: SQLite → PostgreSQL + S3 not tried")
    server: S3Server = request.getfixturevalue("s3_server")
    with temporary_database("cloudfilm_restore") as url:  # empty: no schema
        target = Settings(data_dir=tmp_path / "grown", database_url=url, storage_url=f"s3://restore-{uuid.uuid4().hex[:12]}",
                          s3_endpoint=server.endpoint, s3_access_key=server.access_key,
                          s3_secret_key=server.secret_key)  # fmt: skip
        _restore_and_compare(dest, target, studies, expected)
        with Archive.open(target, create=False) as archive:  # ids go on after the copied ones
            for ds in make_ct_study(n_slices=2, rows=16, cols=16, seed=7200):
                assert archive.ingest.store_bytes(to_bytes(ds)).ok


def _any_key(dest: Path) -> str:
    return next(iter(read_object_list(dest))).key


@pytest.mark.postgres
@pytest.mark.s3
def test_postgres_s3_backup_restores_into_postgres_s3(tmp_path: Path, request: pytest.FixtureRequest) -> None:
    if not postgres_available():
        pytest.skip("PostgreSQL not running")
    if shutil.which("pg_dump") is None:
        pytest.skip("pg_dump not installed")
    for source in archive_settings("postgres-s3", tmp_path / "source", request):
        dest = tmp_path / "backup"
        studies, expected = _backup_while_storing(source, dest)
        assert json.loads((dest / MANIFEST).read_text())["index_kind"] == "postgresql"
        server: S3Server = request.getfixturevalue("s3_server")
        with temporary_database("cloudfilm_restore") as url:
            target = Settings(data_dir=tmp_path / "target", database_url=url,
                              storage_url=f"s3://restore-{uuid.uuid4().hex[:12]}", s3_endpoint=server.endpoint,
                              s3_access_key=server.access_key, s3_secret_key=server.secret_key)  # fmt: skip
            _restore_and_compare(dest, target, studies, expected)
        refused = run_cli("restore", str(dest), env={"CLOUDFILM_DATA_DIR": str(tmp_path / "small")})
        assert refused.returncode == 1 and "restores into PostgreSQL only" in refused.stderr


def test_damaged_or_foreign_backups_are_refused(tmp_path: Path, local_archive: Archive) -> None:
    for ds in make_ct_study(n_slices=2, rows=16, cols=16, seed=7100):
        assert local_archive.ingest.store_bytes(to_bytes(ds)).ok
    dest = tmp_path / "backup"
    env = settings_env(local_archive.settings)
    assert run_cli("backup", str(dest), "--with-secret-key", env=env).returncode == 0
    assert (dest / "secret_key").stat().st_mode & 0o077 == 0
    target = {"CLOUDFILM_DATA_DIR": str(tmp_path / "target")}
    nothing = run_cli("restore", str(tmp_path), env=target)
    assert nothing.returncode == 1 and "holds no cloudfilm backup" in nothing.stderr
    listed = (dest / OBJECT_LIST).read_text()
    (dest / OBJECT_LIST).write_text(listed.replace(".dcm\t", ".dcm\t1"))  # sizes changed
    damaged = run_cli("restore", str(dest), env=target)
    assert damaged.returncode == 1 and "damaged backup" in damaged.stderr
    (dest / OBJECT_LIST).write_text(listed)
    key = _any_key(dest)
    (dest / "objects" / key).write_bytes(b"not the object")
    corrupt = run_cli("restore", str(dest), env=target)
    assert corrupt.returncode == 1 and "damaged backup" in corrupt.stderr
    assert not (tmp_path / "target" / "index.sqlite3").exists()  # the index is written after the objects
    assert run_cli("backup", str(dest), "--with-secret-key", env=env).returncode == 0  # repairs the damaged copy
    restored = run_cli("restore", str(dest), env=target)  # resumes over the objects already stored
    assert restored.returncode == 0, restored.stderr
    key = (local_archive.settings.data_dir / "secret_key").read_text()
    assert (tmp_path / "target" / "secret_key").read_text() == key
