"""C-ECHO and C-STORE: DCMTK and pynetdicom peers, every transfer syntax, every status and its cause."""

from __future__ import annotations

import copy
import io
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import (
    HTJ2K,
    JPEG2000,
    UID,
    DeflatedExplicitVRLittleEndian,
    ExplicitVRBigEndian,
    ExplicitVRLittleEndian,
    HTJ2KLossless,
    ImplicitVRLittleEndian,
    JPEG2000Lossless,
    JPEGBaseline8Bit,
    JPEGExtended12Bit,
    JPEGLosslessSV1,
    JPEGLSLossless,
    JPEGLSNearLossless,
    RLELossless,
    generate_uid,
)
from pynetdicom import AllStoragePresentationContexts, _config
from sqlalchemy import func, select

from pacs.dimse.contexts import EXTRA_STORAGE_CLASSES, STORAGE_CLASSES, supported_contexts
from pacs.dimse.overrides.provider import ArchiveDIMSE
from pacs.dimse.store import IMPLEMENTATION_CLASS_UID
from pacs.index.models import Instance, Series, Study
from tests.factories import (
    CT_IMAGE_STORAGE,
    JPEG_LOSSLESS_P14,
    encode,
    make_gray8,
    to_bytes,
    truncated_bytes,
    with_bad_uid,
    without,
)
from tests.net import free_port
from tests.pacs.dimse.support import AET, Node, context, dataset_bytes, run_tool, stored_bytes

MakeNode = Callable[..., Node]

CT_SYNTAXES = [ExplicitVRLittleEndian, ImplicitVRLittleEndian, ExplicitVRBigEndian, DeflatedExplicitVRLittleEndian,
               RLELossless, JPEGLSLossless, JPEG2000Lossless, JPEGLosslessSV1, JPEG_LOSSLESS_P14, HTJ2KLossless]


def _count(node: Node, model: type) -> int:
    with node.archive.engine.connect() as conn:
        return int(conn.execute(select(func.count()).select_from(model)).scalar_one())


def test_echoscu_from_any_calling_ae(node: Node) -> None:
    out = run_tool("echoscu", "-aet", "ANYONE", "-aec", AET, "127.0.0.1", node.port)
    assert out.returncode == 0, out.stderr


def test_storescu_study_is_stored_as_received(any_node: Node, small_study: list[Dataset],
                                              study_files: list[Path]) -> None:
    out = run_tool("storescu", "-aet", "MODALITY", "-aec", AET, "127.0.0.1", any_node.port, *study_files)
    assert out.returncode == 0, out.stderr
    assert _count(any_node, Instance) == len(small_study) == 12
    with any_node.archive.engine.connect() as conn:
        study = conn.execute(select(Study.series_count, Study.instance_count)).one()
    assert tuple(study) == (2, 12)
    for ds, path in zip(small_study, study_files, strict=True):
        stored = stored_bytes(any_node, ds.SOPInstanceUID)
        assert dataset_bytes(stored) == dataset_bytes(path.read_bytes())  # byte for byte
        meta = pydicom.dcmread(io.BytesIO(stored), stop_before_pixels=True).file_meta
        assert meta.ImplementationClassUID == IMPLEMENTATION_CLASS_UID
        assert meta.SourceApplicationEntityTitle == "MODALITY"
        assert meta.TransferSyntaxUID == ExplicitVRLittleEndian


def test_storescu_compressed_file_keeps_its_transfer_syntax(node: Node, small_study: list[Dataset],
                                                             tmp_path: Path) -> None:
    ds = encode(small_study[0], JPEGLSLossless)
    path = tmp_path / "jls.dcm"
    path.write_bytes(to_bytes(ds))
    out = run_tool("storescu", "-xt", "-aec", AET, "127.0.0.1", node.port, path)  # proposes JPEG-LS first
    assert out.returncode == 0, out.stderr
    stored = stored_bytes(node, ds.SOPInstanceUID)
    assert pydicom.dcmread(io.BytesIO(stored)).file_meta.TransferSyntaxUID == JPEGLSLossless
    assert dataset_bytes(stored) == dataset_bytes(path.read_bytes())


