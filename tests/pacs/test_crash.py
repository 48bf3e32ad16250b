"""Durability: a process killed with SIGKILL never leaves an index row without its object, and what it
left half-written (temp, staging and spool files) is removed at the next start or by ``fsck --repair``."""

from __future__ import annotations

import contextlib
import http.client
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from pynetdicom import AE

from pacs.archive import Archive
from pacs.fsck import fsck
from pacs.settings import Settings
from tests.cli import CLOUDFILM, run_cli, settings_env
from tests.factories import make_ct_study, to_bytes, write_files
from tests.net import free_ports
from tests.pacs.dimse.support import run_tool

_KILL_BEFORE_COMMIT = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path

    import pacs.ingest
    from pacs.archive import Archive
    from pacs.settings import Settings

    def die_before_commit(engine, records, before_commit=None):
        before_commit()  # waits until the objects are durable under their keys
        os.kill(os.getpid(), signal.SIGKILL)  # the index transaction is not committed

    pacs.ingest.commit_batch = die_before_commit
    archive = Archive.open(Settings())
    archive.ingest.store_file(Path(sys.argv[1]))
    print("not reached")
    """
)


def test_sigkill_between_object_write_and_index_commit(settings: Settings, tmp_path: Path) -> None:
    dicom = tmp_path / "one.dcm"
    dicom.write_bytes(to_bytes(make_ct_study(n_slices=1, seed=50)[0]))
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")} | settings_env(settings)
    proc = subprocess.run([sys.executable, "-c", _KILL_BEFORE_COMMIT, str(dicom)], env=env,
                          capture_output=True, text=True, timeout=120, check=False)
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "not reached" not in proc.stdout

    with Archive.open(settings) as archive:
        report = fsck(archive)
        assert report.checked == 0 and report.missing == []
        assert len(report.orphans) == 1  # the object that was written but never indexed

    kept = run_cli("fsck", "--repair", env=settings_env(settings))  # default grace: a fresh orphan is left alone
    assert "0 orphan objects removed" in kept.stdout
    repaired = run_cli("fsck", "--repair", "--grace", "0", env=settings_env(settings))
    assert "1 orphan objects removed" in repaired.stdout, repaired.stdout + repaired.stderr
    clean = run_cli("fsck", env=settings_env(settings))
    assert clean.returncode == 0 and "0 instances checked, 0 problems" in clean.stdout


def test_sigkill_at_random_moments_during_import(local_archive: Archive, tmp_path: Path) -> None:
    settings = local_archive.settings
    local_archive.close()
    files = write_files(make_ct_study(n_slices=60, rows=256, cols=256, seed=51), tmp_path / "in")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")} | settings_env(settings)
    for delay in (0.8, 1.1, 1.5):
        proc = subprocess.Popen([CLOUDFILM, "import", str(tmp_path / "in")], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        with Archive.open(settings) as archive:
            report = fsck(archive)
            assert report.missing == [] and report.wrong_size == []  # never a row without its object
    final = run_cli("import", str(tmp_path / "in"), env=settings_env(settings))
    assert final.returncode == 0, final.stderr
    with Archive.open(settings) as archive:
        report = fsck(archive, repair=True, grace_s=0)
        assert report.checked == len(files) and report.missing == []
        assert fsck(archive).problems == 0


# --- leftovers of writes killed mid-way: removed at start and by fsck --repair, never anything acknowledged ---

_KILL_MID_OBJECT_WRITE = textwrap.dedent(
    """
    import os, signal, sys
    from pathlib import Path

    import minio
    from pacs.archive import Archive
    from pacs.settings import Settings

    def die(*args, **kwargs):
        os.kill(os.getpid(), signal.SIGKILL)

    # Filesystem store: the temp file is written; the process dies before its sync and rename.
    os.fdatasync = die
    # S3: the multipart upload is begun and a part sent; the process dies before it is completed.
    upload_part = minio.Minio._upload_part
    def part_then_die(self, *args, **kwargs):
        upload_part(self, *args, **kwargs)
        die()
    minio.Minio._upload_part = part_then_die

    archive = Archive.open(Settings())
    archive.ingest.store_file(Path(sys.argv[1]))
    print("not reached")
    """
)

_BIG = 3072  # rows and columns of an 18 MiB CT slice: past S3's multipart threshold (16 MiB)


def _env_of(settings: Settings, **extra: str) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("CLOUDFILM_")} | settings_env(settings) | extra


def _kill_mid_object_write(settings: Settings, tmp_path: Path) -> None:
    """An ingest whose process is SIGKILLed while the object is being written to the store."""
    big = tmp_path / "big.dcm"
    big.write_bytes(to_bytes(make_ct_study(n_slices=1, rows=_BIG, cols=_BIG, seed=60)[0]))
    proc = subprocess.run([sys.executable, "-c", _KILL_MID_OBJECT_WRITE, str(big)], env=_env_of(settings),
                          capture_output=True, text=True, timeout=120, check=False)  # fmt: skip
    assert proc.returncode == -signal.SIGKILL, proc.stderr
    assert "not reached" not in proc.stdout


def _staged(settings: Settings) -> tuple[str, ...]:
    with Archive.open(settings) as archive:
        return archive.store.cleanup_temp(0, remove=False)


def test_a_write_killed_mid_object_is_reported_by_fsck_and_removed_by_repair(settings: Settings,
                                                                            tmp_path: Path) -> None:  # fmt: skip
    write_files(make_ct_study(n_slices=3, rows=64, cols=64, seed=61), tmp_path / "in")
    assert run_cli("import", str(tmp_path / "in"), env=settings_env(settings)).returncode == 0
    _kill_mid_object_write(settings, tmp_path)
    [leftover] = _staged(settings)
    with Archive.open(settings) as archive:
        assert fsck(archive).leftovers == []  # younger than the grace: it could be a live write's
    listed = run_cli("fsck", "--grace", "0", env=settings_env(settings))
    assert listed.returncode == 1 and f"leftover: {leftover}" in listed.stdout, listed.stdout + listed.stderr
    assert _staged(settings) == (leftover,)  # reported, not removed
    repaired = run_cli("fsck", "--repair", "--grace", "0", env=settings_env(settings))
    assert repaired.returncode == 0 and "1 leftovers removed" in repaired.stdout, repaired.stdout + repaired.stderr
    assert _staged(settings) == ()
    with Archive.open(settings) as archive:
        report = fsck(archive, deep=True, grace_s=0)
        assert (report.checked, report.problems) == (3, 0)  # every acknowledged instance intact


@contextmanager
def _serving(env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """``cloudfilm serve`` until it answers HTTP and C-ECHO; SIGINT on exit unless it is dead already."""
    http, dicom = env["CLOUDFILM_HTTP_PORT"], env["CLOUDFILM_DICOM_PORT"]
    with open(log, "ab") as out:
        proc = subprocess.Popen([CLOUDFILM, "serve"], env=env, stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 90
        while True:
            assert proc.poll() is None, log.read_text(errors="replace")[-4000:]
            assert time.monotonic() < deadline, "cloudfilm serve never answered"
            with contextlib.suppress(httpx.HTTPError):
                if (httpx.get(f"http://127.0.0.1:{http}/healthz", timeout=2).status_code == 200
                        and run_tool("echoscu", "-aec", "CLOUDFILM", "127.0.0.1", dicom, timeout=10).returncode == 0):
                    break  # fmt: skip
            time.sleep(0.3)
        yield proc
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)


def _held_back(sock: Any, after: int, gate: threading.Event) -> None:
    """Make a peer's socket stop sending after ``after`` bytes until ``gate`` is set (a slow sender)."""
    send, sent = sock.send, [0]

    def send_slowly(data: bytes) -> None:
        sent[0] += len(data)
        if sent[0] > after:
            gate.wait(60)
        send(data)

    sock.send = send_slowly


