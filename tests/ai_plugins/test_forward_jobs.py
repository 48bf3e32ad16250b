"""Forwarding by routing rules as jobs of the one worker, to DCMTK's ``storescp`` (SQLite and
PostgreSQL): a destination that is down for a while and comes back gets every matching instance
exactly once and byte-identical (nothing lost, nothing sent twice), across a worker restart; a
peer that refuses an instance dead-letters it with the peer's status and the lane goes on; an
admin's re-send sends it again; de-identification and transcoding happen on the way."""

from __future__ import annotations

import contextlib
import io
import re
import ssl
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.sop_class import CTImageStorage

from ai_plugins.runner.handler import job_queue
from ai_plugins.runner.worker import Worker
from pacs.archive import Archive
from pacs.errors import Conflict, NotFound
from pacs.jobs import JobStatus
from pacs.routing.dispatch import JOB_KIND, ForwardStatus, resend
from pacs.routing.models import RoutingForward
from pacs.routing.status import destination_states
from tests.ai_plugins.test_worker import wait_until
from tests.factories import PATIENTS, make_ct_study, to_bytes
from tests.jobsupport import DB_BACKENDS, db_settings
from tests.net import free_port
from tests.pacs.dimse.support import dataset_bytes, storescp
from tests.pacs.dimse.test_tls import Pki, pki  # noqa: F401 - the fixture

BACKENDS = [DB_BACKENDS[0], pytest.param(DB_BACKENDS[1], marks=pytest.mark.postgres)]


@contextlib.contextmanager
def routed_archive(backend: str, tmp_path: Path, port: int, **routing: Any) -> Iterator[Archive]:
    dest: dict[str, Any] = {"kind": "dicom", "aet": "DEST", "host": "127.0.0.1", "port": port, "timeout": 5.0,
                            "max_attempts": 50, "concurrency": 2} | routing.pop("dest", {})  # fmt: skip
    rules = routing.pop("rules", [{"name": "ct", "to": ["peer"], "match": {"Modality": "CT"}}])
    with db_settings(backend, tmp_path, stable_age=1.0, job_poll_interval=0.1, job_retry_backoff=0.2,
                     job_retry_backoff_max=0.5, routing_destinations={"peer": dest},
                     routing_rules=rules) as settings, Archive.open(settings) as opened:  # fmt: skip
        yield opened


@contextlib.contextmanager
def working(archive: Archive) -> Iterator[Worker]:
    worker = Worker(archive, concurrency=3, use_entry_points=False)
    worker.start()
    try:
        yield worker
    finally:
        worker.stop()


def _study(seed: int, n: int, calling_ae: str = "") -> list[bytes]:
    datasets = make_ct_study(PATIENTS[seed % 3], n_slices=n, rows=8, cols=8, seed=seed,
                             study_uid=f"1.2.826.0.9.{seed}")  # fmt: skip
    out = []
    for ds in datasets:
        if calling_ae:
            ds.file_meta.SourceApplicationEntityTitle = calling_ae
        out.append(to_bytes(ds))
    return out


def _store(archive: Archive, objects: list[bytes]) -> dict[str, bytes]:
    stored = {}
    for data in objects:
        assert archive.ingest.store_bytes(data).ok
        stored[str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)] = data
    return stored