def test_every_transfer_syntax_is_stored_as_received(node: Node, small_study: list[Dataset]) -> None:
    """One instance per syntax, each proposed in its own context; pixel data is never decoded."""
    cases: list[tuple[str, Dataset]] = [(ts, encode(small_study[0], ts, new_instance_uid=True)) for ts in CT_SYNTAXES]
    cases.append((JPEGBaseline8Bit, encode(make_gray8(seed=3), JPEGBaseline8Bit, new_instance_uid=True)))
    contexts = [context(ds.SOPClassUID, ts) for ts, ds in cases]
    assoc = node.associate(contexts)
    assert assoc.is_established
    try:
        for ts, ds in cases:
            rsp = assoc.send_c_store(ds)
            assert rsp.Status == 0x0000, ts
            stored = stored_bytes(node, ds.SOPInstanceUID)
            assert pydicom.dcmread(io.BytesIO(stored), stop_before_pixels=True).file_meta.TransferSyntaxUID == ts
            assert dataset_bytes(stored) == dataset_bytes(to_bytes(ds)), ts
    finally:
        assoc.release()


def test_every_known_transfer_syntax_is_accepted(node: Node) -> None:
    """Syntaxes without an encoder here (lossy HTJ2K, JPEG 2000 and JPEG-LS, JPEG extended) still negotiate."""
    syntaxes = [HTJ2KLossless, HTJ2K, JPEG2000, JPEGLSNearLossless, JPEGExtended12Bit, RLELossless]
    assoc = node.associate([context(CT_IMAGE_STORAGE, ts) for ts in syntaxes])
    try:
        accepted = sorted(str(cx.transfer_syntax[0]) for cx in assoc.accepted_contexts)
        assert accepted == sorted(str(ts) for ts in syntaxes)
    finally:
        assoc.release()


def test_every_storage_sop_class_is_supported() -> None:
    offered = {str(cx.abstract_syntax) for cx in supported_contexts()}
    assert {str(cx.abstract_syntax) for cx in AllStoragePresentationContexts} <= offered
    assert len(STORAGE_CLASSES) == len(set(STORAGE_CLASSES)) == len(AllStoragePresentationContexts) + len(
        EXTRA_STORAGE_CLASSES)  # pynetdicom's and those it does not list (tests/pacs/dimse/test_sop_classes.py)


def _non_image(sop_class: str, study_uid: str, modality: str, **extra: object) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientID = "NONIMAGE"
    ds.PatientName = "Doc^Ument"
    ds.Modality = modality
    ds.StudyDate = "20240301"
    for keyword, value in extra.items():
        setattr(ds, keyword, value)
    ds.file_meta = pydicom.dataset.FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.MediaStorageSOPClassUID = UID(sop_class)
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    return ds


def test_non_image_objects_are_stored(node: Node) -> None:
    """SR, SEG, presentation state, key object selection and encapsulated PDF."""
    study = generate_uid()
    objects = [
        _non_image("1.2.840.10008.5.1.4.1.1.88.11", study, "SR", ValueType="CONTAINER"),  # Basic Text SR
        _non_image("1.2.840.10008.5.1.4.1.1.88.22", study, "SR", ValueType="CONTAINER"),  # Enhanced SR
        _non_image("1.2.840.10008.5.1.4.1.1.66.4", study, "SEG"),  # Segmentation
        _non_image("1.2.840.10008.5.1.4.1.1.11.1", study, "PR"),  # Grayscale Softcopy Presentation State
        _non_image("1.2.840.10008.5.1.4.1.1.88.59", study, "KO"),  # Key Object Selection
        _non_image("1.2.840.10008.5.1.4.1.1.104.1", study, "DOC", MIMETypeOfEncapsulatedDocument="application/pdf",
                   EncapsulatedDocument=b"%PDF-1.4\n%%EOF\n"),
    ]
    assoc = node.associate([context(ds.SOPClassUID, ExplicitVRLittleEndian) for ds in objects])
    try:
        for ds in objects:
            assert assoc.send_c_store(ds).Status == 0x0000, ds.SOPClassUID.name
    finally:
        assoc.release()
    assert _count(node, Instance) == len(objects)