def _cstore_cut_off(port: int, ds: Any, gate: threading.Event) -> threading.Thread:
    """A C-STORE of ``ds`` that stops mid-dataset (past the in-memory limit) until ``gate`` is set."""
    ae = AE(ae_title="SLOWMOD")
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = 30
    ae.add_requested_context(ds.SOPClassUID, ds.file_meta.TransferSyntaxUID)
    assoc = ae.associate("127.0.0.1", port, ae_title="CLOUDFILM")
    assert assoc.is_established
    _held_back(assoc.dul.socket, 10 * 1024 * 1024, gate)

    def send() -> None:
        with contextlib.suppress(Exception):  # the archive is killed mid-dataset
            assoc.send_c_store(ds)

    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    return thread


def _stow_cut_off(port: int, data: bytes) -> http.client.HTTPConnection:
    """A STOW-RS request that has sent 1.5 MiB of its one part (past the in-memory limit) and waits."""
    boundary = "cut-off-boundary"
    head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
    tail = f"\r\n--{boundary}--\r\n".encode()
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    conn.putrequest("POST", "/dicomweb/studies")
    conn.putheader("Content-Type", f'multipart/related; type="application/dicom"; boundary={boundary}')
    conn.putheader("Content-Length", str(len(head) + len(data) + len(tail)))
    conn.endheaders()
    conn.send(head + data[: 1536 * 1024])
    return conn


