"""Fixtures for the DICOMweb tests: an archive, the app on it, a real uvicorn server, helpers."""

from __future__ import annotations

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
from pydicom.uid import (
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from pacs.access import AccessScope
from pacs.archive import Archive
from pacs.settings import Settings
from tests.factories import (
    PATIENTS,
    encode,
    make_ct_study,
    make_gray8,
    make_multiframe,
    make_palette,
    make_rgb,
    to_bytes,
)
from tests.net import free_port
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


def parts_of(content_type: str, body: bytes) -> list[tuple[dict[str, str], bytes]]:
    """The parts of a multipart/related body: (lower-cased headers, content)."""
    assert content_type.startswith("multipart/related"), content_type
    boundary = next(p.split("=", 1)[1].strip('"') for p in content_type.split(";") if p.strip().startswith("boundary="))
    delimiter = b"--" + boundary.encode()
    assert body.startswith(delimiter) and body.rstrip(b"\r\n").endswith(delimiter + b"--")
    out = []
    for chunk in body.split(b"\r\n" + delimiter)[:-1]:
        chunk = chunk.removeprefix(delimiter)
        head, _, content = chunk.partition(b"\r\n\r\n")
        headers = {}
        for line in head.decode("latin-1").split("\r\n"):
            if ":" in line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        out.append((headers, content))
    return out


@dataclass
class Gallery:
    """One study holding an instance of each kind the DICOMweb code must handle."""

    client: TestClient
    archive: Archive
    items: dict[str, Dataset]

    @property
    def study(self) -> str:
        return str(self.items["ct"].StudyInstanceUID)

    def url(self, name: str, suffix: str = "") -> str:
        ds = self.items[name]
        return f"/dicomweb/studies/{ds.StudyInstanceUID}/series/{ds.SeriesInstanceUID}/instances/{ds.SOPInstanceUID}" \
            + suffix


def _relabelled(ds: Dataset, label: str, **changes: object) -> Dataset:
    out = encode(ds, ds.file_meta.TransferSyntaxUID)
    new_uid = generate_uid(entropy_srcs=[label, ds.SOPInstanceUID])
    out.SOPInstanceUID = out.file_meta.MediaStorageSOPInstanceUID = new_uid
    for keyword, value in changes.items():
        setattr(out, keyword, value)
    return out


def gallery_items() -> dict[str, Dataset]:
    patient = PATIENTS[0]
    ct = make_ct_study(patient, n_slices=3, rows=32, cols=32, seed=21)
    study = ct[0].StudyInstanceUID
    multi = make_multiframe(n_frames=6, rows=32, cols=32, patient=patient, study_uid=study)
    items = {f"ct{i}": ds for i, ds in enumerate(ct)}
    items["ct"] = ct[0]
    for name, ts in (("j2k", JPEG2000Lossless), ("jls", JPEGLSLossless), ("rle", RLELossless),
                     ("jpeg_ll", JPEGLosslessSV1), ("big_endian", ExplicitVRBigEndian),
                     ("implicit", ImplicitVRLittleEndian), ("deflated", DeflatedExplicitVRLittleEndian)):
        items[name] = encode(ct[1], ts, new_instance_uid=True)
    items["mono1"] = _relabelled(ct[2], "mono1", PhotometricInterpretation="MONOCHROME1")
    items["rgb"] = make_rgb(32, 32, patient=patient, study_uid=study)
    items["ybr"] = make_rgb(32, 32, seed=1, patient=patient, study_uid=study, transfer_syntax=JPEGBaseline8Bit)
    items["palette"] = make_palette(32, 32, patient=patient, study_uid=study)
    items["gray8"] = make_gray8(32, 32, patient=patient, study_uid=study)
    items["multi"] = multi
    items["multi_jls"] = encode(multi, JPEGLSLossless, new_instance_uid=True)
    return items


@pytest.fixture(scope="module")
def gallery(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gallery]:
    items = gallery_items()
    with Archive.open(dicomweb_settings(Path(tmp_path_factory.mktemp("gallery")))) as archive:
        store_all(archive, list({ds.SOPInstanceUID: ds for ds in items.values()}.values()))
        with TestClient(make_app(archive)) as client:
            yield Gallery(client, archive, items)