def _raw_file(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_statuses_and_the_association_stays_usable(node: Node, small_study: list[Dataset], tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """0x0000 stored/duplicate, 0xB006 kept existing, 0xA900 invalid, 0xC000 unparsable, on one association."""
    monkeypatch.setattr(_config, "STORE_SEND_CHUNKED_DATASET", True)  # send files' raw bytes as they are
    good, other = small_study[0], small_study[1]
    changed = copy.deepcopy(good)
    changed.SeriesDescription = "something else"
    garbage = bytearray(to_bytes(other))
    meta_end = 144 + int.from_bytes(garbage[140:144], "little")
    garbage[meta_end:] = os.urandom(len(garbage) - meta_end)
    cases: list[tuple[str, Dataset | Path, int]] = [
        ("stored", good, 0x0000),
        ("duplicate", good, 0x0000),
        ("kept existing", changed, 0xB006),
        ("no StudyInstanceUID", without(other, "StudyInstanceUID"), 0xA900),
        ("UID with /../", with_bad_uid(other, "SeriesInstanceUID"), 0xA900),
        ("truncated", _raw_file(tmp_path, "cut.dcm", truncated_bytes(other)), 0xC000),
        ("not DICOM", _raw_file(tmp_path, "garbage.dcm", bytes(garbage)), 0xC000),
        ("stored after failures", other, 0x0000),
    ]
    assoc = node.associate([context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)])
    try:
        for label, data, expected in cases:
            rsp = assoc.send_c_store(data)
            assert rsp.Status == expected, f"{label}: 0x{rsp.Status:04X} {rsp.get('ErrorComment', '')}"
            if expected not in (0x0000,):
                assert rsp.get("ErrorComment"), label
        assert assoc.is_established
    finally:
        assoc.release()
    assert _count(node, Instance) == 2
    assert dataset_bytes(stored_bytes(node, good.SOPInstanceUID)) == dataset_bytes(to_bytes(good))


def test_stopped_object_store_answers_a700_and_indexes_nothing(node: Node, small_study: list[Dataset]) -> None:
    root = Path(node.archive.store.url.removeprefix("file://"))
    away = root.with_name("objects-away")
    root.rename(away)
    root.write_bytes(b"")  # a file where the store's directory was: every write fails
    assoc = node.associate([context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)])
    try:
        rsp = assoc.send_c_store(small_study[0])
        assert 0xA700 <= rsp.Status <= 0xA7FF, f"0x{rsp.Status:04X}"
        assert _count(node, Instance) == 0 and _count(node, Series) == 0
        root.unlink()
        away.rename(root)
        assert assoc.send_c_store(small_study[0]).Status == 0x0000  # same association, store is back
    finally:
        assoc.release()
    assert _count(node, Instance) == 1


@pytest.mark.postgres
def test_stopped_database_answers_a700_and_indexes_nothing(make_node: MakeNode, small_study: list[Dataset]) -> None:
    from sqlalchemy import create_engine, text

    from tests.pg import PG_ADMIN_URL, temporary_database

    with temporary_database() as url:
        node = make_node(database_url=url)
        name = url.rsplit("/", 1)[1]
        admin = create_engine(PG_ADMIN_URL, isolation_level="AUTOCOMMIT")
        assoc = node.associate([context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)])
        try:
            assert assoc.send_c_store(small_study[0]).Status == 0x0000
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false'))
                conn.execute(text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :n"),
                             {"n": name})
            rsp = assoc.send_c_store(small_study[1])
            assert 0xA700 <= rsp.Status <= 0xA7FF, f"0x{rsp.Status:04X}"
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true'))
            assert _count(node, Instance) == 1  # the failed instance was not indexed
            objects = [p for p in Path(node.archive.store.url.removeprefix("file://")).rglob("*")
                       if p.is_file() and ".tmp" not in p.parts]
            assert len(objects) == 1  # ... and its object was removed again
            assert assoc.send_c_store(small_study[1]).Status == 0x0000
        finally:
            assoc.release()
            node.listener.stop()
            node.archive.close()
            admin.dispose()


def test_unknown_ae_without_store_permission_gets_no_storage_context(make_node: MakeNode,
                                                                      small_study: list[Dataset]) -> None:
    node = make_node(dicom_allow_unknown=["echo"])
    contexts = [context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian), context("1.2.840.10008.1.1")]
    stranger = node.associate(contexts, aet="STRANGER")
    try:
        assert [str(cx.abstract_syntax) for cx in stranger.accepted_contexts] == ["1.2.840.10008.1.1"]
    finally:
        stranger.release()
    known = node.associate(contexts)  # QRSCU is a configured modality: everything allowed
    try:
        assert known.send_c_store(small_study[0]).Status == 0x0000
    finally:
        known.release()


def test_ae_allowed_nothing_is_rejected(make_node: MakeNode) -> None:
    node = make_node(dicom_allow_unknown=[])
    assoc = node.associate([context("1.2.840.10008.1.1")], aet="STRANGER")
    assert assoc.is_rejected
    out = run_tool("echoscu", "-aet", "STRANGER", "-aec", AET, "127.0.0.1", node.port)
    assert out.returncode != 0
    assert run_tool("echoscu", "-aet", "QRSCU", "-aec", AET, "127.0.0.1", node.port).returncode == 0