def _wait_for_files(directory: Path, pattern: str, timeout: float = 60) -> list[Path]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = sorted(directory.glob(pattern)) if directory.is_dir() else []
        if found:
            return found
        time.sleep(0.05)
    raise AssertionError(f"no {pattern} appeared in {directory}")


@pytest.mark.slow
def test_leftovers_of_a_killed_serve_are_removed_when_it_starts_again(settings: Settings, tmp_path: Path) -> None:
    grace = 3.0
    http_port, dicom_port = free_ports(2)
    env = _env_of(settings, CLOUDFILM_HTTP_PORT=str(http_port), CLOUDFILM_DICOM_PORT=str(dicom_port),
                  CLOUDFILM_DICOM_HOST="127.0.0.1", CLOUDFILM_WORKER_CONCURRENCY="0", CLOUDFILM_AUTH_DISABLED="true",
                  CLOUDFILM_LEFTOVER_GRACE=str(grace))  # fmt: skip
    log = tmp_path / "serve.log"
    acknowledged = write_files(make_ct_study(n_slices=3, rows=64, cols=64, seed=62), tmp_path / "in")
    big = make_ct_study(n_slices=1, rows=_BIG, cols=_BIG, seed=63)[0]
    mid = to_bytes(make_ct_study(n_slices=1, rows=1024, cols=1024, seed=64)[0])
    gate = threading.Event()
    with _serving(env, log) as proc:
        stored = run_tool("storescu", "-aec", "CLOUDFILM", "127.0.0.1", dicom_port, *acknowledged)
        assert stored.returncode == 0, stored.stderr
        sender = _cstore_cut_off(dicom_port, big, gate)
        stow = _stow_cut_off(http_port, mid)
        _wait_for_files(settings.spool_dir, "cstore-*.part")
        _wait_for_files(settings.spool_dir, "stow-*.part")
        proc.send_signal(signal.SIGKILL)  # the archive dies while both are being received
        proc.wait(timeout=30)
    gate.set()
    stow.close()
    sender.join(timeout=60)
    _kill_mid_object_write(settings, tmp_path)  # and an import, while writing its object
    leftovers = sorted(p.name for p in settings.spool_dir.iterdir())
    assert [n.split("-")[0] for n in leftovers] == ["cstore", "stow"] and len(_staged(settings)) == 1
    time.sleep(grace + 1)
    with _serving(env, log):  # housekeeping runs before the listeners answer
        assert list(settings.spool_dir.iterdir()) == []
        assert _staged(settings) == ()
    with Archive.open(settings) as archive:
        report = fsck(archive, deep=True, grace_s=0)
        assert (report.checked, report.problems) == (3, 0)
    assert "removed 3 leftover(s) of interrupted writes" in log.read_text()


def test_the_worker_removes_stale_leftovers_when_it_starts_and_leaves_the_rest(local_archive: Archive) -> None:
    settings = local_archive.settings
    local_archive.close()
    spool = settings.spool_dir
    spool.mkdir(parents=True)
    staged_dir = settings.data_dir / "objects" / ".tmp"
    zip_work = spool / "zip-7.work"  # a study ZIP being built when its process died
    (zip_work / "originals").mkdir(parents=True)
    (zip_work / "originals" / "000000.dcm").write_bytes(b"partial")
    stale = [staged_dir / "put-abc123", spool / "stow-1.part", spool / "cstore-2.part", spool / "zip-8.zip"]
    live = [spool / "stow-3.part", spool / "notes.txt"]  # written a moment ago; not a spool file of ours
    for path in stale + live:
        path.write_bytes(b"partial")
    stale.append(zip_work)
    hours_ago = time.time() - 2 * 3600
    for path in [*stale, live[1]]:
        os.utime(path, (hours_ago, hours_ago))
    with open(settings.data_dir / "worker.log", "wb") as out:
        proc = subprocess.Popen([CLOUDFILM, "worker"], env=_env_of(settings), stdout=out, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 60
        while any(p.exists() for p in stale):
            assert proc.poll() is None and time.monotonic() < deadline, (settings.data_dir / "worker.log").read_text()
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=30)
    assert all(p.exists() for p in live)
