"""``cloudfilm serve`` runs the DICOM listener on CLOUDFILM_DICOM_PORT as CLOUDFILM_AE_TITLE."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from pacs.archive import Archive
from pacs.dimse import DicomListener
from pacs.settings import Settings
from tests.net import free_port
from tests.pacs.dimse.support import run_tool
from viewer_api.server import SERVICE_FACTORIES, dicom_listener


def test_listener_is_a_serve_service(tmp_path: Path) -> None:
    assert dicom_listener in SERVICE_FACTORIES
    with Archive.open(Settings(data_dir=tmp_path / "a", dicom_port=0)) as archive:
        assert isinstance(dicom_listener(archive), DicomListener)
    with Archive.open(Settings(data_dir=tmp_path / "b", dicom_enabled=False)) as archive:
        assert dicom_listener(archive) is None


def _http_up(port: int) -> bool:
    try:
        return httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


def test_cloudfilm_serve_answers_echo(tmp_path: Path) -> None:
    port, http_port = free_port(), free_port()
    env = {**os.environ, "CLOUDFILM_DATA_DIR": str(tmp_path / "data"), "CLOUDFILM_HTTP_PORT": str(http_port),
           "CLOUDFILM_DICOM_PORT": str(port), "CLOUDFILM_DICOM_HOST": "127.0.0.1", "CLOUDFILM_AE_TITLE": "FILMROOM",
           "CLOUDFILM_WORKER_CONCURRENCY": "0"}
    env.pop("CLOUDFILM_CONFIG", None)
    cli = Path(sys.executable).with_name("cloudfilm")
    proc = subprocess.Popen([str(cli), "serve"], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            # The DICOM listener starts before the HTTP server; SIGINT is sent once both are up.
            if run_tool("echoscu", "-aec", "FILMROOM", "127.0.0.1", port, timeout=10).returncode == 0 and _http_up(
                    http_port):
                break
            assert proc.poll() is None, proc.stdout.read() if proc.stdout else ""
            time.sleep(0.3)
        else:
            raise AssertionError("the DICOM listener or the HTTP server never answered")
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            output = proc.communicate(timeout=30)[0]
        except subprocess.TimeoutExpired:
            proc.kill()
            raise
    assert f"DICOM listening on 127.0.0.1:{port} as FILMROOM" in output


def test_listeners_sharing_one_bound_socket_both_serve_and_stop_at_once(tmp_path: Path) -> None:
    """What each process of ``serve --processes N`` does with the DICOM socket its supervisor bound: both
    listeners answer on it, and one stops promptly although the other took the connections it was told of."""
    import socket

    from viewer_api.supervisor import bind

    shared = bind("127.0.0.1", 0)
    port = shared.getsockname()[1]
    with Archive.open(Settings(data_dir=tmp_path / "data", dicom_host="127.0.0.1", dicom_port=port,
                               ae_title="FILMROOM")) as archive:  # fmt: skip
        listeners = [DicomListener(archive, sockets=(socket.socket(fileno=os.dup(shared.fileno())), None))
                     for _ in range(2)]
        for listener in listeners:
            listener.start()
            assert listener.port == port
        try:
            for _ in range(6):  # connections spread over both accept loops; every one is answered
                assert run_tool("echoscu", "-aec", "FILMROOM", "127.0.0.1", port, timeout=20).returncode == 0
            started = time.monotonic()
            listeners[0].stop()
            assert time.monotonic() - started < 5  # no accept left blocking on a connection the other took
            assert run_tool("echoscu", "-aec", "FILMROOM", "127.0.0.1", port, timeout=20).returncode == 0
        finally:
            for listener in listeners:
                listener.stop()
            shared.close()


def test_serve_processes_default_to_the_cores_on_postgresql_only(monkeypatch: pytest.MonkeyPatch) -> None:
    cores = len(os.sched_getaffinity(0))
    assert Settings(database_url=None).serve_processes == 1  # SQLite: one writer
    assert Settings(database_url="postgresql+psycopg2://db/archive").serve_processes == cores
    assert Settings(database_url=None, processes=3).serve_processes == 3
    monkeypatch.setenv("CLOUDFILM_PROCESSES", "")  # a blank entry in .env / docker compose
    assert Settings(database_url="postgresql+psycopg2://db/archive").serve_processes == cores