def test_unreachable_s3_store_answers_a700_and_indexes_nothing(make_node: MakeNode,
                                                               small_study: list[Dataset]) -> None:
    node = make_node(storage_url="s3://cloudfilm-down", s3_endpoint=f"127.0.0.1:{free_port()}",
                     s3_access_key="key", s3_secret_key="secret")
    assoc = node.associate([context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)])
    try:
        rsp = assoc.send_c_store(small_study[0])
        assert 0xA700 <= rsp.Status <= 0xA7FF, f"0x{rsp.Status:04X}"
        assert "object store" in rsp.ErrorComment
        assert assoc.is_established
    finally:
        assoc.release()
    assert _count(node, Instance) == 0


def test_storescu_sop_instance_uid_with_dot_dot_is_refused(node: Node, small_study: list[Dataset],
                                                           tmp_path: Path) -> None:
    path = tmp_path / "evil.dcm"
    path.write_bytes(to_bytes(with_bad_uid(small_study[0], "SOPInstanceUID", "1.2.3/../../../tmp/evil")))
    out = run_tool("storescu", "-v", "-aec", AET, "127.0.0.1", node.port, path)
    assert "DataSetDoesNotMatchSOPClass" in out.stdout + out.stderr  # 0xA900
    assert _count(node, Instance) == 0
    data_dir = node.settings.data_dir
    assert not any("evil" in p.name for p in data_dir.rglob("*")) and not Path("/tmp/evil").exists()
    assert run_tool("storescu", "-aec", AET, "127.0.0.1", node.port,
                    _raw_file(tmp_path, "ok.dcm", to_bytes(small_study[1]))).returncode == 0
    assert _count(node, Instance) == 1


def test_store_with_pynetdicoms_chunked_reception(node: Node, small_study: list[Dataset],
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """Another part of the process switched on pynetdicom's own spool files: still stored as received."""
    monkeypatch.setattr(_config, "STORE_RECV_CHUNKED_DATASET", True)
    assoc = node.associate([context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)])
    try:
        assert assoc.send_c_store(small_study[0]).Status == 0x0000
    finally:
        assoc.release()
    stored = stored_bytes(node, small_study[0].SOPInstanceUID)
    assert dataset_bytes(stored) == dataset_bytes(to_bytes(small_study[0]))


def test_large_dataset_spills_to_disk_and_is_stored_as_received(node: Node, small_study: list[Dataset],
                                                                tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Past the in-memory limit a dataset is written to a temp file as it arrives, stored from there,
    and the file is removed."""
    spill = node.settings.spool_dir
    monkeypatch.setattr(ArchiveDIMSE, "in_memory_limit", 1024)
    written: list[str] = []
    real_mkstemp = tempfile.mkstemp

    def mkstemp(*args: Any, **kwargs: Any) -> tuple[int, str]:
        fd, name = real_mkstemp(*args, **kwargs)
        written.append(name)
        return fd, name

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)
    assoc = node.associate([context(CT_IMAGE_STORAGE, ExplicitVRLittleEndian)])
    try:
        for ds in small_study[:2]:
            assert assoc.send_c_store(ds).Status == 0x0000
    finally:
        assoc.release()
    assert len([n for n in written if Path(n).parent == spill]) == 2  # both spilled...
    assert list(spill.iterdir()) == []  # ... and nothing is left
    for ds in small_study[:2]:
        assert dataset_bytes(stored_bytes(node, ds.SOPInstanceUID)) == dataset_bytes(to_bytes(ds))


def test_c_store_is_audited_once_per_study_and_association(node: Node, small_study: list[Dataset],
                                                            study_files: list[Path]) -> None:
    import time

    from pacs.accounts.audit import Action, AuditQuery, query

    out = run_tool("storescu", "-aet", "MODALITY", "-aec", AET, "127.0.0.1", node.port, *study_files)
    assert out.returncode == 0, out.stderr
    study_uid = str(small_study[0].StudyInstanceUID)
    deadline = time.monotonic() + 10  # the event is written when the association's connection closes
    events = []
    while time.monotonic() < deadline and not events:
        events = [e for e in query(node.archive.engine, AuditQuery(study_uid=study_uid)) if e.action == Action.C_STORE]
        time.sleep(0.1)
    assert len(events) == 1
    [event] = events
    assert event.username == "MODALITY" and event.outcome == "success"
    assert event.detail == f"{len(small_study)} instances stored"
    assert event.source.startswith("MODALITY@")