def _received(directory: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path in directory.iterdir():
        data = path.read_bytes()
        sop = str(pydicom.dcmread(io.BytesIO(data), stop_before_pixels=True).SOPInstanceUID)
        assert sop not in out, f"{sop} received twice"
        out[sop] = data
    return out


def _forwards(archive: Archive) -> list[Any]:
    from sqlalchemy import select

    with archive.engine.connect() as conn:
        return list(conn.execute(select(RoutingForward).order_by(RoutingForward.id)))


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_destination_down_for_a_while_gets_everything_once_and_byte_identical(backend: str, tmp_path: Path) -> None:
    port = free_port()
    rules = [{"name": "ct-from-scanner", "to": ["peer"], "match": {"Modality": "CT", "calling_ae": "SCANNER*"}}]
    with routed_archive(backend, tmp_path, port, rules=rules) as archive:
        with working(archive):
            wait_until("the rule's cursor", lambda: destination_states(archive.engine, {}) == [] and _cursor(archive))
            first = _store(archive, _study(1, 4, "SCANNER1"))
            _store(archive, _study(2, 3, "OTHER"))  # matches no rule
            # The destination is down: attempts fail and wait to be retried.
            wait_until("failed attempts", lambda: any(f.attempts >= 2 for f in _forwards(archive)), timeout=60)
            state = destination_states(archive.engine, archive.settings.routing_destinations)[0]
            assert state.pending == 4 and state.sent == 0 and "could not be reached" in state.last_error
            assert 1 <= state.active_jobs <= 2
        # The worker restarts while the destination is still down; more arrives meanwhile.
        second = _store(archive, _study(3, 3, "SCANNER2"))
        received_dir = tmp_path / "received"
        with storescp(port, received_dir, "-v") as peer, working(archive):
            wait_until("every forward sent", lambda: [f.status for f in _forwards(archive)] == ["sent"] * 7,
                       timeout=120)  # fmt: skip
            third = _store(archive, _study(4, 2, "SCANNER1"))  # arrives while the destination is up
            wait_until("the later study", lambda: len(_forwards(archive)) == 9
                       and {f.status for f in _forwards(archive)} == {"sent"}, timeout=60)  # fmt: skip
            wait_until("the files", lambda: len(list(received_dir.iterdir())) == 9, timeout=30)
            peer.terminate()
            log = peer.communicate(timeout=10)[0]
        expected = first | second | third
        received = _received(received_dir)
        assert set(received) == set(expected)
        for sop, data in expected.items():
            assert dataset_bytes(received[sop]) == dataset_bytes(data), sop
        assert len(re.findall(r"Received Store Request", log)) == 9  # nothing sent twice
        state = destination_states(archive.engine, archive.settings.routing_destinations)[0]
        assert (state.pending, state.sent, state.dead, state.active_jobs) == (0, 9, 0, 0)
        assert state.last_sent_at is not None
        jobs = job_queue(archive).list_jobs(kind=JOB_KIND)
        assert jobs and all(j.status is JobStatus.SUCCEEDED for j in jobs)


def _cursor(archive: Archive) -> bool:
    from sqlalchemy import select

    from pacs.routing.models import RoutingCursor

    with archive.engine.connect() as conn:
        return conn.execute(select(RoutingCursor.rule)).first() is not None


@contextlib.contextmanager
def refusing_peer(port: int, refuse: set[str], delay_s: float = 0.0,
                  ssl_context: ssl.SSLContext | None = None) -> Iterator[list[str]]:
    """A pynetdicom Storage SCP that answers 0xA700 (Out of Resources) for the SOP Instance UIDs in
    ``refuse``, each answer after ``delay_s``."""
    stored: list[str] = []
    lock = threading.Lock()

    def on_store(event: Any) -> int:
        time.sleep(delay_s)
        sop = str(event.request.AffectedSOPInstanceUID)
        if sop in refuse:
            return 0xA700
        with lock:
            stored.append(sop)
        return 0x0000

    ae = AE(ae_title="DEST")
    ae.add_supported_context(CTImageStorage, ["1.2.840.10008.1.2.1", "1.2.840.10008.1.2"])
    server = ae.start_server(("127.0.0.1", port), block=False, evt_handlers=[(evt.EVT_C_STORE, on_store)],
                             ssl_context=ssl_context)  # fmt: skip
    try:
        yield stored
    finally:
        server.shutdown()


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_refused_instance_is_dead_lettered_with_the_peer_status_and_can_be_resent(backend: str,
                                                                                     tmp_path: Path) -> None:
    port = free_port()
    with routed_archive(backend, tmp_path, port, dest={"max_attempts": 2}) as archive, working(archive):
        wait_until("the rule's cursor", lambda: _cursor(archive))
        objects = _study(5, 3)
        refused = str(pydicom.dcmread(io.BytesIO(objects[1]), stop_before_pixels=True).SOPInstanceUID)
        with refusing_peer(port, {refused}) as stored:
            sops = list(_store(archive, objects))
            wait_until("the lane done", lambda: {f.status for f in _forwards(archive)} == {"sent", "dead"}
                       and len(_forwards(archive)) == 3, timeout=60)  # fmt: skip
            assert sorted(stored) == sorted(s for s in sops if s != refused)
        dead = [f for f in _forwards(archive) if f.status == ForwardStatus.DEAD.value]
        assert len(dead) == 1 and dead[0].sop_uid == refused
        assert dead[0].status_code == 0xA700 and dead[0].attempts == 2
        assert "0xA700" in dead[0].last_error
        state = destination_states(archive.engine, archive.settings.routing_destinations)[0]
        assert (state.sent, state.dead, state.last_status_code) == (2, 1, 0xA700)

        # Bad re-sends are refused; the admin's re-send after the peer is fixed goes through.
        with pytest.raises(NotFound):
            resend(archive.engine, archive.settings.routing_destinations, forward_id=10_000)
        with pytest.raises(NotFound):
            resend(archive.engine, archive.settings.routing_destinations, destination="nowhere")
        with refusing_peer(port, set()) as stored_again:
            assert resend(archive.engine, archive.settings.routing_destinations, destination="peer") == 1
            with pytest.raises(Conflict):
                resend(archive.engine, archive.settings.routing_destinations, forward_id=dead[0].id)
            wait_until("the re-sent instance", lambda: stored_again == [refused], timeout=60)
            wait_until("recorded", lambda: {f.status for f in _forwards(archive)} == {"sent"}, timeout=30)


@pytest.mark.parametrize("backend", [DB_BACKENDS[0]])
def test_deidentified_and_transcoded_on_the_way(backend: str, tmp_path: Path) -> None:
    port = free_port()
    rules = [{"name": "research", "on": "stable", "to": ["peer"], "match": {"PatientName": "*"},
              "deidentify": True}]  # fmt: skip
    with routed_archive(backend, tmp_path, port, rules=rules,
                        dest={"transfer_syntax": "1.2.840.10008.1.2"}) as archive:  # fmt: skip
        received_dir = tmp_path / "received"
        with storescp(port, received_dir), working(archive):
            wait_until("the rule's cursor", lambda: _cursor(archive))
            stored = _store(archive, _study(6, 3))
            # on = "stable": nothing goes before the study is stable (stable_age 1 s), then all of it
            wait_until("the files", lambda: received_dir.exists() and len(list(received_dir.iterdir())) == 3,
                       timeout=60)  # fmt: skip
        received = [pydicom.dcmread(p) for p in received_dir.iterdir()]
        originals = [pydicom.dcmread(io.BytesIO(d)) for d in stored.values()]
        assert {str(r.file_meta.TransferSyntaxUID) for r in received} == {"1.2.840.10008.1.2"}
        assert not {str(r.SOPInstanceUID) for r in received} & set(stored)
        assert {str(r.PatientName) for r in received} != {str(o.PatientName) for o in originals}
        assert {str(r.PatientIdentityRemoved) for r in received} == {"YES"}
        assert len({str(r.StudyInstanceUID) for r in received}) == 1
        for r in received:  # pixels unchanged
            match = [o for o in originals if o.InstanceNumber == r.InstanceNumber]
            assert r.PixelData == match[0].PixelData
        assert [f.rule for f in _forwards(archive)] == ["research"] * 3


def test_forwarding_storescp_is_installed() -> None:
    assert subprocess.run(["storescp", "--version"], capture_output=True).returncode == 0


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_worker_stopped_mid_forward_leaves_the_rest_to_the_next(backend: str, tmp_path: Path) -> None:
    port = free_port()
    with routed_archive(backend, tmp_path, port) as archive, refusing_peer(port, set(), delay_s=0.3) as stored:
        with working(archive):
            wait_until("the rule's cursor", lambda: _cursor(archive))
            sops = list(_store(archive, _study(7, 12)))
            wait_until("some sent", lambda: len(stored) >= 3, timeout=60)
        sent_before = len(stored)
        assert sent_before < 12, "the stop came too late to test anything"
        assert len([f for f in _forwards(archive) if f.status == "sent"]) == sent_before
        with working(archive):
            wait_until("the rest", lambda: [f.status for f in _forwards(archive)] == ["sent"] * 12, timeout=120)
        assert sorted(stored) == sorted(sops)  # each once
        assert all(f.attempts == 1 for f in _forwards(archive))


def _tls_server(ca: Path, cert: Path, key: Path) -> ssl.SSLContext:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(cert, key)
    ctx.load_verify_locations(cafile=str(ca))
    ctx.verify_mode = ssl.CERT_REQUIRED  # the archive must present its certificate
    return ctx


def test_tls_destination(tmp_path: Path, pki: Pki) -> None:  # noqa: F811 - the fixture
    port = free_port()
    with db_settings("sqlite", tmp_path, job_poll_interval=0.1, job_retry_backoff=0.2, job_retry_backoff_max=0.5,
                     dicom_tls_ca=pki.ca, dicom_tls_cert=pki.server_cert, dicom_tls_key=pki.server_key,
                     routing_destinations={"peer": {"kind": "dicom", "aet": "DEST", "host": "127.0.0.1", "port": port,
                                                    "tls": True, "timeout": 5, "max_attempts": 1000}},
                     routing_rules=[{"name": "all", "to": ["peer"]}]) as settings, \
            Archive.open(settings) as archive, working(archive):  # fmt: skip
        wait_until("the rule's cursor", lambda: _cursor(archive))
        # A peer whose certificate the archive's CA did not issue is not sent to.
        with refusing_peer(port, set(), ssl_context=_tls_server(pki.ca, pki.rogue_cert, pki.rogue_key)) as rogue:
            sops = list(_store(archive, _study(8, 2)))
            wait_until("a failed attempt", lambda: any(f.attempts for f in _forwards(archive)), timeout=60)
            assert rogue == []
        with refusing_peer(port, set(), ssl_context=_tls_server(pki.ca, pki.server_cert, pki.server_key)) as stored:
            wait_until("sent over TLS", lambda: sorted(stored) == sorted(sops), timeout=60)


@pytest.mark.parametrize("backend", BACKENDS)
def test_a_study_stable_again_sends_only_what_is_new(backend: str, tmp_path: Path) -> None:
    port = free_port()
    rules = [{"name": "on-stable", "on": "stable", "to": ["peer"]}]
    with routed_archive(backend, tmp_path, port, rules=rules) as archive, \
            refusing_peer(port, set()) as stored, working(archive):  # fmt: skip
        wait_until("the rule's cursor", lambda: _cursor(archive))
        objects = _study(9, 4)
        first = list(_store(archive, objects[:2]))
        wait_until("the first stable transition", lambda: sorted(stored) == sorted(first), timeout=60)
        later = list(_store(archive, objects[2:]))  # the study is stable again a second later
        wait_until("the new instances", lambda: len(stored) == 4, timeout=60)
        time.sleep(2)  # nothing more comes
        assert sorted(stored) == sorted(first + later)
        assert [f.status for f in _forwards(archive)] == ["sent"] * 4


@pytest.mark.parametrize("backend", BACKENDS)
def test_two_workers_on_one_index_send_each_instance_once(backend: str, tmp_path: Path) -> None:
    port = free_port()
    with routed_archive(backend, tmp_path, port, dest={"concurrency": 4}) as archive, \
            refusing_peer(port, set(), delay_s=0.02) as stored, working(archive), working(archive):  # fmt: skip
        wait_until("the rule's cursor", lambda: _cursor(archive))
        sops = [sop for seed in (31, 32, 33, 34) for sop in _store(archive, _study(seed, 4))]
        wait_until("every instance", lambda: len(stored) >= 16, timeout=120)
        time.sleep(1)
        assert sorted(stored) == sorted(sops)
        assert [f.status for f in _forwards(archive)] == ["sent"] * 16


def test_a_lane_job_the_queue_dead_lettered_sets_its_head_aside(tmp_path: Path) -> None:
    """A worker that dies on every attempt (killed by an instance) leaves a failed job and a pending
    head: the head is dead-lettered with the job's error, and the study's next instance goes on."""
    from sqlalchemy import update

    from pacs.jobs import Job, write_transaction
    from pacs.routing.dispatch import dispatch

    with routed_archive("sqlite", tmp_path, free_port()) as archive:
        settings = archive.settings

        def run() -> None:
            dispatch(archive.engine, archive.store, settings.routing_rules, settings.routing_destinations)

        run()
        _store(archive, _study(41, 2))
        run()
        (job,) = job_queue(archive).list_jobs(kind=JOB_KIND)
        with write_transaction(archive.engine) as conn:
            conn.execute(update(Job).where(Job.id == job.id).values(status=JobStatus.FAILED.value,
                                                                    error="the worker died on every attempt"))
        run()
        head, rest = _forwards(archive)
        assert (head.status, head.last_error) == ("dead", "the worker died on every attempt")
        assert rest.status == "pending"
        run()  # the next round starts the lane again from its next instance
        jobs = job_queue(archive).list_jobs(kind=JOB_KIND)
        assert sorted(j.status.value for j in jobs) == ["failed", "queued"]
        assert {j.payload["head"] for j in jobs if j.status is JobStatus.QUEUED} == {rest.id}


def test_an_instance_that_cannot_be_deidentified_is_set_aside_at_once(tmp_path: Path) -> None:
    port = free_port()
    rules = [{"name": "research", "to": ["peer"], "deidentify": True}]
    datasets = make_ct_study(PATIENTS[1], n_slices=3, rows=8, cols=8, seed=42, study_uid="1.2.826.0.9.42")
    datasets[1].BurnedInAnnotation = "YES"
    with routed_archive("sqlite", tmp_path, port, rules=rules) as archive, \
            refusing_peer(port, set()) as stored, working(archive):  # fmt: skip
        wait_until("the rule's cursor", lambda: _cursor(archive))
        _store(archive, [to_bytes(ds) for ds in datasets])
        wait_until("the lane done", lambda: sorted(f.status for f in _forwards(archive)) == ["dead", "sent", "sent"],
                   timeout=60)  # fmt: skip
        (dead,) = [f for f in _forwards(archive) if f.status == "dead"]
        assert dead.sop_uid == str(datasets[1].SOPInstanceUID) and dead.attempts == 0
        assert "burned-in annotation" in dead.last_error
        assert len(stored) == 2 and not set(stored) & {str(ds.SOPInstanceUID) for ds in datasets}  # new UIDs
