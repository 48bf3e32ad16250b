"""Fixtures for the DICOMweb tests: an archive, the app on it, a real uvicorn server, helpers."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.settings import Settings
from tests.factories import to_bytes
from viewer_api.access import current_scope
from viewer_api.app import create_app

BOUNDARY = "cloudfilm-test-boundary"
STOW_TYPE = f'multipart/related; type="application/dicom"; boundary={BOUNDARY}'


def dicomweb_settings(tmp_path: Path, **overrides: object) -> Settings:
    """An embedded archive (SQLite + filesystem) with logins off: these tests are about DICOMweb."""
    values: dict[str, object] = {"data_dir": tmp_path / "data", "http_port": 0, "dicom_port": 0,
                                 "auth_disabled": True}  # fmt: skip
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


def make_app(archive: Archive, scope: AccessScope | None = None) -> FastAPI:
    """The real application; ``scope`` narrows what the caller may see through the one dependency."""
    app = create_app(archive)
    if scope is not None or not hasattr(app.state, "authenticator"):
        chosen = scope or AccessScope.everything()
        app.dependency_overrides[current_scope] = lambda: chosen
    return app


def stow_body(datasets: Sequence[Dataset | bytes], boundary: str = BOUNDARY) -> bytes:
    out = bytearray()
    for item in datasets:
        data = item if isinstance(item, bytes) else to_bytes(item)
        out += f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode() + data + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out)


def store_all(archive: Archive, datasets: Sequence[Dataset]) -> None:
    for ds in datasets:
        result = archive.ingest.store_bytes(to_bytes(ds))
        assert result.ok, result.reason


@pytest.fixture
def dw_archive(tmp_path: Path) -> Iterator[Archive]:
    with Archive.open(dicomweb_settings(tmp_path)) as archive:
        yield archive


@pytest.fixture
def client(dw_archive: Archive) -> Iterator[TestClient]:
    with TestClient(make_app(dw_archive)) as test_client:
        yield test_client


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class RunningServer:
    url: str
    archive: Archive
    app: FastAPI


@pytest.fixture
def serve() -> Iterator[Callable[[Archive], RunningServer]]:
    """Start the real app under uvicorn on a free loopback port (stopped at teardown)."""
    started: list[tuple[uvicorn.Server, threading.Thread]] = []

    def start(archive: Archive) -> RunningServer:
        port = free_port()
        url = f"http://127.0.0.1:{port}"
        app = make_app(archive)
        server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                               access_log=False))  # fmt: skip
        thread = threading.Thread(target=server.run, name=f"uvicorn-{port}", daemon=True)
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)
        started.append((server, thread))
        return RunningServer(url, archive, app)

    yield start
    for server, thread in started:
        server.should_exit = True
        thread.join(timeout=10)
